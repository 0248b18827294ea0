"""CLI: ``hub serve``, ``hub seed``, ``push``, ``pull``.

Examples::

    hfcompress hub serve --port 8080 --data ~/.cache/hfcompress/hub --token me:secret:my-org
    HF_ENDPOINT=http://127.0.0.1:8080 HF_TOKEN=secret hfcompress push out/tiny me/tiny --private
    HF_ENDPOINT=http://127.0.0.1:8080 hfcompress pull me/tiny --output tiny --token-file ~/.hf-token

The token comes from ``--token-file PATH``, else ``--token`` (visible to other users in ``ps``),
else ``HF_TOKEN``, else the saved login (``hf auth login``).
"""

from __future__ import annotations

import argparse

from ..errors import UsageError
from ..sizes import count_parameters

TOKEN_HELP = ("Hub token. VISIBLE to other users of this machine (ps, /proc): prefer --token-file, "
              "HF_TOKEN or `hf auth login`")


def add_token_file_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--token-file", metavar="PATH",
                   help="read the Hub token from this file's first line (default: HF_TOKEN, then `hf auth login`)")


def token_from_args(args: argparse.Namespace) -> str | None:
    """``--token-file`` or ``--token`` (not both); None: the caller falls back to HF_TOKEN / the saved login."""
    token_file = getattr(args, "token_file", None)
    if token_file and args.token:
        raise UsageError("give --token-file or --token, not both")
    if token_file:
        from ..hub.transfer import read_token_file

        return read_token_file(token_file)
    return args.token


def _serve(args: argparse.Namespace) -> int:
    from ..hub.server import serve

    return serve(args)


def _seed(args: argparse.Namespace) -> int:
    from huggingface_hub import get_token

    from ..hub.seed import run
    from ..secrets import register_secret

    args.token = token_from_args(args) or get_token()
    register_secret(args.token)
    return run(args)


def _push(args: argparse.Namespace) -> int:
    from ..hub.transfer import push

    url = push(args.folder, args.repo_id, private=args.private, revision=args.revision,
               commit_message=args.commit_message, token=token_from_args(args), endpoint=args.endpoint,
               allow_pickle=args.allow_pickle)
    print(f"pushed {args.folder} to {args.repo_id}" + (f"@{args.revision}" if args.revision else "") + f": {url}")
    return 0


def _pull(args: argparse.Namespace) -> int:
    from ..hub.transfer import pull

    model, folder = pull(args.repo_id, revision=args.revision, output=args.output, token=token_from_args(args),
                         load=not args.no_load, endpoint=args.endpoint, allow_pickle=args.allow_pickle)
    if model is None:
        print(f"downloaded {args.repo_id} to {folder}")
        return 0
    bundle = model
    params = count_parameters(bundle.model)["parameters"]  # logical weights: a 4-bit model's packed bytes are not its count
    print(f"loaded {args.repo_id} as {type(bundle.model).__name__}, {params:,} parameters, from {folder}")
    if args.generate:
        if bundle.task != "causal-lm" or bundle.tokenizer is None:
            raise UsageError(f"--generate needs a causal LM with a tokenizer; {args.repo_id} is {bundle.task}")
        inputs = bundle.tokenizer(args.generate, return_tensors="pt")
        out = bundle.model.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False)
        text = bundle.tokenizer.decode(out[0, inputs.input_ids.shape[1]:], skip_special_tokens=True)
        print(f"generate: {args.generate!r} -> {text!r}")
    return 0


def register(sub) -> None:
    from ..hub.seed import add_arguments as seed_arguments
    from ..hub.server import add_arguments as serve_arguments

    hub = sub.add_parser("hub", help="run / seed a local Hub-compatible server",
                         description="Run or seed a local Hub-compatible server (see docs/HUB.md).")
    hub.set_defaults(func=lambda _args: hub.print_help() or 2)
    hub_sub = hub.add_subparsers(dest="hub_command", metavar="SUBCOMMAND", parser_class=type(hub))
    serve = hub_sub.add_parser("serve", help="serve the Hub HTTP API on loopback",
                               description="Serve the Hub HTTP API; the first stdout line is the URL.")
    serve_arguments(serve)
    serve.set_defaults(func=_serve)
    seed = hub_sub.add_parser("seed", help="upload the offline models and datasets under their real ids",
                              description="Upload the offline assets and datasets (idempotent).")
    seed_arguments(seed)
    add_token_file_argument(seed)
    seed.set_defaults(func=_seed)

    push = sub.add_parser("push", help="push a model folder to the Hub in one commit",
                          description="Push a model folder to the Hub in one commit (creates the repo right "
                          "before the commit; a failed push deletes what it created). Pickle files "
                          "(*.bin, *.pt, *.pth, *.pkl, *.pickle, *.ckpt) are refused unless --allow-pickle.")
    push.add_argument("folder", help="model folder (config.json + *.safetensors or adapter files)")
    push.add_argument("repo_id", help="namespace/name")
    push.add_argument("--private", action="store_true", help="create the repo private")
    push.add_argument("--revision", help="branch to push to (created from main if new)")
    push.add_argument("--commit-message", help="commit message")
    push.add_argument("--allow-pickle", action="store_true",
                      help="also push pickle files (they run code when loaded; refused by default)")
    push.add_argument("--token", help=TOKEN_HELP)
    add_token_file_argument(push)
    push.add_argument("--endpoint", help="Hub URL (default: HF_ENDPOINT or https://huggingface.co)")
    push.set_defaults(func=_push)

    pull = sub.add_parser("pull", help="download a model from the Hub and load it back",
                          description="Download a model repo (snapshot) and load it. With --output the pull "
                          "is atomic: a pull that fails (download or load) leaves no folder.")
    pull.add_argument("repo_id", help="namespace/name")
    pull.add_argument("--revision", help="branch, tag or commit (default main)")
    pull.add_argument("--output", help="download into this folder (atomic) instead of the HF cache")
    pull.add_argument("--no-load", action="store_true", help="only download")
    pull.add_argument("--generate", metavar="PROMPT", help="after loading a causal LM, complete PROMPT (greedy)")
    pull.add_argument("--max-new-tokens", type=int, default=20, help="tokens to generate with --generate")
    pull.add_argument("--allow-pickle", action="store_true",
                      help="load pickle checkpoints (pytorch_model.bin) when the repo has no safetensors")
    pull.add_argument("--token", help=TOKEN_HELP)
    add_token_file_argument(pull)
    pull.add_argument("--endpoint", help="Hub URL (default: HF_ENDPOINT)")
    pull.set_defaults(func=_pull)

"""CLI: ``hub serve``, ``hub seed``, ``push``, ``pull``.

Examples::

    hfcompress hub serve --port 8080 --data ~/.cache/hfcompress/hub --token me:secret:my-org
    HF_ENDPOINT=http://127.0.0.1:8080 HF_TOKEN=secret hfcompress push out/tiny me/tiny --private
    HF_ENDPOINT=http://127.0.0.1:8080 hfcompress pull me/tiny --output tiny
"""

from __future__ import annotations

import argparse

from ..errors import UsageError
from ..sizes import count_parameters


def _serve(args: argparse.Namespace) -> int:
    from ..hub.server import serve

    return serve(args)


def _seed(args: argparse.Namespace) -> int:
    from ..hub.seed import run

    return run(args)


def _push(args: argparse.Namespace) -> int:
    from ..hub.transfer import push

    url = push(args.folder, args.repo_id, private=args.private, revision=args.revision,
               commit_message=args.commit_message, token=args.token, endpoint=args.endpoint)
    print(f"pushed {args.folder} to {args.repo_id}" + (f"@{args.revision}" if args.revision else "") + f": {url}")
    return 0


def _pull(args: argparse.Namespace) -> int:
    from ..hub.transfer import pull

    model, folder = pull(args.repo_id, revision=args.revision, output=args.output, token=args.token,
                         load=not args.no_load, endpoint=args.endpoint)
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
    seed.set_defaults(func=_seed)

    push = sub.add_parser("push", help="push a model folder to the Hub in one commit",
                          description="Push a model folder to the Hub in one commit (creates the repo).")
    push.add_argument("folder", help="model folder (config.json + *.safetensors or adapter files)")
    push.add_argument("repo_id", help="namespace/name")
    push.add_argument("--private", action="store_true", help="create the repo private")
    push.add_argument("--revision", help="branch to push to (created from main if new)")
    push.add_argument("--commit-message", help="commit message")
    push.add_argument("--token", help="Hub token (default: HF_TOKEN or `hf auth login`)")
    push.add_argument("--endpoint", help="Hub URL (default: HF_ENDPOINT or https://huggingface.co)")
    push.set_defaults(func=_push)

    pull = sub.add_parser("pull", help="download a model from the Hub and load it back",
                          description="Download a model repo (snapshot) and load it.")
    pull.add_argument("repo_id", help="namespace/name")
    pull.add_argument("--revision", help="branch, tag or commit (default main)")
    pull.add_argument("--output", help="download into this folder (atomic) instead of the HF cache")
    pull.add_argument("--no-load", action="store_true", help="only download")
    pull.add_argument("--generate", metavar="PROMPT", help="after loading a causal LM, complete PROMPT (greedy)")
    pull.add_argument("--max-new-tokens", type=int, default=20, help="tokens to generate with --generate")
    pull.add_argument("--token", help="Hub token for private repos (default: HF_TOKEN)")
    pull.add_argument("--endpoint", help="Hub URL (default: HF_ENDPOINT)")
    pull.set_defaults(func=_pull)

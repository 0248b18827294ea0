"""CLI: ``hfcompress prune MODEL --method M --sparsity S [--pattern N:M] [--structured ...] --output DIR``.

::

    hfcompress prune HuggingFaceTB/SmolLM2-135M-Instruct --method wanda --sparsity 0.5 -o out/wanda50
    hfcompress prune MODEL --method sparsegpt --pattern 2:4 --format hfcompress-sparse -o out/sgpt24
    hfcompress prune MODEL --method magnitude --structured ffn --sparsity 0.3 -o out/ffn30
"""

from __future__ import annotations

import argparse

from ..errors import UsageError
from .common import add_calibration_args, add_model_args, add_output_args, calibration_from_args, run_stages

METHODS = ("threshold", "magnitude", "taylor", "wanda", "sparsegpt")


def _glob_value(text: str) -> tuple[str, float]:
    glob, sep, value = text.rpartition("=")
    if not sep or not glob:
        raise argparse.ArgumentTypeError(f"expected GLOB=SPARSITY, got {text!r} (e.g. '*.down_proj=0.3')")
    try:
        return glob, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"sparsity in {text!r} is not a number") from None


def _run(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from ..registry import get_method

    method = get_method("prune", args.method)
    params: dict = {"method": args.method}
    if args.format is not None:
        params["format"] = args.format
    if args.sparse_format:  # deprecated alias of --format hfcompress-sparse
        params["sparse_format"] = True
    if args.sparsity is not None:
        params["sparsity"] = args.sparsity
    elif args.pattern is None and args.threshold is None:
        raise UsageError("give --sparsity (e.g. --sparsity 0.5), or --pattern N:M")
    for key in ("pattern", "structured", "batch_size", "calibration_dtype"):
        if getattr(args, key) is not None:
            params[key] = getattr(args, key)
    if args.targets:
        params["targets"] = args.targets
    if args.exclude:
        params["exclude"] = args.exclude
    if args.override:
        params["overrides"] = dict(args.override)
    if args.threshold is not None:
        if args.method != "threshold":
            raise UsageError("--threshold applies to --method threshold")
        params["threshold"] = args.threshold
    if args.scope is not None:
        params["scope"] = args.scope
    if args.owl:
        params["owl"] = True
    if args.low_memory:
        params["low_memory"] = True
    if args.percdamp is not None:
        params["percdamp"] = args.percdamp
    cal = calibration_from_args(args)
    if cal is not None:
        params["calibration"] = cal
    try:
        cfg = method.config_cls.model_validate(params)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(x) for x in err["loc"]) or "options"
        raise UsageError(f"prune {args.method}: {where}: {err['msg'].removeprefix('Value error, ')}") from None
    return run_stages(args, [cfg], name=f"prune-{args.method}")


def register(sub) -> None:
    p = sub.add_parser(
        "prune", help="prune a model (unstructured, N:M or structured)",
        description="Prune weights (threshold, magnitude, taylor, wanda, sparsegpt), N:M patterns, or "
                    "structurally remove FFN channels / attention heads / layers (the model is rebuilt "
                    "smaller). See docs/PRUNING.md.")
    add_model_args(p)
    g = p.add_argument_group("pruning")
    g.add_argument("--method", required=True, choices=METHODS)
    g.add_argument("--sparsity", type=float, default=None,
                   help="fraction of weights zeroed in [0, 1); with --structured the fraction of "
                        "channels / heads / layers removed")
    g.add_argument("--pattern", default=None, metavar="N:M", help="semi-structured N:M (e.g. 2:4, 4:8)")
    g.add_argument("--structured", choices=["ffn", "heads", "layers"], default=None,
                   help="remove whole FFN channels, attention heads (KV groups) or layers")
    g.add_argument("--targets", nargs="+", default=None, metavar="GLOB",
                   help="module-name globs to prune (default: every Linear inside the blocks)")
    g.add_argument("--exclude", nargs="+", default=None, metavar="GLOB")
    g.add_argument("--override", action="append", type=_glob_value, metavar="GLOB=SPARSITY",
                   help="per-layer sparsity, repeatable (e.g. '*.down_proj=0.3')")
    g.add_argument("--scope", choices=["layer", "row", "global"], default=None,
                   help="magnitude / taylor: where the count of zeros is exact")
    g.add_argument("--threshold", type=float, default=None, help="threshold method: absolute |w| threshold")
    g.add_argument("--owl", action="store_true", help="wanda / sparsegpt: OWL non-uniform layer-wise sparsity")
    g.add_argument("--percdamp", type=float, default=None, help="sparsegpt: Hessian damping (default 0.01)")
    g.add_argument("--batch-size", type=int, default=None,
                   help="calibration samples per chunk (default: 2,048 tokens; chunks run in lock-step, "
                        "one forward per block)")
    g.add_argument("--calibration-dtype", choices=["float32", "bfloat16", "float16"], default=None,
                   help="wanda / sparsegpt: autocast dtype of the calibration forwards (bfloat16 is ~2x "
                        "faster on CPUs with AVX512-BF16/AMX; default: the model's dtype)")
    g.add_argument("--low-memory", action="store_true",
                   help="wanda / sparsegpt: two passes per block, only one chunk's activations alive (slower)")
    g.add_argument("--format", choices=["dense", "compressed-tensors", "hfcompress-sparse"], default=None,
                   help="output format: dense (default; loads everywhere) or hfcompress-sparse (bitmask + coded "
                        "values, ~0.56x of fp16 at 50%%; reload needs `import hfcompress`). See docs/FORMATS.md")
    g.add_argument("--sparse-format", action="store_true",
                   help="deprecated alias of --format hfcompress-sparse")
    add_calibration_args(p)
    add_output_args(p)
    p.set_defaults(func=_run)

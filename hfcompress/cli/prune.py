"""CLI: ``hfcompress prune MODEL --method M --sparsity S [--pattern N:M] [--structured ...] --output DIR``.

::

    hfcompress prune HuggingFaceTB/SmolLM2-135M-Instruct --method wanda --sparsity 0.5 -o out/wanda50
    hfcompress prune MODEL --method sparsegpt --pattern 2:4 --format hfcompress-sparse -o out/sgpt24
    hfcompress prune MODEL --method magnitude --structured ffn --sparsity 0.3 -o out/ffn30

``--method`` and the pruning flags are generated from the registered prune configs
(:func:`hfcompress.cli.common.add_method_args`).
"""

from __future__ import annotations

import argparse

from ..errors import UsageError
from .common import add_stage_command, method_config, run_stages


def _glob_value(text: str) -> tuple[str, float]:
    glob, sep, value = text.rpartition("=")
    if not sep or not glob:
        raise argparse.ArgumentTypeError(f"expected GLOB=SPARSITY, got {text!r} (e.g. '*.down_proj=0.3')")
    try:
        return glob, float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"sparsity in {text!r} is not a number") from None


def _add_override(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--override", dest="overrides", action="append", type=_glob_value, metavar="GLOB=SPARSITY",
                   default=None, help="per-layer sparsity, repeatable (e.g. '*.down_proj=0.3'; default: none)")


def _add_sparsity(g: argparse._ArgumentGroup) -> None:
    g.add_argument("--sparsity", type=float, default=None,
                   help="fraction of weights zeroed in [0, 1); with --structured the fraction of channels / heads "
                        "/ layers removed (no default on the command line: give it, or --pattern N:M)")


def _run(args: argparse.Namespace) -> int:
    if args.sparsity is None and args.pattern is None and getattr(args, "threshold", None) is None \
            and args.method != "drop-blocks":
        raise UsageError("give --sparsity (e.g. --sparsity 0.5), or --pattern N:M")
    cfg = method_config(args)
    return run_stages(args, [cfg], name=f"prune-{args.method}")


def register(sub) -> None:
    add_stage_command(
        sub, "prune", help="prune a model (unstructured, N:M or structured)",
        description="Prune weights (threshold, magnitude, taylor, wanda, sparsegpt), N:M patterns, or "
                    "structurally remove FFN channels / attention heads / layers (the model is rebuilt "
                    "smaller). See docs/PRUNING.md.",
        method_help="pruning method (one per registered config)",
        custom={"overrides": _add_override, "sparsity": _add_sparsity}, run=_run)

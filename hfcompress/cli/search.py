"""CLI: ``hfcompress search MODEL --method M --budget KIND=VALUE [...] --output DIR``.

::

    hfcompress search HuggingFaceTB/SmolLM2-135M-Instruct --method sparsegpt --budget sparsity=0.6 \\
        --calibration fixtures/enwiki-sample --generations 40 -o out/smol-sgpt60-searched
    hfcompress search MODEL --method drop --budget blocks=6 -o out/smol-drop6
    hfcompress search MODEL --method gptq --budget bits=3.5 --levels 2,3,4,8 -o out/smol-gptq-3.5bit

DIR gets the compressed model (as ``compress`` writes it), ``recipe.yaml`` with the searched
per-layer profile (``hfcompress compress`` reproduces it), ``search_report.json`` / ``.md`` and
plots. A rerun with the same arguments continues an interrupted search. See docs/SEARCH.md.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..config import CalibrationConfig, build_config
from ..hub.transfer import push
from ..search import SearchConfig, search
from .common import HelpFormatter, add_model_args, add_output_args, check_push_args, load_kwargs


def _run(args: argparse.Namespace) -> int:
    check_push_args(args)
    fields = SearchConfig.model_fields
    cal_defaults = fields["calibration"].get_default(call_default_factory=True).model_dump()
    cal_given = {k: v for k, v in (("dataset", args.calibration), ("samples", args.samples),
                                   ("seq_len", args.seq_len), ("split", args.calibration_split),
                                   ("seed", args.calibration_seed)) if v is not None}
    params: dict[str, Any] = {"method": args.method, "budget": args.budget,
                              "calibration": build_config(CalibrationConfig, {**cal_defaults, **cal_given}, flags=True)}
    for name in ("levels", "generations", "offspring", "tokens", "survivors", "max_switches", "seed", "batch_size",
                 "cache_dir", "group_size", "finalize", "time_limit", "start", "database_inputs"):
        value = getattr(args, name)
        if value is not None:
            params[name] = value
    if args.no_baselines:
        params["baselines"] = False
    config = build_config(SearchConfig, params, flags=True, context="search")
    result = search(args.model, config, output=args.output, overwrite=args.overwrite,
                    progress=not args.no_progress, load_kwargs=load_kwargs(args))
    report = result.report
    for row in report["comparison"]:
        print(f"{row['name']}: KL {row['kl']:.5f}")
    print(f"budget check: {report['budget_check']}")
    if result.output is not None:
        print(f"wrote {result.output}")
    if getattr(args, "push_to_hub", None):
        print(f"pushed to {push(result.output, args.push_to_hub, private=args.private)}")
    return 0


def register(sub: Any) -> None:
    f = SearchConfig.model_fields
    p = sub.add_parser("search", help="search per-layer levels for a budget (EvoPress-style)",
                       description="Find the per-layer sparsity (Wanda / SparseGPT levels), bit width (GPTQ "
                                   "levels) or the set of blocks to drop that meets a budget exactly with the least KL divergence to the dense "
                                   "model, by evolutionary search over a cached level database. See docs/SEARCH.md.",
                       formatter_class=HelpFormatter)
    add_model_args(p)
    g = p.add_argument_group("search")
    g.add_argument("--method", required=True, choices=["wanda", "sparsegpt", "drop", "gptq"],
                   help="whose levels are searched: wanda / sparsegpt sparsity per Linear, drop = whole blocks, "
                        "gptq = bit width per Linear")
    g.add_argument("--budget", required=True, metavar="KIND=VALUE",
                   help="sparsity=S (average zeros over the targeted layers, exactly the uniform profile's count), "
                        "blocks=N (blocks dropped), bits=B (gptq: average bits per weight) or size=S (gptq: packed "
                        "weights + scales, a fraction of the source (0<S<1) or bytes (S>1))")
    g.add_argument("--levels", default=None, metavar="MIN:MAX[:STEP] | B1,B2,..",
                   help="sparsity grid (default: budget +-0.25 within [0, 0.95], step 1/16); gptq: bit widths "
                        "(default: 2,3,4,8), each optionally with its own group size: 3g32 (groups of 32 inputs), "
                        "3ch (per output channel); such levels are costed in bytes, scales included, and bits=B "
                        "then means the bytes of uniform B-bit at --group-size")
    g.add_argument("--group-size", type=int, default=None,
                   help="gptq: inputs per scale group (default: 128, with the 64 / 32 fallback; -1: per channel)")
    g.add_argument("--generations", type=int, default=None, help=f"generations (default: {f['generations'].default})")
    g.add_argument("--database-inputs", choices=["dense", "sequential"], default=None,
                   help="wanda / sparsegpt / gptq: calibrate the level database on the dense model's inputs "
                        "(default) or on the start profile's, computed block by block (needs --finalize sequential)")
    g.add_argument("--start", choices=["uniform", "owl"], default=None,
                   help="wanda / sparsegpt: the first parent: uniform (default) or OWL's per-block sparsities "
                        "rounded to the exact budget")
    g.add_argument("--time-limit", type=float, default=None, metavar="MINUTES",
                   help="start no generation that would end past MINUTES after the start (loading and level "
                        "database included); the report says how many ran, a rerun with more time resumes")
    g.add_argument("--offspring", type=int, default=None, help=f"offspring per generation "
                                                              f"(default: {f['offspring'].default})")
    g.add_argument("--tokens", type=int, nargs="+", default=None, metavar="N",
                   help="fitness tokens per selection step (default: 512 2048)")
    g.add_argument("--survivors", type=int, nargs="+", default=None, metavar="N",
                   help="offspring kept after each selection step, ending with 1 (default: 4 1)")
    g.add_argument("--max-switches", type=int, default=None,
                   help=f"most level switches per mutation (default: {f['max_switches'].default})")
    g.add_argument("--seed", type=int, default=None, help="seed of the search (default: 0)")
    g.add_argument("--batch-size", type=int, default=None, help="calibration windows per chunk (default: 2,048 "
                                                                "tokens per chunk)")
    g.add_argument("--cache-dir", default=None, help="level database cache (default: ~/.cache/hfcompress/search)")
    g.add_argument("--finalize", choices=["sequential", "assembled"], default=None,
                   help="how the output's weights are computed at the searched levels: sequential (default: "
                        "block by block on the compressed model's inputs, as prune / quantize do) or assembled "
                        "(the level-database weights the search scored, computed on dense inputs)")
    g.add_argument("--no-baselines", action="store_true", help="skip scoring the uniform / OWL baselines")
    c = p.add_argument_group("calibration (level database and fitness tokens)")
    c.add_argument("--calibration", default=None, metavar="DATASET",
                   help="Hub dataset id or local dataset folder (default: NeelNanda/pile-10k)")
    c.add_argument("--calibration-split", default=None, help="dataset split (default: train)")
    c.add_argument("--samples", type=int, default=None, help="calibration windows (default: 32)")
    c.add_argument("--seq-len", type=int, default=None, help="tokens per window (default: 512)")
    c.add_argument("--calibration-seed", type=int, default=None, help="seed of the window offsets (default: 0; "
                                                                      "fitness windows use seed + 1)")
    add_output_args(p)
    p.set_defaults(func=_run)

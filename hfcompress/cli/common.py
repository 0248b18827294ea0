"""Flags and helpers shared by the commands that load a model and write an output folder."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..config import CalibrationConfig, StageConfig
from ..errors import UsageError


def add_model_args(p: argparse.ArgumentParser, *, positional: str = "model") -> None:
    """MODEL (repo id or folder) and the loading flags."""
    p.add_argument(positional, help="Hub repo id (org/name) or local model folder")
    g = p.add_argument_group("loading")
    g.add_argument("--revision", help="branch, tag or commit of the Hub repo")
    g.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"],
                   help="dtype to load the weights in (default: as saved)")
    g.add_argument("--device-map", default=None, help="device map for from_pretrained (e.g. cpu, auto)")
    g.add_argument("--task", default=None, help="task / Auto class (default: detected from config.json)")
    g.add_argument("--trust-remote-code", action="store_true", help="run code from the model repo (off by default)")
    g.add_argument("--allow-pickle", action="store_true", help="accept pytorch_model.bin checkpoints (pickle)")


def add_output_args(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--output", "-o", required=required, help="output folder (written atomically)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    g.add_argument("--push-to-hub", metavar="REPO_ID", default=None,
                   help="after saving, push the output folder to this Hub repo in one commit")
    g.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    g.add_argument("--no-progress", action="store_true", help="hide progress bars")


def add_calibration_args(p: argparse.ArgumentParser, *, default_dataset: str | None = None) -> None:
    g = p.add_argument_group("calibration")
    g.add_argument("--calibration", default=default_dataset,
                   help="calibration dataset: Hub repo id or local dataset folder")
    g.add_argument("--calibration-config", default=None, help="dataset config name")
    g.add_argument("--calibration-split", default="train")
    g.add_argument("--text-column", default="text")
    g.add_argument("--samples", type=int, default=32, help="number of calibration windows")
    g.add_argument("--seq-len", type=int, default=512, help="tokens per calibration window")
    g.add_argument("--seed", type=int, default=0)


def calibration_from_args(args: argparse.Namespace) -> CalibrationConfig | None:
    if not getattr(args, "calibration", None):
        return None
    return CalibrationConfig(dataset=args.calibration, config=args.calibration_config,
                             split=args.calibration_split, text_column=args.text_column,
                             samples=args.samples, seq_len=args.seq_len, seed=args.seed)


def load_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    return {"revision": args.revision, "dtype": args.dtype, "device_map": args.device_map,
            "task": args.task, "trust_remote_code": args.trust_remote_code,
            "allow_pickle": args.allow_pickle}


def run_stages(args: argparse.Namespace, stages: list[StageConfig], name: str | None = None) -> int:
    """Build a recipe from ``stages`` and run it like ``compress`` (shared by the stage commands)."""
    from ..recipes import Recipe

    recipe = Recipe(name=name, stages=stages)
    return run_recipe(args, recipe)


def run_recipe(args: argparse.Namespace, recipe: Any) -> int:
    from ..pipeline import compress

    if getattr(args, "push_to_hub", None):  # refuse a push that cannot happen before any work
        from ..hub.transfer import check_push

        check_push(args.push_to_hub)
    elif getattr(args, "private", False):
        raise UsageError("--private only applies with --push-to-hub REPO_ID")

    result = compress(args.model, recipe, output=args.output, overwrite=args.overwrite,
                      progress=not args.no_progress, load_kwargs=load_kwargs(args))
    _print_summary(result)
    if getattr(args, "push_to_hub", None):
        from ..cards import write_card
        from ..hub import push

        write_card(result.output, repo_id=args.push_to_hub)  # the card's snippet names the repo
        url = push(result.output, args.push_to_hub, private=args.private)
        print(f"pushed to {url}")
    return 0


def _print_summary(result: Any) -> None:
    report = result.report
    for rec in report["stages"]:
        summary = json.dumps(rec["summary"], default=str)
        if len(summary) > 300:
            summary = summary[:297] + "..."
        print(f"{rec['family']}/{rec['method']}: {rec['seconds']:.1f}s {summary}")
    size = report["size"]
    before, after = size["before"], size["after"]
    print(f"parameters: {before.get('parameters')} -> {after.get('parameters')} "
          f"(non-zero {after.get('nonzero_parameters')})")
    if after.get("weight_bytes"):
        print(f"weights on disk: {before.get('weight_bytes')} -> {after['weight_bytes']} bytes")
    if result.output is not None:
        print(f"wrote {Path(result.output)}")

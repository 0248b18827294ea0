"""Flags and helpers shared by the commands that load a model and write an output folder.

The method flags of ``prune`` and ``quantize`` are generated from the registered config
classes (:func:`add_method_args`): ``--method`` lists every registered method, each config
field becomes a flag (``low_memory`` -> ``--low-memory``) with the field's description as
its help and the methods' defaults shown, and a flag given for a method whose config has no
such field is refused with a one-line error. Adding a method adds its flags.
"""

from __future__ import annotations

import argparse
import json
import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ..config import CalibrationConfig, StageConfig, build_config
from ..errors import UsageError
from ..hub.transfer import check_push, push
from ..pipeline import CompressResult, compress
from ..recipes import Recipe
from ..registry import Method, methods


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Every flag shows its default (unless its help already says it, or there is none to show)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "default" in text or action.default in (None, argparse.SUPPRESS) or action.required \
                or not action.option_strings:
            return text
        if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
            return text
        return f"{text} (default: %(default)s)"


def add_model_args(p: argparse.ArgumentParser, *, positional: str = "model", offload: bool = True) -> None:
    """MODEL (repo id or folder) and the loading flags (``offload``: also --max-memory / --offload-folder)."""
    p.add_argument(positional, help="Hub repo id (org/name) or local model folder")
    g = p.add_argument_group("loading")
    g.add_argument("--revision", help="branch, tag or commit of the Hub repo (default: main)")
    g.add_argument("--dtype", default="auto", choices=["auto", "float32", "float16", "bfloat16"],
                   help="dtype to load the weights in (default: auto, as saved)")
    g.add_argument("--device-map", default=None,
                   help="device map for from_pretrained (e.g. cpu, auto; default: none, all on CPU)")
    if offload:
        add_offload_args(g)
    g.add_argument("--task", default=None, help="task / Auto class (default: detected from config.json)")
    g.add_argument("--trust-remote-code", action="store_true", help="run code from the model repo (off by default)")
    g.add_argument("--allow-pickle", action="store_true",
                   help="accept pytorch_model.bin checkpoints (pickle; off by default)")


def add_offload_args(g: Any) -> None:
    """--max-memory / --offload-folder: models larger than memory, pruned block by block."""
    g.add_argument("--max-memory", default=None, metavar="DEVICE=SIZE[,...]",
                   help="memory the weights may use per device, e.g. cpu=300MB (or 0=10GiB,cpu=2GB): the rest "
                        "is offloaded to disk and pruned block by block (docs/OFFLOAD.md; default: no limit)")
    g.add_argument("--offload-folder", default=None, metavar="DIR",
                   help="folder for the weights offloaded to disk (default: a temporary folder)")


def add_progress_arg(p: argparse.ArgumentParser | Any) -> None:
    """``--no-progress``: the one progress convention of every verb (library bars included)."""
    p.add_argument("--no-progress", action="store_true",
                   help="hide progress bars, transformers' loading bars included (shown by default)")


def add_output_args(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    g = p.add_argument_group("output")
    g.add_argument("--output", "-o", required=required, help="output folder (written atomically)")
    g.add_argument("--overwrite", action="store_true", help="replace an existing output folder (off by default)")
    g.add_argument("--push-to-hub", metavar="REPO_ID", default=None,
                   help="after saving, push the output folder to this Hub repo in one commit (default: no push)")
    g.add_argument("--private", action="store_true", help="with --push-to-hub: create the repo private")
    add_progress_arg(g)


#: CLI flag -> CalibrationConfig field, for the calibration group.
CALIBRATION_FLAGS = {"calibration": "dataset", "calibration_config": "config", "calibration_split": "split",
                     "text_column": "text_column", "samples": "samples", "seq_len": "seq_len", "seed": "seed",
                     "image_column": "image_column", "audio_column": "audio_column"}


def add_calibration_args(p: argparse.ArgumentParser, *, default_dataset: str | None = None) -> None:
    """The calibration group. Every flag defaults to "not given" (None): any one given sets the
    stage's calibration, the others keep the method's defaults (shown in the help)."""
    fields = CalibrationConfig.model_fields
    g = p.add_argument_group("calibration")

    def add(flag: str, help_: str, **kw: Any) -> None:
        field = CALIBRATION_FLAGS[flag.lstrip("-").replace("-", "_")]
        g.add_argument(flag, default=None, help=f"{help_} (default: {fields[field].default})", **kw)

    add("--calibration", "calibration dataset: Hub repo id or local dataset folder", metavar="DATASET")
    add("--calibration-config", "dataset config name")
    add("--calibration-split", "dataset split the calibration windows are drawn from")
    add("--text-column", "text column of the calibration dataset (transcripts, for speech models)")
    add("--image-column", "image column of the calibration dataset, for image models (none: found by type)")
    add("--audio-column", "audio column of the calibration dataset, for speech models (none: found by type)")
    add("--samples", "number of calibration windows", type=int)
    add("--seq-len", "tokens per calibration window", type=int)
    add("--seed", "seed of the random window offsets", type=int)


def calibration_from_args(args: argparse.Namespace, base: CalibrationConfig | None = None) -> CalibrationConfig | None:
    """The calibration config the flags ask for (None when no calibration flag is given).

    Flags given without ``--calibration`` change the method's default calibration (``base``).
    """
    given = {field: getattr(args, flag) for flag, field in CALIBRATION_FLAGS.items()
             if getattr(args, flag, None) is not None}
    if not given:
        return None
    params = (base or CalibrationConfig()).model_dump()
    params.update(given)
    return build_config(CalibrationConfig, params, flags=True)


def load_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    kwargs = {"revision": args.revision, "dtype": args.dtype, "device_map": args.device_map,
              "task": args.task, "trust_remote_code": args.trust_remote_code,
              "allow_pickle": args.allow_pickle}
    if getattr(args, "max_memory", None) is not None:  # only where given (not every verb offers them)
        from ..loading.offload import parse_max_memory  # deferred: imports torch

        kwargs["max_memory"] = parse_max_memory(args.max_memory, "--max-memory")
    if getattr(args, "offload_folder", None) is not None:
        kwargs["offload_folder"] = args.offload_folder
    return kwargs


# ------------------------------------------------------------------ flags generated from the registry
def _unwrap(annotation: Any) -> tuple[Any, bool]:
    """(annotation without ``None``, whether None was allowed)."""
    args = typing.get_args(annotation)
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return (rest[0] if len(rest) == 1 else annotation), True
    return annotation, False


def _default(info: Any) -> Any:
    return info.get_default(call_default_factory=True)


def _show(value: Any) -> str:
    if isinstance(value, BaseModel):
        return "defaults"
    return "none" if value is None else str(value)


def field_flag(name: str, annotation: Any, default: Any) -> tuple[str, dict[str, Any]] | None:
    """``(--flag, add_argument kwargs)`` for a config field, or None when it has no CLI form."""
    ann, _ = _unwrap(annotation)
    origin = typing.get_origin(ann)
    flag = "--" + name.replace("_", "-")
    if ann is bool:
        if default is True:
            return "--no-" + name.replace("_", "-"), {"action": "store_false", "default": None}
        return flag, {"action": "store_true", "default": None}
    if origin is typing.Literal:
        return flag, {"choices": list(typing.get_args(ann)), "default": None}
    if origin is list and typing.get_args(ann) in ((str,), (int,), (float,)):
        return flag, {"nargs": "+", "type": typing.get_args(ann)[0], "default": None, "metavar": name.upper()[:-1]
                      if name.endswith("s") else name.upper()}
    if ann in (int, float, str):
        return flag, {"type": ann, "default": None}
    return None


#: Fields every family handles itself (the method choice, the calibration group).
_SKIP_FIELDS = {"method", "calibration"}
#: Destinations of the shared model / output flags: no config field may take their names.
_RESERVED = {"model", "revision", "dtype", "device_map", "max_memory", "offload_folder", "task", "trust_remote_code",
             "allow_pickle", "output", "overwrite", "push_to_hub", "private", "no_progress"}


def add_method_args(p: argparse.ArgumentParser, family: str, *, title: str, method_help: str,
                    custom: dict[str, Any] | None = None) -> None:
    """``--method`` and one flag per config field of the family's registered methods.

    ``custom``: field -> ``callable(group)`` adding a hand-spelled flag with ``dest=field``
    (e.g. ``overrides`` as repeatable ``--override GLOB=SPARSITY``).
    """
    registered = methods(family)
    g = p.add_argument_group(title)
    g.add_argument("--method", required=True, choices=list(registered), help=method_help)
    fields: dict[str, dict[str, Any]] = {}
    for name, method in registered.items():
        for field, info in method.config_cls.model_fields.items():
            if field in _SKIP_FIELDS:
                continue
            entry = fields.setdefault(field, {"info": info, "methods": {}})
            entry["methods"][name] = _default(info)
            if not entry["info"].description and info.description:
                entry["info"] = info
    for field, entry in fields.items():
        if custom and field in custom:
            custom[field](g)
            continue
        info, by_method = entry["info"], entry["methods"]
        spec = field_flag(field, info.annotation, _default(info))
        if spec is None:
            continue
        flag, kw = spec
        if _unwrap(info.annotation)[0] is bool and len(set(by_method.values())) > 1:
            # Methods disagree on the default: offer both spellings (--x / --no-x).
            flag, kw = "--" + field.replace("_", "-"), {"action": argparse.BooleanOptionalAction, "default": None}
        if flag in p._option_string_actions or field in CALIBRATION_FLAGS or field in _RESERVED:
            owners = ", ".join(sorted(by_method))
            raise ValueError(f"{family} config field {field!r} ({owners}) would shadow the CLI flag {flag}: "
                             "rename the field")
        defaults = {_show(v) for v in by_method.values()}
        if len(defaults) == 1:
            shown = defaults.pop()
        else:
            shown = "; ".join(f"{m}: {_show(v)}" for m, v in by_method.items())
        applies = "" if len(by_method) == len(registered) else f"[{', '.join(by_method)}] "
        help_ = f"{applies}{info.description or field.replace('_', ' ')}"
        if "default" not in help_:
            help_ += f" (default: {shown})"
        g.add_argument(flag, dest=field, help=help_.replace("%", "%%"), **kw)
    p.set_defaults(_method_family=family, _method_fields=sorted(fields))


def method_config(args: argparse.Namespace, *, extra: dict[str, Any] | None = None) -> StageConfig:
    """The stage config of ``--method`` from the generated flags (a one-line error for a flag the
    method does not take, or a bad value)."""
    family = args._method_family
    method: Method = methods(family)[args.method]
    fields = method.config_cls.model_fields
    params: dict[str, Any] = {"method": args.method}
    for field in args._method_fields:
        value = getattr(args, field, None)
        if value is None:
            continue
        if field not in fields:
            takers = sorted(n for n, m in methods(family).items() if field in m.config_cls.model_fields)
            raise UsageError(f"--{field.replace('_', '-')} does not apply to --method {args.method} "
                             f"(it applies to {', '.join(takers)})")
        params[field] = dict(value) if field == "overrides" else value
    params.update(extra or {})
    if any(getattr(args, flag, None) is not None for flag in CALIBRATION_FLAGS):
        cal_field = fields.get("calibration")
        takers = sorted(n for n, m in methods(family).items() if _uses_calibration(m.config_cls, None))
        if cal_field is None or not _uses_calibration(method.config_cls, params):
            raise UsageError(f"--calibration applies to calibrated methods ({', '.join(takers)}), "
                             f"not to {args.method}")
        base = _default(cal_field)
        params["calibration"] = calibration_from_args(args, base if isinstance(base, CalibrationConfig) else None)
    return build_config(method.config_cls, params, flags=True, context=f"{family} {args.method}")


def _uses_calibration(cls: type[BaseModel], params: dict[str, Any] | None) -> bool:
    """Whether a method reads calibration data (with these params, when given)."""
    if "calibration" not in cls.model_fields:
        return False
    uses = getattr(cls, "uses_calibration", None)
    return bool(uses(params or {})) if callable(uses) else True


def add_stage_command(sub: Any, family: str, *, help: str, description: str, method_help: str,
                      custom: dict[str, Any] | None = None, run: Any) -> argparse.ArgumentParser:
    """A one-stage command (``prune``, ``quantize``): MODEL, loading flags, the family's generated
    method flags, calibration and output flags; ``run(args)`` is its handler."""
    p = sub.add_parser(family, help=help, description=description, formatter_class=HelpFormatter)
    add_model_args(p)
    add_method_args(p, family, title={"prune": "pruning", "quantize": "quantization"}.get(family, family),
                    method_help=method_help, custom=custom)
    add_calibration_args(p)
    add_output_args(p)
    p.set_defaults(func=run)
    return p


# ------------------------------------------------------------------ running
def run_stages(args: argparse.Namespace, stages: list[StageConfig], name: str | None = None) -> int:
    """Build a recipe from ``stages`` and run it like ``compress`` (shared by the stage commands)."""
    return run_recipe(args, Recipe(name=name, stages=stages))


def check_push_args(args: argparse.Namespace) -> None:
    """Refuse a push that cannot happen (no token, bad repo id) and ``--private`` without a push,
    before any work."""
    if getattr(args, "push_to_hub", None):
        check_push(args.push_to_hub)
    elif getattr(args, "private", False):
        raise UsageError("--private only applies with --push-to-hub REPO_ID")


def run_recipe(args: argparse.Namespace, recipe: Recipe) -> int:
    check_push_args(args)

    # The card is rendered once, inside the output, for the repo it will be pushed to.
    result = compress(args.model, recipe, output=args.output, overwrite=args.overwrite,
                      progress=not args.no_progress, load_kwargs=load_kwargs(args),
                      repo_id=getattr(args, "push_to_hub", None))
    print_summary(result)
    if getattr(args, "push_to_hub", None):
        url = push(result.output, args.push_to_hub, private=args.private)
        print(f"pushed to {url}")
    return 0


def print_summary(result: CompressResult) -> None:
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


_print_summary = print_summary  # the earlier private name
__all__ = ["HelpFormatter", "add_calibration_args", "add_stage_command", "check_push_args", "add_method_args", "add_model_args", "add_output_args",
           "add_progress_arg", "calibration_from_args", "load_kwargs", "method_config", "print_summary",
           "run_recipe", "run_stages"]

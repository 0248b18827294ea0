"""No flag is accepted and then ignored: for every verb, each flag of its parser (looped over the
parser's actions, so new flags are covered by themselves) set to a non-default value either
changes what reaches the run (the stage configs, the load / output arguments, what is printed)
or is refused with a one-line error."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

import hfcompress.cli as cli
import hfcompress.cli.common as common
import hfcompress.cli.distill as cli_distill
import hfcompress.cli.evaluate as cli_evaluate
from hfcompress.config import CalibrationConfig
from hfcompress.registry import methods

#: Spellings kept only for compatibility, equal to the default by design (never a change to see).
ALIASES = {("evaluate", "--progress")}
#: flags their method cannot run without: omitting one must be refused in one line, giving it must reach the run
REQUIRED = {("prune", "--blocks")}


class _Result:
    def __init__(self, output: Any) -> None:
        self.report = {"stages": [], "size": {"before": {}, "after": {}}}
        self.output = Path(output) if output else None


@pytest.fixture
def calls(monkeypatch):
    seen: list[Any] = []

    def fake_compress(model, recipe, output=None, **kwargs):
        seen.append(("compress", model, recipe.to_dict(), output, sorted(kwargs.items(), key=str)))
        return _Result(output)

    def fake_evaluate(model, configs, **kwargs):
        seen.append(("evaluate", model, [c.model_dump() for c in configs], sorted(kwargs.items(), key=str)))
        return {"results": [], "comparison": []}

    monkeypatch.setattr(common, "compress", fake_compress)
    monkeypatch.setattr(cli_distill, "compress", fake_compress)
    monkeypatch.setattr(cli_evaluate, "evaluate", fake_evaluate)
    monkeypatch.setattr(common, "check_push", lambda repo: seen.append(("check_push", repo)))
    monkeypatch.setattr(common, "push", lambda *a, **k: seen.append(("push", a, k)) or "url")
    monkeypatch.setattr(cli_distill, "push", lambda *a, **k: seen.append(("push", a, k)) or "url")
    monkeypatch.setattr(cli, "quiet_progress", lambda: seen.append(("quiet_progress",)))
    return seen


def _run(argv: list[str], calls: list, capsys) -> tuple[int, str, str]:
    calls.clear()
    try:
        rc = cli.main(argv)
    except SystemExit as exc:
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, json.dumps(calls, default=str, sort_keys=True) + out, err


def _subparser(verb: str) -> argparse.ArgumentParser:
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices[verb]


def _values(action: argparse.Action) -> list[list[str]]:
    """Candidate argument lists that set ``action`` to something other than its default."""
    flag = action.option_strings[0]
    if isinstance(action, argparse.BooleanOptionalAction):  # --x / --no-x: one of them is not the default
        return [[opt] for opt in action.option_strings]
    if action.nargs == 0:
        return [[flag]]
    if action.choices:
        return [[flag, str(c)] for c in reversed(list(action.choices))]
    if action.type is not None and getattr(action.type, "__name__", "") == "_glob_value":
        return [[flag, "*.down_proj=0.3"]]
    if action.nargs == "?":
        return [[flag], [flag, "x-value"]]
    if action.type is int:
        return [[flag, "33"], [flag, "2"]]
    if action.type is float:
        return [[flag, "0.25"], [flag, "0.003"]]
    if action.nargs in ("+", "*"):
        return [[flag, "lm_head"]]
    return [[flag, "x-value"]]


def _method_for(verb: str, action: argparse.Action) -> str | None:
    """A method of ``verb`` whose config takes the flag (for the generated method flags)."""
    calibration = action.dest in common.CALIBRATION_FLAGS
    for name, m in methods(verb).items():
        fields = m.config_cls.model_fields
        if calibration and common._uses_calibration(m.config_cls, {}):
            return name
        if not calibration and action.dest in fields:
            return name
    return None


def _check_verb(verb: str, base: list[str], calls, capsys, *, method_flag: bool = False) -> list[str]:
    """Every flag of ``verb``: changed the run or refused in one line. Returns the failures."""
    failures = []
    given = {a for a in base if a.startswith("-")}
    for action in _subparser(verb)._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        flag = action.option_strings[0]
        if set(action.option_strings) & given or (verb, flag) in ALIASES:
            continue
        argv = list(base)
        if method_flag:
            method = _method_for(verb, action) if action.dest in _generated(verb) else None
            if method:
                argv[argv.index("--method") + 1] = method
        rc0, seen0, err0 = _run(argv, calls, capsys)
        if (verb, flag) in REQUIRED:
            errors = [ln for ln in err0.splitlines() if ln.startswith("error:")]
            runs = [_run([*argv, *extra], calls, capsys) for extra in _values(action)]
            if rc0 == 0 or len(errors) != 1 or not runs or any(r[0] != 0 for r in runs):
                failures.append(f"{verb} {flag} (required): omitted rc={rc0} {err0.strip()[:120]}; "
                                f"given rc={[r[0] for r in runs]}")
            continue
        assert rc0 == 0, (verb, argv, err0)
        outcomes = []
        for extra in _values(action):
            rc, seen, err = _run([*argv, *extra], calls, capsys)
            errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
            if rc == 0 and seen != seen0:
                outcomes.append("reached")
                break
            if rc != 0 and len(errors) == 1 and "Traceback" not in err:
                outcomes.append(f"refused: {errors[0]}")
                continue
            outcomes.append(f"IGNORED or broken (rc={rc}) {extra}: {err.strip()[:200]}")
        if not any(o == "reached" or o.startswith("refused") for o in outcomes):
            failures.append(f"{verb} {flag}: {outcomes}")
    return failures


def _generated(verb: str) -> set[str]:
    fields = set(common.CALIBRATION_FLAGS)
    for m in methods(verb).values():
        fields |= set(m.config_cls.model_fields)
    return fields


@pytest.fixture
def paths(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text("stages:\n  - prune: {method: magnitude, sparsity: 0.5}\n")
    return {"recipe": str(recipe), "out": str(tmp_path / "out"), "json": str(tmp_path / "eval" / "report.json")}


def test_prune_flags_reach_the_run(calls, capsys, paths):
    base = ["prune", "m", "--method", "magnitude", "--sparsity", "0.5", "-o", paths["out"]]
    assert not _check_verb("prune", base, calls, capsys, method_flag=True)


def test_quantize_flags_reach_the_run(calls, capsys, paths):
    base = ["quantize", "m", "--method", "bnb-nf4", "-o", paths["out"]]
    assert not _check_verb("quantize", base, calls, capsys, method_flag=True)


def test_compress_flags_reach_the_run(calls, capsys, paths):
    base = ["compress", "m", "-r", paths["recipe"], "-o", paths["out"]]
    assert not _check_verb("compress", base, calls, capsys)


def test_evaluate_flags_reach_the_run(calls, capsys, paths):
    base = ["evaluate", "m", "--metric", "perplexity", "--metric", "efficiency", "--metric", "accuracy",
            "--dataset", "d", "--output", paths["json"]]
    assert not _check_verb("evaluate", base, calls, capsys)


def test_distill_and_finetune_flags_reach_the_run(calls, capsys, paths):
    base = ["distill", "--teacher", "t", "--student-layers", "2", "--dataset", "d", "-o", paths["out"]]
    failures = _check_verb("distill", base, calls, capsys)
    base = ["finetune", "m", "--dataset", "d", "-o", paths["out"]]
    failures += _check_verb("finetune", base, calls, capsys)
    assert not failures


def test_calibration_flags_without_calibration_reach_the_config(calls, capsys, paths):
    """Issue 19 item 1: --samples / --seq-len without --calibration were dropped."""
    rc, _, err = _run(["prune", "m", "--method", "wanda", "--sparsity", "0.5", "--samples", "2",
                       "--seq-len", "32", "--seed", "3", "--calibration-split", "validation", "-o", paths["out"]],
                      calls, capsys)
    assert rc == 0, err
    cal = calls[0][2]["stages"][0]["prune"]["calibration"]
    assert (cal["samples"], cal["seq_len"], cal["seed"], cal["split"]) == (2, 32, 3, "validation")
    assert cal["dataset"] == CalibrationConfig().dataset
    rc, _, err = _run(["prune", "m", "--method", "threshold", "--sparsity", "0.5", "--samples", "2",
                       "-o", paths["out"]], calls, capsys)
    assert rc == 2 and "--calibration applies to calibrated methods" in err


@pytest.mark.parametrize("verb", ["compress", "prune", "quantize", "distill", "finetune", "evaluate"])
def test_every_flag_has_help_and_shows_its_default(verb):
    """Issue 19 item 7: help text on every flag, and the default shown where there is one."""
    parser = _subparser(verb)
    formatter = parser._get_formatter()
    missing = []
    for action in parser._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction) \
                or (verb, action.option_strings[0]) in ALIASES:
            continue
        text = formatter._get_help_string(action) if action.help else ""
        if not text or action.help == argparse.SUPPRESS:
            missing.append(f"{action.option_strings[0]}: no help")
        elif not (action.required or action.nargs == 0 or "default" in text or "%(default)" in text):
            missing.append(f"{action.option_strings[0]}: no default shown ({text!r})")
    assert not missing, missing


def test_library_noise_filtered_and_progress_off(caplog):
    """Issue 19 item 5: bitsandbytes' "missing kernels" warning never reaches the user; --no-progress
    turns transformers' bars ("Loading weights") off too."""
    import logging

    import transformers.utils.logging as hf_logging

    import hfcompress
    from hfcompress.integrations import quiet_progress

    assert hfcompress.__version__
    log = logging.getLogger("bitsandbytes.backends.cpu.ops")
    with caplog.at_level(logging.WARNING):
        log.warning("Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure ...", "x")
        log.warning("something else")
        logging.getLogger("bitsandbytes.autograd._functions").warning(
            "MatMul8bitLt: inputs will be cast from %s to float16 during quantization", "torch.float32")
    assert [r.getMessage() for r in caplog.records] == ["something else"]
    was = hf_logging.is_progress_bar_enabled()
    try:
        quiet_progress()
        assert not hf_logging.is_progress_bar_enabled()
    finally:
        if was:
            from huggingface_hub.utils import enable_progress_bars

            hf_logging.enable_progress_bar()
            enable_progress_bars()

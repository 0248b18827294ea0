"""Fuzzing: hypothesis-generated recipes (stage-shaped, with the real registered methods' field
names) and CLI argument lists give validation errors — exit 2 or 1 with ONE ``error:`` line —
never crashes (another exit code or a traceback) or hangs.

Fuzzed command lines only ever point at models that do not exist (a missing local folder, or a
Hub id with the Hub offline), so no real work starts; each example runs under a time bound.
"""

from __future__ import annotations

import contextlib
import io
import os
import signal
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hfcompress.errors import RecipeError
from hfcompress.recipes import dump_recipe, parse_recipe
from hfcompress.registry import FAMILIES, methods

EXAMPLE_SECONDS = 20  # a generous bound: a validation error takes milliseconds
COUNTS = {"recipes": 0, "argv": 0}


@contextlib.contextmanager
def time_bound(seconds: float):
    """Raise TimeoutError in this (main) thread if the block runs longer than ``seconds``."""

    def on_alarm(signum, frame):  # noqa: ARG001
        raise TimeoutError(f"hang: no answer within {seconds} s")

    old = signal.signal(signal.SIGALRM, on_alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _real_methods() -> dict[str, dict[str, list[str]]]:
    """family -> method -> config field names (test-only methods excluded)."""
    out: dict[str, dict[str, list[str]]] = {}
    for family in FAMILIES:
        try:
            found = methods(family)
        except Exception:  # noqa: BLE001 - a family whose package is not there yet
            continue
        out[family] = {name: sorted(m.config_cls.model_fields) for name, m in found.items()
                       if not name.startswith("test-")}
    return out


REAL = _real_methods()

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 1 << 20), st.floats(allow_nan=False, allow_infinity=True),
    st.sampled_from([0, 1, -1, 0.5, 1.0, 0.999, 2, 8, 48, 64, 4096, "2:4", "4:4", "1:2", "3:8", "heads", "ffn",
                     "layers", "float16", "bfloat16", "int3", "", "null", "fixtures/enwiki-sample", "text"]),
    st.text(max_size=10),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)), max_leaves=6)


@st.composite
def stage(draw):
    families = sorted(REAL) + ["polish"]
    family = draw(st.sampled_from(families))
    names = sorted(REAL.get(family, {})) or ["none"]
    method = draw(st.one_of(st.sampled_from(names), st.text(max_size=6)))
    fields = REAL.get(family, {}).get(method, []) or ["sparsity", "bits"]
    keys = st.one_of(st.sampled_from(fields), st.sampled_from(fields).map(lambda k: k + "x"), st.text(max_size=6))
    params = draw(st.dictionaries(keys, values, max_size=4))
    if draw(st.booleans()):
        params["method"] = method
    if "calibration" in fields and draw(st.booleans()):
        params["calibration"] = draw(st.dictionaries(
            st.sampled_from(["dataset", "samples", "seq_len", "split", "text_column", "seed", "bogus"]),
            scalars, max_size=4))
    return {family: params} if draw(st.integers(0, 9)) else draw(values)


recipes = st.fixed_dictionaries(
    {"stages": st.lists(stage(), max_size=3)},
    optional={"version": st.sampled_from([1, 2, "1", None]), "name": scalars, "description": scalars,
              "extra": scalars},
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recipes)
def test_fuzzed_stage_recipes_validate_or_fail_in_one_line(data):
    text = yaml.safe_dump(data, sort_keys=False)
    COUNTS["recipes"] += 1
    with time_bound(EXAMPLE_SECONDS):
        try:
            recipe = parse_recipe(text, source="fuzz.yaml")
        except RecipeError as exc:
            msg = str(exc)
            assert "\n" not in msg and msg.startswith("fuzz.yaml:"), msg
            return
    # a recipe that validates round-trips exactly
    assert parse_recipe(dump_recipe(recipe)) == recipe


# ---------------------------------------------------------------------------------------------
# CLI argument lists
# ---------------------------------------------------------------------------------------------

#: commands fuzzed (never `hub serve` — it would serve —, `hub seed` or `assets` — heavy by design)
COMMANDS = ("compress", "prune", "quantize", "evaluate", "distill", "push", "pull", "card")


def _options() -> dict[str, list[tuple[str, int]]]:
    """command -> [(option string, number of values)] read from the real parser."""
    import argparse

    from hfcompress.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    out = {}
    for name in COMMANDS:
        if name not in sub.choices:
            continue
        opts = []
        for action in sub.choices[name]._actions:
            if not action.option_strings or "--help" in action.option_strings:
                continue
            nargs = 0 if action.nargs == 0 else (2 if action.nargs in ("+", "*") else 1)
            opts.append((action.option_strings[-1], nargs))
        out[name] = opts
    return out


OPTIONS = _options()
MISSING = "/nonexistent-hfcompress-fuzz/model"
arg_values = st.one_of(
    st.sampled_from(["0", "1", "-1", "0.5", "1.5", "2:4", "4:4", "nan", "inf", "1e309", "abc", "", "-", "--",
                     "wanda", "magnitude", "bnb-nf4", "quanto-int4", "perplexity", "heads", "cpu",
                     "hfc-fuzz/none", MISSING, "out", "r.yaml", "bad.yaml"]),
    st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=12),
)


@st.composite
def argv(draw):
    command = draw(st.sampled_from(sorted(OPTIONS)))
    args = [command]
    if command in ("push",):
        args += [draw(st.sampled_from([MISSING, "out", "."])), draw(st.sampled_from(["hfc-fuzz/x", "bad id", ""]))]
    elif command == "card":
        args.append(draw(st.sampled_from([MISSING, "out"])))
    elif draw(st.integers(0, 5)):
        args.append(draw(st.sampled_from([MISSING, "hfc-fuzz/none-at-all", "out"])))
    for opt, nargs in draw(st.lists(st.sampled_from(OPTIONS[command]), max_size=6)):
        args.append(opt)
        args += [draw(arg_values) for _ in range(nargs if nargs < 2 else draw(st.integers(1, 2)))]
    if draw(st.booleans()):
        args.insert(draw(st.integers(0, len(args))), draw(arg_values))
    return args


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("fuzz-cwd")
    (d / "r.yaml").write_text("stages:\n  - prune: {method: magnitude, sparsity: 0.5}\n")
    (d / "bad.yaml").write_text("stages:\n  - prune: {method: magnitude\n")
    (d / "out").mkdir()
    (d / "out" / "keep.txt").write_text("x")
    return d


@contextlib.contextmanager
def _offline_in(folder: Path):
    """cwd = ``folder``, no token, the Hub offline (a fuzzed Hub id fails at once, no network)."""
    from huggingface_hub import constants

    old_cwd, old_env = os.getcwd(), dict(os.environ)
    old_offline = constants.HF_HUB_OFFLINE
    os.chdir(folder)
    os.environ.update({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
                       "HF_HOME": str(folder / "hf-home")})
    os.environ.pop("HF_TOKEN", None)
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = old_offline
        os.chdir(old_cwd)
        os.environ.clear()
        os.environ.update(old_env)


def test_fuzzed_command_lines_fail_cleanly(fuzz_dir: Path):
    from hfcompress.cli import main

    @settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
    @given(argv())
    def check(args):
        COUNTS["argv"] += 1
        out, err = io.StringIO(), io.StringIO()
        with time_bound(EXAMPLE_SECONDS), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse
                code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
        stderr = err.getvalue()
        assert "Traceback" not in stderr, (args, stderr)
        assert code in (0, 1, 2), (args, code, stderr)
        if code:
            lines = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
            assert len(lines) == 1, (args, stderr)
            assert "unexpected failure" not in lines[0], (args, lines[0])
            # offline: no pointless retries, and no "not a model repo" for a Hub that cannot be reached
            assert "transient" not in lines[0] and "not a transformers model repo" not in lines[0], lines[0]
        assert (fuzz_dir / "out" / "keep.txt").read_text() == "x", "a fuzzed command replaced a folder"

    with _offline_in(fuzz_dir):
        check()

"""Recipe validation: round trips, and bad recipes each with their message and line."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import stage_fixtures  # noqa: F401 - registers prune/test-zero-rows
from hfcompress.errors import RecipeError
from hfcompress.recipes import Recipe, dump_recipe, load_recipe, parse_recipe
from stage_fixtures import ZeroRowsConfig

GOOD = """\
version: 1
name: demo
stages:
  - prune:
      method: test-zero-rows
      rows: 2
      calibration:
        dataset: fixtures/enwiki-sample
        samples: 4
"""


def test_parse_good_recipe():
    recipe = parse_recipe(GOOD)
    assert recipe.name == "demo"
    (stage,) = recipe.stages
    assert isinstance(stage, ZeroRowsConfig)
    assert stage.rows == 2 and stage.calibration.samples == 4 and stage.calibration.seq_len == 512


def test_round_trip_text_and_objects(tmp_path):
    recipe = parse_recipe(GOOD)
    text = dump_recipe(recipe)
    again = parse_recipe(text)
    assert again == recipe
    assert dump_recipe(again) == text
    path = tmp_path / "r.yaml"
    path.write_text(text)
    assert load_recipe(path) == recipe


def test_python_objects_are_the_recipe():
    recipe = Recipe(name="py", stages=[ZeroRowsConfig(rows=3)])
    assert parse_recipe(dump_recipe(recipe)) == recipe
    assert recipe.to_dict()["stages"] == [{"prune": ZeroRowsConfig(rows=3).model_dump(mode="json")}]


BAD = [
    # (recipe text, expected fragment, expected line)
    ("stages: []\n", "a recipe needs at least one stage", 1),
    ("name: x\n", "missing required key 'stages'", None),
    ("stages:\n  - polish: {method: x}\n", "unknown stage 'polish'", 2),
    ("stages:\n  - prune: {rows: 1}\n", "the prune stage needs `method:`", 2),
    ("stages:\n  - prune:\n      method: nope\n", "prune method 'nope' is not available", 3),
    ("stages:\n  - prune:\n      method: test-zero-rows\n      rowz: 1\n", "unknown key 'rowz'", 4),
    ("stages:\n  - prune:\n      method: test-zero-rows\n      rows: many\n", "valid integer", 4),
    ("stages:\n  - prune:\n      method: test-zero-rows\n      rows: -1\n", "greater than or equal to 0", 4),
    ("stages:\n  - prune:\n      method: test-zero-rows\n      calibration:\n        samples: 0\n",
     "stages[0].prune.calibration.samples", 5),
    ("stages:\n  - prune:\n      method: test-zero-rows\n      calibration:\n        datset: x\n",
     "unknown key 'datset'", 5),
    ("stages:\n  - prune: {method: test-zero-rows}\n    quantize: {method: x}\n", "exactly one key", 2),
    ("stages: {prune: {method: test-zero-rows}}\n", "`stages` must be a list", 1),
    ("version: 7\nstages:\n  - prune: {method: test-zero-rows}\n", "unsupported recipe version 7", 1),
    ("stages:\n  - prune: [1, 2]\n", "must be a mapping of options", 2),
    ("stages:\n  - prune: {method: test-zero-rows\n", "not valid YAML", None),
    ("- prune: {method: test-zero-rows}\n", "must be a mapping with a `stages:` list", None),
    ("stages:\n  - prune: {method: test-zero-rows}\nextra: 1\n", "unknown key 'extra'", 3),
    ("stages:\n  - prune: {method: test-zero-rows, modules: notalist}\n", "valid list", 2),
]


@pytest.mark.parametrize("text, fragment, line", BAD, ids=[b[1][:30] for b in BAD])
def test_bad_recipes(text, fragment, line):
    with pytest.raises(RecipeError) as info:
        parse_recipe(text, source="r.yaml")
    msg = str(info.value)
    assert fragment in msg
    assert "\n" not in msg
    if line is not None:
        assert msg.startswith(f"r.yaml:{line}:"), msg


def test_missing_recipe_file(tmp_path):
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "nope.yaml")


yaml_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                         st.text(max_size=8))
yaml_values = st.recursive(yaml_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=8), inner, max_size=3)), max_leaves=8)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.sampled_from(["version", "name", "stages", "x"]), yaml_values, max_size=4))
def test_fuzzed_recipes_never_crash(data):
    """Any YAML-able structure either validates or raises a one-line RecipeError."""
    import yaml

    text = yaml.safe_dump(data)
    try:
        parse_recipe(text)
    except RecipeError as exc:
        assert "\n" not in str(exc)


# -- bounded loading (issue 16): aliases, duplicate keys, size, depth, encoding -----------------

LAUGHS = "".join(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9) if i else ', '.join(['lol'] * 9)}]\n"
                 for i in range(9)) + "stages: [*l8]\n"

BOUNDED = [
    (LAUGHS, "anchors and aliases (&name / *name) are not allowed", 1),
    ("base: &b {method: test-zero-rows}\nstages:\n  - prune: *b\n", "anchors and aliases", 1),
    ("stages:\n  - prune: {method: test-zero-rows, <<: {rows: 2}}\n", None, None),  # merge key, no alias: fine
    ("stages:\n  - prune:\n      method: test-zero-rows\n      rows: 1\n      rows: 2\n",
     "duplicate key 'rows' (first on line 4): keep only one", 5),
    ("stages: []\nname: a\nstages:\n  - prune: {method: test-zero-rows}\n", "duplicate key 'stages' (first on line 1)", 3),
    ("stages:\n  - prune: {method: test-zero-rows, rows: 1, rows: 1}\n", "duplicate key 'rows'", 2),
    ("stages: " + "[" * 10_000 + "]" * 10_000 + "\n", "nested more than 32 levels deep", 1),
    ("stages: " + "{a: " * 10_000 + "1" + "}" * 10_000 + "\n", "nested more than 32 levels deep", 1),
    ("stages:\n" + "".join("  " * i + "- \n" for i in range(40)), "nested more than 32 levels deep", 33),
    ("stages: [" + ", ".join(["{}"] * 2500) + "]\n", "more than 2000 values", 1),
    ("name: " + "x" * 70_000 + "\nstages: []\n", "more than the 65536 a recipe may have", None),
]


@pytest.mark.parametrize("text, fragment, line", BOUNDED, ids=[f"bounded-{i}" for i in range(len(BOUNDED))])
def test_bounded_loading(text, fragment, line):
    import tracemalloc

    tracemalloc.start()
    try:
        if fragment is None:
            assert parse_recipe(text, source="r.yaml").stages[0].rows == 2
            return
        with pytest.raises(RecipeError) as info:
            parse_recipe(text, source="r.yaml")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    msg = str(info.value)
    assert fragment in msg and "\n" not in msg, msg
    if line is not None:
        assert msg.startswith(f"r.yaml:{line}:"), msg
    assert peak < 32 << 20, f"{peak / 2**20:.0f} MiB to refuse a {len(text)}-byte recipe"


@pytest.mark.parametrize("raw, fragment", [
    ("stages:\n  - prune: {method: test-zero-rows}  # café\n".encode("latin-1"), "r.yaml:2: not UTF-8 text (byte 0xe9"),
    (b"\xff\xfe" + "stages: []\n".encode("utf-16-le"), "r.yaml:1: not UTF-8 text (byte 0xff at offset 0)"),
    (b"\x00" * 10, "not valid YAML"),
    (b"stages: [" + b"1, " * 30_000 + b"]", "larger than the 65536 bytes"),
])
def test_recipe_files_with_limits(tmp_path, raw, fragment):
    path = tmp_path / "r.yaml"
    path.write_bytes(raw)
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert fragment in str(info.value) and "\n" not in str(info.value), str(info.value)


def test_utf8_bom_and_dump_without_aliases(tmp_path, monkeypatch):
    path = tmp_path / "r.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + GOOD.encode())
    recipe = load_recipe(path)
    assert recipe == parse_recipe(GOOD)
    # an object that appears twice would be written as an anchor + alias by yaml.safe_dump,
    # which load_recipe refuses: dump_recipe writes the values out
    shared = ["model.layers.0.mlp", "model.layers.1.mlp"]
    recipe = Recipe(stages=[ZeroRowsConfig(rows=1, modules=shared), ZeroRowsConfig(rows=2, modules=shared)])
    data = recipe.to_dict()
    data["stages"][1]["prune"]["modules"] = data["stages"][0]["prune"]["modules"]
    monkeypatch.setattr(Recipe, "to_dict", lambda self: data)
    text = dump_recipe(recipe)
    assert "&" not in text and "*" not in text
    monkeypatch.undo()
    assert parse_recipe(text) == recipe

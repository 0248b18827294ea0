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

"""Recipes: the serialised form of a list of stage configs.

A recipe file::

    version: 1
    name: wanda-50-nf4
    stages:
      - prune:
          method: wanda
          sparsity: 0.5
          calibration: {dataset: fixtures/enwiki-sample, samples: 32, seq_len: 512}
      - quantize:
          method: bnb-nf4
      - evaluate:
          method: perplexity
          dataset: Salesforce/wikitext

Each stage is ``{family: {method: NAME, ...}}`` where ``NAME`` is a method registered
with :func:`hfcompress.registry.register_method`; its keys are validated by that
method's config class. Errors name the key and its line::

    recipe.yaml:5: stages[0].prune.sparsity: Input should be less than 1

``load_recipe(path)`` → :class:`Recipe`; ``dump_recipe(recipe)`` → YAML text that
loads back to an equal recipe.

Recipes are read with limits (a recipe is user input, possibly downloaded): UTF-8 only, at
most :data:`MAX_RECIPE_BYTES`, :data:`MAX_DEPTH` levels of nesting and :data:`MAX_NODES`
values; anchors / aliases (``&a`` / ``*a``, the "billion laughs" shape) and duplicate keys
are refused with their line, in milliseconds and one line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError, field_serializer, field_validator

from ..config import StageConfig, StrictModel
from ..errors import HFCompressError, RecipeError
from ..registry import FAMILIES, get_method

RECIPE_VERSION = 1
#: Limits on a recipe's text (real recipes are a few hundred bytes, 3-5 levels deep).
MAX_RECIPE_BYTES = 64 * 1024
MAX_DEPTH = 32
MAX_NODES = 2_000


class _RecipeLimit(yaml.MarkedYAMLError):
    """A recipe refused by the bounded loader (alias, anchor, duplicate key, too deep / large)."""

    def __init__(self, problem: str, mark: Any):
        super().__init__(problem=problem, problem_mark=mark)


class _BoundedLoader(yaml.SafeLoader):
    """``SafeLoader`` that refuses anchors / aliases and duplicate keys, and bounds nesting depth
    and the number of values (so a tiny file cannot expand into gigabytes, or recurse deeply)."""

    def __init__(self, stream: str):
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0

    def fetch_flow_collection_start(self, token_class: Any) -> None:
        # The scanner tracks every open ``[`` / ``{`` (quadratic time): stop deep flow nesting here.
        if self.flow_level >= MAX_DEPTH:
            raise _RecipeLimit(f"nested more than {MAX_DEPTH} levels deep: a recipe is a few levels deep",
                               self.get_mark())
        super().fetch_flow_collection_start(token_class)

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None):
            raise _RecipeLimit("anchors and aliases (&name / *name) are not allowed in a recipe: "
                               "write the values out", event.start_mark)
        self._nodes += 1
        if self._nodes > MAX_NODES:
            raise _RecipeLimit(f"more than {MAX_NODES} values: a recipe lists a few stages", event.start_mark)
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise _RecipeLimit(f"nested more than {MAX_DEPTH} levels deep: a recipe is a few levels deep",
                               event.start_mark)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        self.flatten_mapping(node)
        first: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            try:
                if key in first:
                    raise _RecipeLimit(f"duplicate key {key!r} (first on line {first[key]}): keep only one",
                                       key_node.start_mark)
                first[key] = key_node.start_mark.line + 1
            except TypeError:  # unhashable key: the base class reports it
                continue
        return super().construct_mapping(node, deep=deep)


class _StageError(Exception):
    """Raised inside validation with the path of the offending key (not a ValueError,
    so pydantic lets it through unchanged and we can attach the YAML line)."""

    def __init__(self, path: tuple, message: str):
        super().__init__(message)
        self.path = path
        self.message = message


def _fmt_path(path: tuple) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _parse_stage(item: Any, index: int) -> StageConfig:
    if isinstance(item, StageConfig):
        if not item.family:
            raise _StageError(("stages", index), f"{type(item).__name__} has no stage family")
        return item
    if not isinstance(item, dict) or len(item) != 1:
        raise _StageError(
            ("stages", index),
            "each stage must be a mapping with exactly one key, the stage family "
            f"({', '.join(FAMILIES)}), e.g. `- prune: {{method: wanda, sparsity: 0.5}}`",
        )
    family, params = next(iter(item.items()))
    if family not in FAMILIES:
        raise _StageError(("stages", index, family),
                          f"unknown stage {family!r}: use one of {', '.join(FAMILIES)}")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise _StageError(("stages", index, family), f"the {family} stage must be a mapping of options")
    method_name = params.get("method")
    if method_name is None:
        raise _StageError(("stages", index, family), f"the {family} stage needs `method:`")
    try:
        method = get_method(family, str(method_name))
    except HFCompressError as exc:
        raise _StageError(("stages", index, family, "method"), str(exc)) from None
    try:
        return method.config_cls.model_validate(params)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = tuple(err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            fields = ", ".join(sorted(method.config_cls.model_fields))
            msg = f"unknown key {loc[-1]!r} for {family} method {method_name!r} (valid keys: {fields})"
        elif err["type"] == "missing":
            msg = f"missing required key {loc[-1]!r}"
        more = f" (and {len(exc.errors()) - 1} more error(s))" if len(exc.errors()) > 1 else ""
        raise _StageError(("stages", index, family, *loc), msg + more) from None


class Recipe(StrictModel):
    """An ordered list of stages. ``Recipe(stages=[WandaConfig(sparsity=0.5), NF4Config()])``."""

    version: int = RECIPE_VERSION
    name: str | None = None
    description: str | None = None
    stages: list[StageConfig]

    @field_validator("version")
    @classmethod
    def _check_version(cls, v: int) -> int:
        if v != RECIPE_VERSION:
            raise ValueError(f"unsupported recipe version {v}: this hfcompress reads version {RECIPE_VERSION}")
        return v

    @field_validator("stages", mode="before")
    @classmethod
    def _parse_stages(cls, value: Any) -> list[StageConfig]:
        if not isinstance(value, list):
            raise _StageError(("stages",), "`stages` must be a list of stages")
        if not value:
            raise _StageError(("stages",), "a recipe needs at least one stage")
        return [_parse_stage(item, i) for i, item in enumerate(value)]

    @field_serializer("stages")
    def _dump_stages(self, stages: list[StageConfig]) -> list[dict[str, Any]]:
        return [{s.family: s.model_dump(mode="json")} for s in stages]

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True)


def _line_map(root: yaml.Node | None) -> dict[tuple, int]:
    """Path tuple -> 1-based line of that key/item in the composed YAML document."""
    lines: dict[tuple, int] = {}

    def walk(node: yaml.Node, path: tuple) -> None:
        lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                p = (*path, key.value)
                lines[p] = key.start_mark.line + 1
                walk(value, p)
        elif isinstance(node, yaml.SequenceNode):
            for i, value in enumerate(node.value):
                walk(value, (*path, i))

    if root is not None:
        walk(root, ())
    return lines


def _load_yaml(text: str, source: str) -> tuple[Any, yaml.Node | None]:
    """The data and the node tree of one YAML document, read with :class:`_BoundedLoader`."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_RECIPE_BYTES:
        raise RecipeError(f"{source}: {size} bytes, more than the {MAX_RECIPE_BYTES} a recipe may have: "
                          "is this the right file?")
    loader = None
    try:
        loader = _BoundedLoader(text)  # the reader refuses control characters already here
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except _RecipeLimit as exc:
        raise RecipeError(f"{source}:{exc.problem_mark.line + 1}: {exc.problem}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RecipeError(f"{source}{where}: not valid YAML ({problem})") from None
    except RecursionError:  # not reached within MAX_DEPTH; kept as a last guard
        raise RecipeError(f"{source}: nested too deeply: a recipe is a few levels deep") from None
    finally:
        if loader is not None:
            loader.dispose()
    return data, root


def _line_for(path: tuple, lines: dict[tuple, int]) -> int | None:
    for n in range(len(path), -1, -1):
        if path[:n] in lines:
            return lines[path[:n]]
    return None


def parse_recipe(text: str, source: str = "recipe") -> Recipe:
    """Validate YAML text into a :class:`Recipe`; errors are ``source:LINE: key: message``."""
    data, root = _load_yaml(text, source)
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: a recipe must be a mapping with a `stages:` list")
    lines = _line_map(root)
    try:
        return Recipe.model_validate(data)
    except _StageError as exc:
        line = _line_for(exc.path, lines)
        raise RecipeError(f"{source}:{line}: {_fmt_path(exc.path)}: {exc.message}") from None
    except ValidationError as exc:
        err = exc.errors()[0]
        path = tuple(err["loc"])
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = f"unknown key {path[-1]!r} (valid top-level keys: {', '.join(Recipe.model_fields)})"
        elif err["type"] == "missing":
            msg = f"missing required key {path[-1]!r}"
        line = _line_for(path, lines)
        raise RecipeError(f"{source}:{line}: {_fmt_path(path)}: {msg}") from None


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe file (UTF-8, at most :data:`MAX_RECIPE_BYTES`)."""
    p = Path(path)
    if not p.is_file():
        raise RecipeError(f"recipe file {path} not found")
    try:
        with open(p, "rb") as f:
            raw = f.read(MAX_RECIPE_BYTES + 1)
    except OSError as exc:
        raise RecipeError(f"cannot read recipe file {path}: {exc.strerror or exc}") from None
    if len(raw) > MAX_RECIPE_BYTES:
        raise RecipeError(f"{p.name}: larger than the {MAX_RECIPE_BYTES} bytes a recipe may have: "
                          "is this the right file?")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise RecipeError(f"{p.name}:{line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}): "
                          "save the recipe as UTF-8") from None
    return parse_recipe(text.removeprefix("\ufeff"), source=p.name)


class _NoAliasDumper(yaml.SafeDumper):
    """Never writes anchors / aliases (which :func:`load_recipe` refuses)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def dump_recipe(recipe: Recipe) -> str:
    """YAML text of ``recipe``; ``parse_recipe(dump_recipe(r)) == r``."""
    return yaml.dump(recipe.to_dict(), Dumper=_NoAliasDumper, sort_keys=False, allow_unicode=True)

"""Method registry: one registration call per method.

Each stage family (``prune``, ``quantize``, ``distill``, ``evaluate``, ...) has methods
registered by name. A method is a pydantic config class (the same object the Python
API and the YAML recipe use) plus the function that applies it::

    from hfcompress.registry import register_method
    from hfcompress.prune.base import PruneConfig

    class MyPruneConfig(PruneConfig):
        method: Literal["my-prune"] = "my-prune"
        sparsity: float = 0.5

    def apply_my_prune(bundle, config, ctx):
        ...  # modify bundle.model in place (or replace it)
        return {"sparsity": config.sparsity}  # summary for hfcompress.json

    register_method("prune", "my-prune", MyPruneConfig, apply_my_prune)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from .errors import NotImplementedStageError

#: The stage families a recipe may contain, in the order they usually run.
FAMILIES = ("prune", "quantize", "distill", "finetune", "evaluate")


@dataclass(frozen=True)
class Method:
    family: str
    name: str
    config_cls: type[BaseModel]
    apply: Callable[..., Any]
    description: str = ""


_REGISTRY: dict[str, dict[str, Method]] = {f: {} for f in FAMILIES}


def register_method(
    family: str,
    name: str,
    config_cls: type[BaseModel],
    apply: Callable[..., Any],
    description: str = "",
) -> Method:
    """Register ``name`` in ``family``. Re-registering a name replaces it (reloads)."""
    if family not in _REGISTRY:
        raise ValueError(f"unknown stage family {family!r}; known: {', '.join(FAMILIES)}")
    method = Method(family, name, config_cls, apply, description or (config_cls.__doc__ or "").strip())
    _REGISTRY[family][name] = method
    return method


def _ensure_loaded(family: str) -> None:
    """Import the family's package so its methods register themselves."""
    import importlib

    module = {"finetune": "distill"}.get(family, family)
    importlib.import_module(f"hfcompress.{module}")


def methods(family: str) -> dict[str, Method]:
    """All methods registered for ``family`` (importing the family first)."""
    if family not in _REGISTRY:
        raise NotImplementedStageError(
            f"unknown stage {family!r}: use one of {', '.join(FAMILIES)}"
        )
    _ensure_loaded(family)
    return dict(_REGISTRY[family])


def get_method(family: str, name: str) -> Method:
    """The registered method, or a one-line error listing what exists."""
    available = methods(family)
    if name not in available:
        known = ", ".join(sorted(available)) or "none implemented yet"
        raise NotImplementedStageError(
            f"{family} method {name!r} is not available (available: {known})"
        )
    return available[name]

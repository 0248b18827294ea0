"""Method registry: one decorator per method, family and name read from the config class.

Each stage family (``prune``, ``quantize``, ``distill``, ``finetune``, ``evaluate``) has
methods registered by name. A method is a pydantic config class (the same object the
Python API and the YAML recipe use) plus the function that applies it::

    from typing import Literal
    from hfcompress.registry import register
    from hfcompress.prune.base import PruneConfig

    class MyPruneConfig(PruneConfig):
        \"\"\"Zero the smallest weights of every block Linear.\"\"\"
        method: Literal["my-prune"] = "my-prune"

    @register(MyPruneConfig)
    def my_prune(bundle, config: MyPruneConfig, ctx) -> dict:
        ...  # modify bundle.model in place (or replace it)
        return {"sparsity": config.sparsity}  # summary for hfcompress.json

The CLI's ``--method`` choices and flags, the recipe schema and the docs tables are all
generated from what is registered here; a duplicate name is an error.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pydantic import BaseModel

from .errors import NotImplementedStageError

#: The stage families a recipe may contain, in the order they usually run.
FAMILIES = ("prune", "quantize", "distill", "finetune", "evaluate")

#: The package that registers a family's methods when imported.
_FAMILY_PACKAGE = {"finetune": "distill"}

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Method:
    family: str
    name: str
    config_cls: type[BaseModel]
    apply: Callable[..., Any]
    description: str = ""
    #: Family-specific hooks (e.g. the evaluation family's prepare / check / measure).
    extras: dict[str, Any] = field(default_factory=dict, compare=False)


_REGISTRY: dict[str, dict[str, Method]] = {f: {} for f in FAMILIES}


def config_identity(config_cls: type[BaseModel]) -> tuple[str, str]:
    """``(family, method name)`` declared by a config class (``family`` ClassVar, ``method`` default)."""
    family = getattr(config_cls, "family", "")
    field_info = getattr(config_cls, "model_fields", {}).get("method")
    name = field_info.default if field_info is not None else None
    if family not in _REGISTRY:
        raise ValueError(f"{config_cls.__name__}.family is {family!r}; set it to one of {', '.join(FAMILIES)}")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{config_cls.__name__} needs a default `method` name (method: Literal['x'] = 'x')")
    return family, name


def register_method(family: str, name: str, config_cls: type[BaseModel], apply: Callable[..., Any],
                    description: str = "", **extras: Any) -> Method:
    """Register ``name`` in ``family`` (prefer the :func:`register` decorator). Duplicates raise."""
    if family not in _REGISTRY:
        raise ValueError(f"unknown stage family {family!r}; known: {', '.join(FAMILIES)}")
    existing = _REGISTRY[family].get(name)
    if existing is not None and (existing.config_cls.__qualname__, existing.config_cls.__module__) != (
            config_cls.__qualname__, config_cls.__module__):
        raise ValueError(f"{family} method {name!r} is already registered by "
                         f"{existing.config_cls.__module__}.{existing.config_cls.__qualname__}")
    first_line = (config_cls.__doc__ or "").strip().splitlines()
    method = Method(family, name, config_cls, apply, description or (first_line[0] if first_line else ""),
                    dict(extras))
    _REGISTRY[family][name] = method
    return method


def register(config_cls: type[BaseModel], *, description: str = "", **extras: Any) -> Callable[[F], F]:
    """Decorator: register the decorated ``apply(bundle, config, ctx)`` for ``config_cls``.

    Family and name come from the class (``family`` ClassVar, ``method`` default). Stack it
    to register one function for several configs.
    """
    family, name = config_identity(config_cls)

    def decorate(apply: F) -> F:
        register_method(family, name, config_cls, apply, description, **extras)
        return apply

    return decorate


def import_submodules(package: str) -> list[str]:
    """Import every public module of ``package`` (so a new method file registers with no other
    edit); called at the bottom of the family packages' ``__init__``. Returns their names."""
    pkg = importlib.import_module(package)
    names = [f"{package}.{info.name}" for info in pkgutil.iter_modules(pkg.__path__) if not info.name.startswith("_")]
    for name in names:
        importlib.import_module(name)
    return names


def _ensure_loaded(family: str) -> None:
    """Import the family's package so its methods register themselves."""
    importlib.import_module(f"hfcompress.{_FAMILY_PACKAGE.get(family, family)}")


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

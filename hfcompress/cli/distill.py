"""CLI: ``distill`` (filled in by the distill work)."""

from __future__ import annotations

from ..errors import NotImplementedStageError


def _todo(args) -> int:
    raise NotImplementedStageError("`hfcompress distill` is not implemented yet")


def register(sub) -> None:
    p = sub.add_parser("distill", help="distill a model (not implemented yet)")
    p.set_defaults(func=_todo)

"""CLI: ``evaluate`` (filled in by the evaluate work)."""

from __future__ import annotations

from ..errors import NotImplementedStageError


def _todo(args) -> int:
    raise NotImplementedStageError("`hfcompress evaluate` is not implemented yet")


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a model (not implemented yet)")
    p.set_defaults(func=_todo)

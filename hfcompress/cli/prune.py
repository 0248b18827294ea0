"""CLI: ``prune`` (filled in by the prune work)."""

from __future__ import annotations

from ..errors import NotImplementedStageError


def _todo(args) -> int:
    raise NotImplementedStageError("`hfcompress prune` is not implemented yet")


def register(sub) -> None:
    p = sub.add_parser("prune", help="prune a model (not implemented yet)")
    p.set_defaults(func=_todo)

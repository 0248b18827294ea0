"""CLI: ``quantize`` (filled in by the quantize work)."""

from __future__ import annotations

from ..errors import NotImplementedStageError


def _todo(args) -> int:
    raise NotImplementedStageError("`hfcompress quantize` is not implemented yet")


def register(sub) -> None:
    p = sub.add_parser("quantize", help="quantize a model (not implemented yet)")
    p.set_defaults(func=_todo)

"""CLI: ``card DIR`` — (re)generate the model card of an output folder."""

from __future__ import annotations

from ..errors import NotImplementedStageError


def _todo(args) -> int:
    raise NotImplementedStageError("`hfcompress card` is not implemented yet")


def register(sub) -> None:
    p = sub.add_parser("card", help="(re)generate README.md (model card) of an output folder")
    p.add_argument("folder")
    p.set_defaults(func=_todo)

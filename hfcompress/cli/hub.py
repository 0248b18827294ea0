"""CLI: ``hub serve``, ``hub seed``, ``push``, ``pull`` (owned by the Hub work)."""

from __future__ import annotations

from ..errors import NotImplementedStageError


def _todo(args) -> int:
    raise NotImplementedStageError(f"`hfcompress {args.command}` is not implemented yet")


def register(sub) -> None:
    for name, text in [("hub", "run / seed a local Hub-compatible server"),
                       ("push", "push a model folder to the Hub in one commit"),
                       ("pull", "download a model from the Hub and load it back")]:
        p = sub.add_parser(name, help=text, description=text)
        p.set_defaults(func=_todo)

"""CLI: ``card DIR [--repo-id ID]`` — (re)generate README.md of an output folder."""

from __future__ import annotations

from pathlib import Path

from ..cards import write_card
from ..errors import UsageError


def _run(args) -> int:
    folder = Path(args.folder)
    if not folder.is_dir():
        raise UsageError(f"{args.folder} is not a folder: give an output folder written by hfcompress")
    path = write_card(folder, repo_id=args.repo_id)
    if args.print:
        print(path.read_text())
    else:
        print(f"wrote {path}")
    return 0


def register(sub) -> None:
    p = sub.add_parser("card", help="(re)generate README.md (model card) of an output folder",
                       description="Render the model card of a folder written by hfcompress from its "
                       "hfcompress.json, recipe.yaml and evaluation results.")
    p.add_argument("folder", help="output folder with hfcompress.json")
    p.add_argument("--repo-id", default=None, help="Hub repo id used in the loading snippet")
    p.add_argument("--print", action="store_true", help="print the card after writing it")
    p.set_defaults(func=_run)

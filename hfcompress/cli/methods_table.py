"""The table of registered methods, for the docs: ``python -m hfcompress.cli.methods_table``.

Lists every registered method of every family with the first line of its config class's
docstring, generated from the registry (so a new method appears with no other edit).
``--write FILE`` replaces the table between the ``<!-- methods-table -->`` markers of FILE
(``docs/ARCHITECTURE.md``); ``--check FILE`` exits 1 when that table is out of date.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from ..registry import FAMILIES, methods

BEGIN, END = "<!-- methods-table -->", "<!-- /methods-table -->"


def methods_table(families: tuple[str, ...] = FAMILIES) -> str:
    """A Markdown table: family, method, config class, one-line description."""
    rows = ["| family | method | config | description |", "|---|---|---|---|"]
    for family in families:
        for name, m in sorted(methods(family).items()):
            cls = f"`{m.config_cls.__module__}.{m.config_cls.__qualname__}`"
            description = m.description.replace("|", "\\|")
            rows.append(f"| {family} | `{name}` | {cls} | {description} |")
    return "\n".join(rows) + "\n"


def replace_table(text: str, table: str) -> str:
    """``text`` with the block between the markers replaced by ``table``."""
    pattern = re.compile(re.escape(BEGIN) + r".*?" + re.escape(END), re.S)
    if not pattern.search(text):
        raise ValueError(f"no {BEGIN} ... {END} block to replace")
    return pattern.sub(lambda _: f"{BEGIN}\n{table}{END}", text)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m hfcompress.cli.methods_table", description=__doc__.splitlines()[0])
    g = p.add_mutually_exclusive_group()
    g.add_argument("--write", metavar="FILE", help="replace the table block in FILE (default: print the table)")
    g.add_argument("--check", metavar="FILE", help="exit 1 when FILE's table block is out of date")
    args = p.parse_args(argv)
    table = methods_table()
    if args.write or args.check:
        path = Path(args.write or args.check)
        text = path.read_text()
        new = replace_table(text, table)
        if args.check:
            if new != text:
                print(f"{path}: methods table is out of date: run python -m hfcompress.cli.methods_table "
                      f"--write {path}", file=sys.stderr)
                return 1
            return 0
        path.write_text(new)
        return 0
    sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

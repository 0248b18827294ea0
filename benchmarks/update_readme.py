"""Copy the benchmark result tables (benchmarks/results/*.md) into README.md (and the
pruning / distillation tables into docs/PRUNING.md and docs/DISTILLATION.md).

The README's "Results" section sits between ``<!-- results:start -->`` and
``<!-- results:end -->``; this script rewrites that block from the result files that
the benchmark scripts wrote, so the README never quotes a figure no script produced::

    python benchmarks/update_readme.py
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def results_block(pattern: str = "*.md") -> str:
    parts = [START, ""]
    for md in sorted(RESULTS.glob(pattern)):
        body = md.read_text().strip()
        body = re.sub(r"^# ", "### ", body, flags=re.M)
        if not body.startswith("###"):
            body = f"### {md.stem}\n\n{body}"
        parts += [body, "", f"<sub>from `benchmarks/results/{md.name}`</sub>", ""]
    if len(parts) == 2:
        parts += ["No benchmark has been run yet: `make bench`.", ""]
    parts.append(END)
    return "\n".join(parts)


#: documents whose results block is regenerated, and which result tables go in it
TARGETS = {"README.md": "*.md", "docs/PRUNING.md": "prune_*.md", "docs/DISTILLATION.md": "distill_*.md"}


def main() -> None:
    for name, pattern in TARGETS.items():
        doc = ROOT / name
        text = doc.read_text()
        block = results_block(pattern)
        if START in text and END in text:
            text = text[: text.index(START)] + block + text[text.index(END) + len(END):]
        else:
            text = text.rstrip() + "\n\n" + block + "\n"
        doc.write_text(text)
        print(f"{name} results: {len(list(RESULTS.glob(pattern)))} tables")


if __name__ == "__main__":
    main()

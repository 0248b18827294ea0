"""glibc's mmap threshold during calibration: SmolLM2 Wanda 50 % (fp32) at 1 MB vs 16 MB, side by side.

``hfcompress.calibration.data.MMAP_THRESHOLD`` decides which allocations get their own mapping
(page-faulted 4 KB at a time on first touch) instead of being reused from the heap. Each run is
``prune_unstructured.py``'s ``wanda-50`` configuration in its own process, the thresholds
alternating, ``--repeats`` times::

    .venv/bin/python benchmarks/calibration_malloc.py [--repeats 2]

Writes benchmarks/results/calibration_malloc.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
THRESHOLDS = {"1 MB": 1 << 20, "16 MB (default)": 16 << 20}


def worker(threshold: int) -> None:
    import hfcompress.calibration.data as data

    data.MMAP_THRESHOLD = threshold  # read by bound_heap() when the calibration starts
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import prune_unstructured

    print(json.dumps(prune_unstructured.run_one("wanda-50")))


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker is not None:
        worker(a.worker)
        return 0
    rows = []
    for rep in range(a.repeats):
        for label, value in THRESHOLDS.items():
            out = subprocess.run([sys.executable, __file__, "--worker", str(value)], check=True,
                                 capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            rows.append({"threshold": label, "repeat": rep, "seconds": r["seconds"], "cpu_seconds": r["cpu_seconds"],
                         "peak_rss_mib": r["peak_rss_mb_during_prune"], "perplexity": r["perplexity"]})
            print(json.dumps(rows[-1]), flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "calibration_malloc.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["# Calibration: glibc mmap threshold (SmolLM2-135M Wanda 50 %, fp32)", "",
             "Same setup as prune_unstructured.py's wanda-50 (32 x 512 calibration windows, 2 threads); each row its "
             "own process, thresholds alternating in one run. Wall = the pruning call only.", "",
             "| mmap threshold | run | prune wall s | prune CPU s | peak RSS MiB | ppl |", "|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['threshold']} | {r['repeat'] + 1} | {r['seconds']} | {r['cpu_seconds']} | {r['peak_rss_mib']} | "
              f"{r['perplexity']} |" for r in rows]
    (RESULTS / "calibration_malloc.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

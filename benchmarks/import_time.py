"""Import cost: ``import hfcompress`` against ``import transformers`` (issue 19 item 8).

Each figure is the median of N fresh interpreters (default 5): wall time of the import
statement alone, and the process's peak RSS (``ru_maxrss``) after it. Writes
benchmarks/results/import_time.md and .json.

    .venv/bin/python benchmarks/import_time.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
RESULTS = ROOT / "results"
MODULES = ("transformers", "hfcompress")
#: The budget of issue 19: hfcompress's median time and RSS within this factor of transformers'.
BUDGET = 1.5

PROBE = """
import resource, sys, time
t = time.perf_counter()
import {module}
dt = time.perf_counter() - t
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(dt, rss, int('torch' in sys.modules))
"""


def measure(module: str, runs: int) -> dict[str, float]:
    times, rss, torch_loaded = [], [], []
    env = {**os.environ, "PYTHONPATH": str(ROOT.parent) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for _ in range(runs):
        out = subprocess.run([sys.executable, "-c", PROBE.format(module=module)], capture_output=True,
                             text=True, check=True, env=env).stdout.split()
        times.append(float(out[0]))
        rss.append(float(out[1]))
        torch_loaded.append(bool(int(out[2])))
    return {"seconds": round(statistics.median(times), 3), "peak_rss_mb": round(statistics.median(rss), 1),
            "runs": runs, "imports_torch": any(torch_loaded)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    res = {m: measure(m, args.runs) for m in MODULES}
    ref, ours = res["transformers"], res["hfcompress"]
    res["ratio"] = {"seconds": round(ours["seconds"] / ref["seconds"], 2),
                    "peak_rss_mb": round(ours["peak_rss_mb"] / ref["peak_rss_mb"], 2)}
    res["within_budget"] = all(v <= BUDGET for v in res["ratio"].values())
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "import_time.json").write_text(json.dumps(res, indent=2) + "\n")
    lines = [f"# Import cost (median of {args.runs} fresh interpreters)", "",
             "| import | seconds | peak RSS (MB) | imports torch |", "|---|---:|---:|---|"]
    for m in MODULES:
        r = res[m]
        lines.append(f"| `import {m}` | {r['seconds']:.3f} | {r['peak_rss_mb']:.1f} | {'yes' if r['imports_torch'] else 'no'} |")
    lines += ["", f"hfcompress / transformers: {res['ratio']['seconds']}× time, {res['ratio']['peak_rss_mb']}× RSS "
              f"(budget {BUDGET}×: {'met' if res['within_budget'] else 'NOT met'})."]
    (RESULTS / "import_time.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

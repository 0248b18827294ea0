"""Peak-RSS probes: a fresh process that loads a model folder and runs one batch, or an
in-process sampler around one forward pass.

The subprocess probe is this module run as a script::

    python -m hfcompress.evaluate.rss_probe FOLDER TASK DTYPE BATCH SEQ_LEN THREADS

It resets its peak-RSS mark after the imports (Linux ``/proc/self/clear_refs``), loads the
folder, runs one latency batch and prints one JSON line with the RSS figures;
:func:`peak_rss_subprocess` runs it and turns that line into ``peak_rss_bytes``.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import torch

from ..loading import load
from .latency import model_inputs


def _hwm() -> int | None:
    """This process's peak RSS (``VmHWM``) in bytes, or None where /proc is missing."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def probe(folder: str, task: str, dtype: str, batch: int, seq_len: int, threads: int) -> dict[str, Any]:
    """Run in the fresh process: RSS after imports, after load, and the peak during load + one forward."""
    torch.set_num_threads(threads)
    gc.collect()
    reset = False
    try:  # Linux: writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        reset = True
    except OSError:
        pass
    rss_import = psutil.Process().memory_info().rss
    peak_import = _hwm() if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    bundle = load(folder, task=task, dtype=dtype, with_tokenizer=False)
    rss_loaded = psutil.Process().memory_info().rss
    with torch.inference_mode():
        if seq_len > 0:
            bundle.model(**model_inputs(bundle.model, batch, seq_len))
    peak = _hwm() if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"rss_after_import": rss_import, "peak_after_import": peak_import,
            "rss_after_load": rss_loaded, "peak_rss_total": peak, "hwm_reset": reset}


def peak_rss_subprocess(folder: Path, task: str, dtype: str, batch: int, seq_len: int) -> dict[str, Any]:
    """Peak RSS of a fresh process that loads ``folder`` and runs one batch (see the module doc)."""
    env = dict(os.environ)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    proc = subprocess.run(
        [sys.executable, "-m", __name__, str(folder), task, dtype, str(batch), str(seq_len),
         str(torch.get_num_threads())],
        capture_output=True, text=True, env=env, timeout=1800,
    )
    if proc.returncode != 0:
        tail = " ".join((proc.stderr or proc.stdout).strip().splitlines()[-1:])[:300]
        return {"error": f"probe process failed: {tail}"}
    data = json.loads(proc.stdout.strip().splitlines()[-1])
    if data["hwm_reset"]:
        data["peak_rss_bytes"] = data["peak_rss_total"] - data["rss_after_import"]
        data["method"] = ("subprocess: peak RSS (VmHWM, reset after imports) during load + one forward, "
                          "minus RSS after imports")
    else:
        data["peak_rss_bytes"] = max(0, data["peak_rss_total"] - max(data["rss_after_import"],
                                                                     data["peak_after_import"]))
        data["method"] = "subprocess: ru_maxrss after load + one forward, minus the peak after imports"
    return data


def peak_rss_during(fn: Any) -> tuple[Any, int]:
    """``fn()`` and the RSS growth over its run in this process (psutil, sampled every 1 ms)."""
    proc = psutil.Process()
    start = proc.memory_info().rss
    peak = [start]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.001)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        out = fn()
    finally:
        stop.set()
        thread.join()
    return out, peak[0] - start


def peak_rss_inprocess(model: Any, batch: int, seq_len: int) -> dict[str, Any]:
    """RSS growth during one forward pass in this process, sampled every 1 ms (psutil)."""
    inputs = model_inputs(model, batch, seq_len)
    start = psutil.Process().memory_info().rss

    def forward() -> None:
        with torch.inference_mode():
            model(**inputs)

    _, grown = peak_rss_during(forward)
    return {"peak_rss_bytes": grown, "rss_before": start,
            "method": "inprocess: psutil RSS sampled every 1 ms during one forward, minus RSS before"}


def main(argv: list[str] | None = None) -> int:
    folder, task, dtype, batch, seq_len, threads = (argv if argv is not None else sys.argv[1:])[:6]
    print(json.dumps(probe(folder, task, dtype, int(batch), int(seq_len), int(threads))))
    return 0


if __name__ == "__main__":
    sys.exit(main())

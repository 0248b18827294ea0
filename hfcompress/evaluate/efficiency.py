"""Efficiency: size (parameters, bytes on disk / in memory, bits per weight, sparsity),
CPU latency, generation throughput and peak RSS, measured the same way for every model.

Methodology (also in ``docs/EVALUATION.md``):

* ``parameters`` / ``nonzero_parameters``: unique tensors (tied weights once); packed
  quantized weights (bitsandbytes 4-bit) count their *logical* elements; non-float
  storage counts as non-zero.
* ``memory_bytes``: bytes of every parameter and buffer as stored (packed storage,
  scales and quantization state included; tensor subclasses are flattened).
* ``disk_bytes``: ``*.safetensors`` bytes of the model folder; a model that exists
  only in memory is saved (with its own saver) to a scratch folder to measure it.
* ``bits_per_weight`` = 8 × parameter bytes in memory / parameters;
  ``disk_bits_per_weight`` = 8 × disk bytes / parameters.
* ``linear_sparsity``: fraction of zeros in the weights of Linear modules; per-module
  figures go to ``details.layers`` (the sparsity plot).
* ``latency_ms``: forward pass of a fixed random batch (``latency_batch_size`` ×
  ``latency_seq_len`` tokens, seed 0) on the model's device, after ``warmup`` runs; the
  median of ``runs`` (p90 in details). No timing asserts anywhere: numbers depend on load.
* ``generate_tokens_per_s`` (causal LMs): greedy ``generate`` of exactly
  ``gen_new_tokens`` tokens after a ``gen_prompt_tokens`` prompt, batch 1, median of
  ``gen_runs`` after one warm-up; the time includes the prompt's prefill.
* ``peak_rss_bytes``: a fresh Python process imports the libraries, resets its peak-RSS
  mark (Linux ``/proc/self/clear_refs``), loads the model folder and runs one latency
  batch; the figure is the peak RSS (``VmHWM``) minus the RSS after imports (where the
  mark cannot be reset: ``ru_maxrss`` growth over the import peak). The total is in
  details. ``peak_rss: inprocess`` instead samples RSS (psutil) around one forward pass
  in this process (activation memory only).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from ..errors import UsageError
from .base import EvaluateConfig, make_result

_TEXT_TASKS = {"causal-lm", "sequence-classification", "token-classification", "masked-lm",
               "feature-extraction", "seq2seq-lm"}


class EfficiencyConfig(EvaluateConfig):
    """Size, latency, throughput and peak memory of the model (and the source with baseline: true)."""

    method: Literal["efficiency"] = "efficiency"
    latency_batch_size: int = Field(1, ge=1, le=1024)
    latency_seq_len: int = Field(128, ge=1, le=131_072)
    warmup: int = Field(3, ge=0, le=100)
    runs: int = Field(10, ge=1, le=1000)
    generate: bool = Field(True, description="measure generation tokens/s (causal LMs)")
    gen_prompt_tokens: int = Field(32, ge=1, le=131_072)
    gen_new_tokens: int = Field(32, ge=1, le=4096)
    gen_runs: int = Field(3, ge=1, le=100)
    peak_rss: Literal["subprocess", "inprocess", "off"] = "subprocess"
    measure_disk: bool = Field(True, description="save an in-memory model to a scratch folder to "
                                                 "measure its bytes on disk")


# ---------------------------------------------------------------- size
def _flat_tensors(t: Any) -> list[Any]:
    """The plain tensors that hold ``t``'s storage (tensor subclasses flattened)."""
    import torch

    if type(t) not in (torch.Tensor, torch.nn.Parameter) and hasattr(t, "__tensor_flatten__"):
        try:
            names, _ = t.__tensor_flatten__()
            out = []
            for n in names:
                out.extend(_flat_tensors(getattr(t, n)))
            return out
        except Exception:  # noqa: BLE001 - fall back to the outer tensor
            pass
    out = [t]
    for attr in ("SCB",):  # bitsandbytes int8 row scales
        extra = getattr(t, attr, None)
        if isinstance(extra, torch.Tensor):
            out.append(extra)
    qs = getattr(t, "quant_state", None)  # bitsandbytes 4-bit
    if qs is not None:
        for attr in ("absmax", "code", "offset"):
            v = getattr(qs, attr, None)
            if isinstance(v, torch.Tensor):
                out.append(v)
        state2 = getattr(qs, "state2", None)
        if state2 is not None:
            for attr in ("absmax", "code"):
                v = getattr(state2, attr, None)
                if isinstance(v, torch.Tensor):
                    out.append(v)
    return out


def tensor_bytes(t: Any) -> int:
    """Bytes ``t`` occupies as stored (packed data + scales / quantization state)."""
    return sum(x.numel() * x.element_size() for x in _flat_tensors(t))


def logical_numel(t: Any) -> int:
    """Number of weights ``t`` represents (unpacks bitsandbytes 4-bit storage)."""
    qs = getattr(t, "quant_state", None)
    shape = getattr(qs, "shape", None)
    if shape is not None:
        return int(math.prod(shape))
    return int(t.numel())


def _dense_float(t: Any) -> Any | None:
    """A float (or int8) view of ``t`` to count zeros in, or None when its packing is unknown."""
    import torch

    qs = getattr(t, "quant_state", None)
    if qs is not None:  # bitsandbytes 4-bit: NF4 / FP4 both have an exact zero code
        try:
            import bitsandbytes.functional as bnbf

            return bnbf.dequantize_4bit(t.data, qs)
        except Exception:  # noqa: BLE001 - unknown packing: do not guess
            return None
    # Tensor subclasses with their own dequantize (quanto QTensor...); torch.Tensor.dequantize
    # itself is for torch's quantized dtypes and would read packed storage as values.
    if type(t).dequantize is not torch.Tensor.dequantize:
        try:
            return t.dequantize()
        except Exception:  # noqa: BLE001
            return None
    if t.dtype == torch.int8:  # bitsandbytes LLM.int8 rows: zero stays zero after scaling
        return t
    return t if t.is_floating_point() else None


def size_figures(model: Any) -> dict[str, Any]:
    """Parameter counts, bytes in memory, bits per weight and per-Linear sparsity."""
    import torch

    total = nonzero = param_bytes = 0
    seen: set[int] = set()
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        n = logical_numel(p)
        total += n
        param_bytes += tensor_bytes(p)
        dense = _dense_float(p)
        nonzero += int(torch.count_nonzero(dense)) if dense is not None else n
    buffer_bytes = 0
    for b in model.buffers():
        if id(b) in seen:
            continue
        seen.add(id(b))
        buffer_bytes += tensor_bytes(b)
    layers: dict[str, float] = {}
    lin_total = lin_zero = 0
    for name, module in model.named_modules():
        cls = type(module).__name__
        if not ("Linear" in cls or cls == "Conv1D"):
            continue
        w = getattr(module, "weight", None)
        if w is None or not isinstance(w, torch.Tensor):
            continue
        dense = _dense_float(w)
        if dense is None:
            continue
        zeros = int(dense.numel() - torch.count_nonzero(dense))
        layers[name] = zeros / max(dense.numel(), 1)
        lin_total += dense.numel()
        lin_zero += zeros
    return {
        "parameters": total,
        "nonzero_parameters": nonzero,
        "parameter_bytes": param_bytes,
        "buffer_bytes": buffer_bytes,
        "memory_bytes": param_bytes + buffer_bytes,
        "bits_per_weight": 8 * param_bytes / total if total else None,
        "linear_sparsity": lin_zero / lin_total if lin_total else None,
        "layers": layers,
    }


# ---------------------------------------------------------------- speed
def _model_inputs(model: Any, batch: int, seq_len: int, seed: int = 0) -> dict[str, Any]:
    import torch

    vocab = int(getattr(model.config, "vocab_size", 0) or 0)
    if vocab <= 0:
        raise UsageError("latency needs a text model with config.vocab_size")
    gen = torch.Generator().manual_seed(seed)
    # Token ids 3.. avoid the usual special tokens (pad / bos / eos at 0..2).
    low = min(3, vocab - 1)
    ids = torch.randint(low, vocab, (batch, seq_len), generator=gen)
    device = next(model.parameters()).device
    inputs = {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}
    if getattr(model.config, "is_encoder_decoder", False):
        inputs["decoder_input_ids"] = ids[:, :1].to(device)
    return inputs


def measure_latency(model: Any, batch: int, seq_len: int, warmup: int, runs: int) -> dict[str, Any]:
    import torch

    inputs = _model_inputs(model, batch, seq_len)
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            start = time.perf_counter()
            model(**inputs)
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000)
    times.sort()
    return {"median_ms": statistics.median(times), "p90_ms": times[min(len(times) - 1, int(0.9 * len(times)))],
            "min_ms": times[0], "runs": runs, "warmup": warmup}


def measure_generation(model: Any, prompt_tokens: int, new_tokens: int, runs: int) -> dict[str, Any]:
    import torch

    inputs = _model_inputs(model, 1, prompt_tokens, seed=1)
    pad = getattr(model.config, "pad_token_id", None)
    eos = getattr(model.config, "eos_token_id", None)
    if pad is None:
        pad = eos[0] if isinstance(eos, list) else (eos if eos is not None else 0)
    kwargs = dict(max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False,
                  pad_token_id=pad, num_beams=1)
    times = []
    with torch.inference_mode():
        for i in range(runs + 1):
            start = time.perf_counter()
            out = model.generate(**inputs, **kwargs)
            if i:
                times.append(time.perf_counter() - start)
    produced = int(out.shape[1] - inputs["input_ids"].shape[1])
    median = statistics.median(times)
    return {"tokens_per_s": produced / median, "median_s": median, "new_tokens": produced,
            "prompt_tokens": prompt_tokens, "runs": runs}


# ---------------------------------------------------------------- memory
_PROBE = r"""
import gc, json, resource, sys
import psutil
import torch
import hfcompress
from hfcompress.evaluate.efficiency import _model_inputs
folder, task, dtype, batch, seq_len, threads = sys.argv[1:7]
torch.set_num_threads(int(threads))
gc.collect()
def hwm():
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None
reset = False
try:  # Linux: writing 5 to clear_refs resets the peak RSS (VmHWM) to the current RSS
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    reset = True
except OSError:
    pass
rss_import = psutil.Process().memory_info().rss
peak_import = hwm() if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
bundle = hfcompress.load(folder, task=task, dtype=dtype, with_tokenizer=False)
rss_loaded = psutil.Process().memory_info().rss
with torch.inference_mode():
    if int(seq_len) > 0:
        bundle.model(**_model_inputs(bundle.model, int(batch), int(seq_len)))
peak = hwm() if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"rss_after_import": rss_import, "peak_after_import": peak_import,
                  "rss_after_load": rss_loaded, "peak_rss_total": peak, "hwm_reset": reset}))
"""


def peak_rss_subprocess(folder: Path, task: str, dtype: str, batch: int, seq_len: int) -> dict[str, Any]:
    """Peak RSS of a fresh process that loads ``folder`` and runs one batch (see module doc)."""
    import torch

    env = dict(os.environ)
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, str(folder), task, dtype, str(batch), str(seq_len),
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


def peak_rss_inprocess(model: Any, batch: int, seq_len: int) -> dict[str, Any]:
    """RSS growth during one forward pass in this process, sampled every 1 ms (psutil)."""
    import threading

    import psutil
    import torch

    proc = psutil.Process()
    start = proc.memory_info().rss
    peak = [start]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.001)

    inputs = _model_inputs(model, batch, seq_len)
    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    with torch.inference_mode():
        model(**inputs)
    stop.set()
    thread.join()
    return {"peak_rss_bytes": peak[0] - start, "rss_before": start,
            "method": "inprocess: psutil RSS sampled every 1 ms during one forward, minus RSS before"}


# ---------------------------------------------------------------- method
def _dtype_name(model: Any) -> str:
    dtype = str(getattr(model, "dtype", "")).replace("torch.", "")
    return dtype if dtype in ("float32", "float16", "bfloat16") else "auto"


def measure_efficiency(bundle: Any, config: EfficiencyConfig, *, model_label: str,
                       folder: Path | None = None, work_dir: Path | None = None) -> list[dict[str, Any]]:
    """Efficiency results of ``bundle`` (``folder``: where its weights are on disk, if known)."""
    import torch

    from ..io import weight_bytes

    start = time.perf_counter()
    model = bundle.model
    size = size_figures(model)
    device = str(next(model.parameters()).device)
    settings = {
        "device": device, "torch_threads": torch.get_num_threads(), "dtype": _dtype_name(model),
        "latency_batch_size": config.latency_batch_size, "latency_seq_len": config.latency_seq_len,
        "warmup": config.warmup, "runs": config.runs,
    }
    notes: dict[str, Any] = {}
    scratch: Path | None = None
    try:
        if folder is None and (config.measure_disk or config.peak_rss == "subprocess"):
            from ..stage import save_bundle

            scratch = Path(tempfile.mkdtemp(prefix="hfcompress-eff-", dir=work_dir))
            try:
                save_bundle(bundle, scratch)
                folder = scratch
                notes["disk_folder"] = "saved to a scratch folder for measurement"
            except Exception as exc:  # noqa: BLE001 - a figure we cannot get is reported, not fatal
                notes["disk_error"] = " ".join(str(exc).split())[:300]
        disk = weight_bytes(folder) if folder is not None else None
        is_text = bundle.task in _TEXT_TASKS and getattr(model.config, "vocab_size", None)
        latency = gen = rss = None
        if is_text:
            latency = measure_latency(model, config.latency_batch_size, config.latency_seq_len,
                                      config.warmup, config.runs)
            if config.generate and bundle.task == "causal-lm":
                gen = measure_generation(model, config.gen_prompt_tokens, config.gen_new_tokens,
                                         config.gen_runs)
        else:
            notes["latency"] = f"not measured for task {bundle.task!r} (text models only)"
        if config.peak_rss == "subprocess" and folder is not None:
            rss = peak_rss_subprocess(folder, bundle.task, _dtype_name(model),
                                      config.latency_batch_size, config.latency_seq_len if is_text else 0)
        elif config.peak_rss == "inprocess" and is_text:
            rss = peak_rss_inprocess(model, config.latency_batch_size, config.latency_seq_len)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    seconds = time.perf_counter() - start

    def res(metric: str, value: Any, unit: str, hib: bool | None, details: dict | None = None) -> dict:
        return make_result("efficiency", metric, value, model=model_label, unit=unit, higher_is_better=hib,
                           settings=settings, details=details, seconds=seconds)

    params = size["parameters"]
    out = [
        res("parameters", params, "params", False),
        res("nonzero_parameters", size["nonzero_parameters"], "params", False),
        res("memory_bytes", size["memory_bytes"], "bytes", False,
            {"parameter_bytes": size["parameter_bytes"], "buffer_bytes": size["buffer_bytes"]}),
        res("bits_per_weight", size["bits_per_weight"], "bits", False),
    ]
    if disk is not None:
        out.append(res("disk_bytes", disk, "bytes", False, {k: v for k, v in notes.items() if "disk" in k}))
        out.append(res("disk_bits_per_weight", 8 * disk / params if params else None, "bits", False))
    elif "disk_error" in notes:
        out.append(res("disk_bytes", None, "bytes", False, {"error": notes["disk_error"]}))
    if size["linear_sparsity"] is not None:
        out.append(res("linear_sparsity", size["linear_sparsity"], "", None, {"layers": size["layers"]}))
    if latency is not None:
        out.append(res("latency_ms", latency["median_ms"], "ms", False, latency))
    if gen is not None:
        out.append(res("generate_tokens_per_s", gen["tokens_per_s"], "tokens/s", True, gen))
    if rss is not None:
        out.append(res("peak_rss_bytes", rss.get("peak_rss_bytes"), "bytes", False, rss))
    return out


def block_sparsity(layers: dict[str, float]) -> dict[str, float]:
    """Per-block mean sparsity (modules grouped by their first numeric index)."""
    groups: dict[str, list[float]] = {}
    for name, value in layers.items():
        m = re.search(r"^(.*?\.\d+)\.", name)
        groups.setdefault(m.group(1) if m else name, []).append(value)
    return {k: sum(v) / len(v) for k, v in groups.items()}


def _prepare(cfg: EfficiencyConfig) -> None:
    return None


def _check(cfg: EfficiencyConfig, prepared: Any, model_config: Any, task: str) -> None:
    return None


def _measure(bundle: Any, cfg: EfficiencyConfig, prepared: Any, *, model_label: str, folder: Path | None = None,
             work_dir: Path | None = None, progress: bool = False) -> list[dict[str, Any]]:
    return measure_efficiency(bundle, cfg, model_label=model_label, folder=folder, work_dir=work_dir)


from .core import MethodSpec, register_eval_method  # noqa: E402

register_eval_method("efficiency", EfficiencyConfig, MethodSpec(_prepare, _check, _measure))

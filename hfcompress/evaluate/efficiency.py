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

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field

from ..io import weight_bytes
from ..registry import register
from ..sizes import logical_numel, size_figures, tensor_bytes
from ..stage import note, save_bundle
from .base import EvaluateConfig, make_result
from .core import MethodSpec, apply_stage
from .latency import measure_generation, measure_latency
from .rss_probe import peak_rss_inprocess, peak_rss_subprocess

# Re-exported: size accounting lives in hfcompress.sizes, the probes in .latency / .rss_probe.
__all__ = ["EfficiencyConfig", "logical_numel", "measure_efficiency", "size_figures", "tensor_bytes"]

_TEXT_TASKS = {"causal-lm", "sequence-classification", "token-classification", "masked-lm",
               "feature-extraction", "seq2seq-lm"}


class EfficiencyConfig(EvaluateConfig):
    """Size, latency, throughput and peak memory of the model (and the source with baseline: true)."""

    method: Literal["efficiency"] = "efficiency"
    latency_batch_size: int = Field(1, ge=1, le=1024, description="sequences per timed forward pass")
    latency_seq_len: int = Field(128, ge=1, le=131_072, description="tokens per sequence of the timed batch")
    warmup: int = Field(3, ge=0, le=100, description="untimed forward passes before timing")
    runs: int = Field(10, ge=1, le=1000, description="timed forward passes (median reported)")
    generate: bool = Field(True, description="measure generation tokens/s (causal LMs)")
    gen_prompt_tokens: int = Field(32, ge=1, le=131_072, description="prompt tokens of the generation figure")
    gen_new_tokens: int = Field(32, ge=1, le=4096, description="new tokens for the generation tokens/s figure")
    gen_runs: int = Field(3, ge=1, le=100, description="timed generations (median reported)")
    peak_rss: Literal["subprocess", "inprocess", "off"] = Field(
        "subprocess", description="peak memory: a fresh process loads the model (subprocess), RSS sampled "
                                  "around one forward here (inprocess), or off")
    measure_disk: bool = Field(True, description="save an in-memory model to a scratch folder to "
                                                 "measure its bytes on disk")


# ---------------------------------------------------------------- method
def _dtype_name(model: Any) -> str:
    dtype = str(getattr(model, "dtype", "")).replace("torch.", "")
    return dtype if dtype in ("float32", "float16", "bfloat16") else "auto"


def measure_efficiency(bundle: Any, config: EfficiencyConfig, *, model_label: str,
                       folder: Path | None = None, work_dir: Path | None = None) -> list[dict[str, Any]]:
    """Efficiency results of ``bundle`` (``folder``: where its weights are on disk, if known)."""
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
            scratch = Path(tempfile.mkdtemp(prefix="hfcompress-eff-", dir=work_dir))
            try:
                save_bundle(bundle, scratch)
                folder = scratch
                notes["disk_folder"] = "saved to a scratch folder for measurement"
            except Exception as exc:  # noqa: BLE001 - a figure we cannot get is reported, not fatal
                notes["disk_error"] = " ".join(str(exc).split())[:300]
        disk = weight_bytes(folder) if folder is not None else None
        is_text = (bundle.task in _TEXT_TASKS and getattr(model.config, "vocab_size", None)) \
            or bundle.task in ("image-classification", "speech-seq2seq")  # random images / features
        latency = gen = rss = None
        if is_text:
            note(f"latency: {config.warmup} warm-up + {config.runs} runs of batch {config.latency_batch_size} x "
                 f"{config.latency_seq_len} tokens")
            latency = measure_latency(model, config.latency_batch_size, config.latency_seq_len,
                                      config.warmup, config.runs)
            if config.generate and bundle.task == "causal-lm":
                note(f"generation: {config.gen_runs} runs of {config.gen_new_tokens} new tokens")
                gen =  measure_generation(model, config.gen_prompt_tokens, config.gen_new_tokens,
                                         config.gen_runs)
        else:
            notes["latency"] = f"not measured for task {bundle.task!r} (text, image and speech models only)"
        if config.peak_rss == "subprocess" and folder is not None:
            note("peak memory: loading the model in a fresh process")
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


def _prepare(cfg: EfficiencyConfig) -> None:
    return None


def _check(cfg: EfficiencyConfig, prepared: Any, model_config: Any, task: str) -> None:
    return None


def _measure(bundle: Any, cfg: EfficiencyConfig, prepared: Any, *, model_label: str, folder: Path | None = None,
             work_dir: Path | None = None, progress: bool = False) -> list[dict[str, Any]]:
    return measure_efficiency(bundle, cfg, model_label=model_label, folder=folder, work_dir=work_dir)


def _needs_folder(cfg: EfficiencyConfig) -> bool:
    return cfg.measure_disk or cfg.peak_rss == "subprocess"


register(EfficiencyConfig, spec=MethodSpec(_prepare, _check, _measure, _needs_folder))(apply_stage)

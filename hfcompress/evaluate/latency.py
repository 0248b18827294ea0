"""Speed probes: forward-pass latency and generation throughput on a fixed random batch.

::

    from hfcompress.evaluate.latency import measure_latency
    measure_latency(model, batch=1, seq_len=128, warmup=3, runs=10)["median_ms"]

Inputs are random token ids (seed 0, ids 3.. so the usual special tokens are avoided); an
image model (``main_input_name == "pixel_values"``) gets a ``batch`` of random images of its
``config.image_size``, a speech model (``"input_features"``, e.g. Whisper) a ``batch`` of random
log-mel features of its full input window (30 s for Whisper) with ``seq_len`` decoder tokens
(capped at ``max_target_positions``). No timing is asserted anywhere: the numbers depend on
the machine's load.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from ..errors import UsageError


def _float_dtype(model: Any) -> Any:
    for p in model.parameters():
        if p.dtype.is_floating_point:
            return p.dtype
    return torch.float32


def model_inputs(model: Any, batch: int, seq_len: int, seed: int = 0) -> dict[str, Any]:
    """A ``batch`` x ``seq_len`` batch of random token ids (and mask) on the model's device
    (random images / audio features for vision / speech models: see the module doc)."""
    main = getattr(model, "main_input_name", "input_ids")
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    cfg = model.config
    if main == "pixel_values":
        size = getattr(cfg, "image_size", 224)
        h, w = (size, size) if isinstance(size, int) else tuple(size)[:2]
        pixels = torch.randn(batch, int(getattr(cfg, "num_channels", 3)), h, w, generator=gen)
        return {"pixel_values": pixels.to(device=device, dtype=_float_dtype(model))}
    if main == "input_features":
        mels = int(getattr(cfg, "num_mel_bins", 80))
        frames = 2 * int(getattr(cfg, "max_source_positions", 1500))
        feats = torch.randn(batch, mels, frames, generator=gen).clamp(-1, 1)
        inputs = {"input_features": feats.to(device=device, dtype=_float_dtype(model))}
        if getattr(cfg, "is_encoder_decoder", False):
            n = max(1, min(seq_len, int(getattr(cfg, "max_target_positions", seq_len) or seq_len)))
            vocab = int(getattr(cfg, "vocab_size", 0) or 4)
            inputs["decoder_input_ids"] = torch.randint(min(3, vocab - 1), vocab, (batch, n), generator=gen).to(device)
        return inputs
    vocab = int(getattr(model.config, "vocab_size", 0) or 0)
    if vocab <= 0:
        raise UsageError("latency needs a text model with config.vocab_size")
    gen = torch.Generator().manual_seed(seed)
    # Token ids 3.. avoid the usual special tokens (pad / bos / eos at 0..2).
    low = min(3, vocab - 1)
    ids = torch.randint(low, vocab, (batch, seq_len), generator=gen)
    inputs = {"input_ids": ids.to(device), "attention_mask": torch.ones_like(ids).to(device)}
    if getattr(model.config, "is_encoder_decoder", False):
        inputs["decoder_input_ids"] = ids[:, :1].to(device)
    return inputs


def measure_latency(model: Any, batch: int, seq_len: int, warmup: int, runs: int) -> dict[str, Any]:
    """Median / p90 / min milliseconds of one forward pass after ``warmup`` untimed runs."""
    inputs = model_inputs(model, batch, seq_len)
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
    """Greedy generation of exactly ``new_tokens`` tokens, batch 1: tokens/s (median of ``runs``)."""
    inputs = model_inputs(model, 1, prompt_tokens, seed=1)
    if "input_ids" not in inputs:
        raise UsageError("generation throughput is measured for text generation models; speech models "
                         "report generate latency with --metric wer")
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

"""Speed probes: forward-pass latency and generation throughput on a fixed random batch.

::

    from hfcompress.evaluate.latency import measure_latency
    measure_latency(model, batch=1, seq_len=128, warmup=3, runs=10)["median_ms"]

Inputs are random token ids (seed 0, ids 3.. so the usual special tokens are avoided);
no timing is asserted anywhere: the numbers depend on the machine's load.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

from ..errors import UsageError


def model_inputs(model: Any, batch: int, seq_len: int, seed: int = 0) -> dict[str, Any]:
    """A ``batch`` x ``seq_len`` batch of random token ids (and mask) on the model's device."""
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

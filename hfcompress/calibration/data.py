"""Calibration inputs for the calibrated methods, and handing freed memory back to the OS.

:func:`calibration_windows` gives a calibration *batch* in the model's own modality: for a text
model it checks the position limit, then tokenizes the calibration dataset once per process
(texts and windows cached by dataset / tokenizer / settings) into ``[samples, seq_len]``
windows — BOS first where the tokenizer adds one itself (see
:func:`hfcompress.data.calibration_ids`); for an image or speech model it is a dict of batched
model inputs (pixel values, log-mel features + transcript decoder ids) built by the model's own
processor (:mod:`.modality`). Every consumer slices a batch along dim 0 only
(:func:`num_samples`, :func:`take_samples`) and reports it with :func:`describe_batch`.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from ..config import CalibrationConfig
from ..data import calibration_ids, load_texts
from ..errors import UsageError
from .modality import media_inputs, modality_of

#: a calibration batch: token windows ``[samples, seq_len]`` or a dict of batched model inputs
Batch = torch.Tensor | dict[str, torch.Tensor]

_TEXTS: dict[tuple, list[str]] = {}
_IDS: dict[tuple, torch.Tensor] = {}


def position_limit(model: Any) -> tuple[str, int] | None:
    """(config field, value) of the longest sequence the model allows (``max_position_embeddings`` or kin)."""
    config = getattr(model, "config", None)
    for attr in ("max_position_embeddings", "n_positions", "max_target_positions"):
        v = getattr(config, attr, None)
        if isinstance(v, int) and v > 0:
            return attr, v
    return None


def calibration_windows(tokenizer: Any, model: Any, cal: CalibrationConfig) -> Batch:
    """The calibration batch of ``model``: ``[samples, seq_len]`` token windows for a text model, a dict
    of batched inputs for an image / speech model (``tokenizer`` is then its processor); one-line
    errors (no tokenizer / processor, seq_len too long, a dataset of the wrong modality) first."""
    if modality_of(model) != "text":
        batch = media_inputs(tokenizer, model, cal)
        release_free_memory()
        return batch
    if tokenizer is None:
        raise UsageError("calibration needs a tokenizer, and this model has none: save one with the model")
    limit = position_limit(model)
    if limit and cal.seq_len > limit[1]:
        raise UsageError(f"calibration seq_len {cal.seq_len} exceeds the model's {limit[0]} {limit[1]}: "
                         "lower --seq-len")
    key = (cal.dataset, cal.config, cal.split, cal.text_column, cal.revision)
    ids_key = (key, id(tokenizer), getattr(tokenizer, "name_or_path", None), len(tokenizer),
               cal.model_dump_json())
    if ids_key in _IDS:
        return _IDS[ids_key]
    if key not in _TEXTS:
        _TEXTS.clear()
        _TEXTS[key] = load_texts(cal.dataset, cal.config, cal.split, cal.text_column, cal.revision)
    ids = calibration_ids(tokenizer, cal, texts=_TEXTS[key])
    _IDS.clear()
    _IDS[ids_key] = ids
    release_free_memory()
    return ids


def num_samples(batch: Batch) -> int:
    """Number of calibration samples (dim 0) of a batch."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0])
    return int(next(v for v in batch.values() if isinstance(v, torch.Tensor)).shape[0])


def take_samples(batch: Batch, a: int, b: int) -> Batch:
    """Samples ``a:b`` of a batch (every tensor of a dict sliced along dim 0)."""
    if isinstance(batch, torch.Tensor):
        return batch[a:b]
    return {k: v[a:b] if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def sample_length(batch: Batch) -> int:
    """A per-sample length to size forward chunks by: tokens of a window; for a dict, the longest
    trailing axis (frames of audio features, pixels of an image row, tokens)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[1]) if batch.dim() > 1 else 1
    return max((int(v.shape[-1]) for v in batch.values() if isinstance(v, torch.Tensor) and v.dim() > 1), default=1)


def describe_batch(batch: Batch, samples_key: str = "samples") -> dict[str, Any]:
    """For summaries: ``{samples, seq_len}`` of token windows, ``{samples, inputs: {name: shape}}`` of a dict."""
    out: dict[str, Any] = {samples_key: num_samples(batch)}
    if isinstance(batch, torch.Tensor):
        out["seq_len"] = int(batch.shape[1])
    else:
        out["inputs"] = {k: list(v.shape[1:]) for k, v in batch.items() if isinstance(v, torch.Tensor)
                         and k != "labels"}
    return out


_LIBC: Any = None

#: glibc ``mallopt`` parameter number of M_MMAP_THRESHOLD, and the fixed value the calibration sets
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 16 << 20


def _libc() -> Any:
    global _LIBC
    if _LIBC is None:
        _LIBC = False
        try:
            import ctypes
            import ctypes.util

            name = ctypes.util.find_library("c")
            lib = ctypes.CDLL(name) if name else None
            if lib is not None and hasattr(lib, "malloc_trim") and hasattr(lib, "mallopt"):
                _LIBC = lib
        except OSError:
            pass
    return _LIBC


def bound_heap() -> None:
    """Allocations of 16 MB and more get their own mappings, returned to the OS when freed.

    glibc's default threshold grows to 32 MB after large frees, so freed activation tensors
    stay resident in the heap until a trim. Below the threshold they are reused from the heap:
    each fresh mapping costs a page fault per 4 KB on first touch, and on SmolLM2 Wanda (fp32,
    chunks of 2,048 tokens: 1.6-12.6 MB activations) a 1 MB threshold made the pruning call
    77.8 s instead of 58.7 s for a 124 MiB lower peak RSS (``benchmarks/calibration_malloc.py``,
    side by side on a quiet 2-core VM). Process-wide (glibc has no per-call setting); a no-op
    off glibc. :func:`release_free_memory` trims the heap after every block.
    """
    lib = _libc()
    if lib:
        lib.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)


@contextmanager
def frozen_gc() -> Iterator[None]:
    """Objects alive on entry are left out of every garbage collection inside the block.

    :func:`release_free_memory` runs ``gc.collect`` after each block; with transformers loaded a
    full collection walks ~400k objects (0.25-0.5 s each, 5-10 % of a SmolLM2 Wanda run). The
    calibration's own garbage is all young, so the long-lived objects (modules, weights,
    imported code) are frozen for the run (``gc.freeze``) and unfrozen after it — unless
    something froze objects before us, whose freeze we keep.
    """
    was_frozen = gc.get_freeze_count() > 0
    gc.freeze()
    try:
        yield
    finally:
        if not was_frozen:
            gc.unfreeze()


def release_free_memory() -> None:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``; a no-op elsewhere).

    Tokenizing the calibration text and each block's activations leave freed-but-kept memory
    in glibc's heaps; trimming keeps the peak RSS of a calibration run close to what is alive.
    """
    gc.collect()
    lib = _libc()
    if lib:
        lib.malloc_trim(0)

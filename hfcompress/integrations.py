"""What ``import hfcompress`` sets up in the libraries it drives.

* Formats: each module listed in :data:`FORMAT_MODULES` plugs a checkpoint format into
  ``from_pretrained`` (e.g. a transformers quantizer for sparse-compressed or quanto
  checkpoints). Modules that are not present in this installation are skipped.
* Noise: library messages a user cannot act on are filtered (:func:`quiet_library_noise`),
  and :func:`quiet_progress` turns the libraries' own progress bars off (``--no-progress``).
"""

from __future__ import annotations

import importlib
import logging

#: (logger, message prefix) of library log records that ask nothing of the user. bitsandbytes
#: logs the first one on every 4-bit run on CPUs with AVX512-BF16 when the optional ``kernels``
#: package (a faster CPU kernel) is absent; it falls back to its own kernel.
NOISE = (
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from kernels-community"),
)


class _DropPrefix(logging.Filter):
    def __init__(self, prefix: str) -> None:
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def quiet_library_noise() -> None:
    """Drop the log records listed in :data:`NOISE` (idempotent)."""
    for name, prefix in NOISE:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropPrefix) and f.prefix == prefix for f in logger.filters):
            logger.addFilter(_DropPrefix(prefix))


def quiet_progress() -> None:
    """Turn off transformers' ("Loading weights", ...) and huggingface_hub's progress bars."""
    from huggingface_hub.utils import disable_progress_bars  # heavy third-party: only when asked
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    disable_progress_bars()

FORMAT_MODULES = (
    "hfcompress.prune.sparse_format",
    "hfcompress.quantize.quanto_format",
)


def register_all() -> list[str]:
    """Import every format module; returns those that registered."""
    done = []
    for name in FORMAT_MODULES:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name != name:
                raise
            continue
        done.append(name)
    return done

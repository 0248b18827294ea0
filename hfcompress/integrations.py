"""Formats that ``import hfcompress`` registers with transformers.

Each module listed here plugs a checkpoint format into ``from_pretrained`` (e.g. a
transformers quantizer for sparse-compressed or quanto checkpoints). Modules that are
not present in this installation are skipped.
"""

from __future__ import annotations

import importlib

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

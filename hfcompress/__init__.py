"""hfcompress: compress Hugging Face models and publish them back to the Hub.

::

    import hfcompress
    from hfcompress.prune import WandaConfig

    bundle = hfcompress.load("HuggingFaceTB/SmolLM2-135M-Instruct")
    hfcompress.prune(bundle, WandaConfig(sparsity=0.5))

``import hfcompress`` is light (no torch): it registers the project's checkpoint formats
with transformers as stand-ins that import the real code on first use, so
``AutoModel....from_pretrained`` reloads them.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> module that defines it (imported on first use to keep `import` light).
_LAZY = {
    "load": "hfcompress.loading",
    "ModelBundle": "hfcompress.loading",
    "Recipe": "hfcompress.recipes",
    "load_recipe": "hfcompress.recipes",
    "dump_recipe": "hfcompress.recipes",
    "parse_recipe": "hfcompress.recipes",
    "compress": "hfcompress.pipeline",
    "run_stage": "hfcompress.pipeline",
    "prune": "hfcompress.prune",
    "quantize": "hfcompress.quantize",
    "distill": "hfcompress.distill",
    "DistillationTrainer": "hfcompress.distill",
    "evaluate": "hfcompress.evaluate",
    "search": "hfcompress.search",
    "push": "hfcompress.hub",
    "pull": "hfcompress.hub",
    "CalibrationConfig": "hfcompress.config",
    "HFCompressError": "hfcompress.errors",
}

__all__ = sorted(_LAZY) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in ("evaluate", "search"):  # the package itself is callable: hfcompress.evaluate(model, ...)
        return importlib.import_module(f"hfcompress.{name}")
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hfcompress' has no attribute {name!r}")


from .integrations import quiet_library_noise as _quiet_library_noise  # noqa: E402
from .integrations import register_lazily as _register_formats  # noqa: E402

_quiet_library_noise()
_register_formats()  # light: torch and the format modules load on first use

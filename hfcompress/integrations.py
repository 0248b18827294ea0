"""What ``import hfcompress`` sets up in the libraries it drives.

* Formats: each module listed in :data:`FORMATS` plugs a checkpoint format into
  ``from_pretrained`` (a transformers quantizer for sparse-compressed or quanto checkpoints).
  ``import hfcompress`` imports none of them (nor torch): :func:`register_lazily` puts light
  stand-ins into transformers' quantizer registry when transformers loads it, and a stand-in
  imports its module on first use. Modules that are not present in this installation are skipped.
* Noise: library messages a user cannot act on are filtered (:func:`quiet_library_noise`),
  and :func:`quiet_progress` turns the libraries' own progress bars off (``--no-progress``).
"""

from __future__ import annotations

import importlib
import importlib.abc
import logging
import sys
from pathlib import Path
from typing import Any

#: (logger, message prefix) of library log records that ask nothing of the user. bitsandbytes
#: logs the first one on every 4-bit run on CPUs with AVX512-BF16 when the optional ``kernels``
#: package (a faster CPU kernel) is absent; it falls back to its own kernel. The second comes
#: on EVERY int8 matmul of an fp32 model (thousands of lines per Whisper transcription): LLM.int8
#: quantizes its activations through float16 by design.
NOISE = (
    ("bitsandbytes.backends.cpu.ops", "Failed to load CPU gemm_4bit_forward from kernels-community"),
    ("bitsandbytes.autograd._functions", "MatMul8bitLt: inputs will be cast from"),
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

#: transformers ``quant_method`` -> the hfcompress module that registers its config and quantizer.
FORMATS = {
    "hfcompress-sparse": "hfcompress.prune.sparse_format",
    "hfcompress-quanto": "hfcompress.quantize.quanto_format",
}
FORMAT_MODULES = tuple(dict.fromkeys(FORMATS.values()))

_PACKAGE_ROOT = Path(__file__).parent

#: The transformers module that holds the quantizer registry (it imports torch).
_REGISTRY_MODULE = "transformers.quantizers.auto"


def register_all() -> list[str]:
    """Import every format module now (registers the real classes); returns those that registered."""
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


class _LazyFormat:
    """Stands in the transformers registries for a format until first use, then imports it.

    ``AutoQuantizationConfig.from_dict`` calls ``target.from_dict(d)`` and ``AutoHfQuantizer``
    calls ``target(config, **kw)``: both import the real module (which registers its classes in
    place of this stand-in) and forward the call.
    """

    def __init__(self, quant_method: str, module: str, kind: str) -> None:
        self.quant_method, self.module, self.kind = quant_method, module, kind

    def _real(self) -> Any:
        registry = sys.modules[_REGISTRY_MODULE]
        for mapping in (registry.AUTO_QUANTIZATION_CONFIG_MAPPING, registry.AUTO_QUANTIZER_MAPPING):
            if isinstance(mapping.get(self.quant_method), _LazyFormat):
                del mapping[self.quant_method]
        module = importlib.import_module(self.module)  # registers its classes on first import
        mapping = (registry.AUTO_QUANTIZATION_CONFIG_MAPPING if self.kind == "config"
                   else registry.AUTO_QUANTIZER_MAPPING)
        if self.quant_method not in mapping:  # imported earlier, while this stand-in held the name
            module._register()
        return mapping[self.quant_method]

    def from_dict(self, *args: Any, **kwargs: Any) -> Any:
        return self._real().from_dict(*args, **kwargs)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._real()(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<hfcompress format {self.quant_method!r} ({self.kind}), imported on first use from {self.module}>"


def _install_stand_ins(registry: Any) -> None:
    for quant_method, module in FORMATS.items():
        if not _PACKAGE_ROOT.joinpath(*module.split(".")[1:]).with_suffix(".py").is_file():
            continue  # not in this installation (find_spec would import its parent package)
        registry.AUTO_QUANTIZATION_CONFIG_MAPPING.setdefault(quant_method, _LazyFormat(quant_method, module, "config"))
        registry.AUTO_QUANTIZER_MAPPING.setdefault(quant_method, _LazyFormat(quant_method, module, "quantizer"))


class _AfterRegistryImport(importlib.abc.MetaPathFinder):
    """Runs :func:`_install_stand_ins` right after transformers imports its quantizer registry."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != _REGISTRY_MODULE:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        loader = spec.loader
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        original = loader.exec_module

        def exec_module(module: Any) -> None:
            original(module)
            _install_stand_ins(module)

        loader.exec_module = exec_module  # type: ignore[method-assign]  # a loader per spec: local change
        return spec


def register_lazily() -> None:
    """Make our formats known to ``from_pretrained`` without importing torch or transformers now.

    If transformers' quantizer registry is already imported, stand-ins go in at once; otherwise a
    one-module import hook puts them in as soon as transformers imports it (before any
    ``from_pretrained`` can read a ``quantization_config``). Idempotent.
    """
    registry = sys.modules.get(_REGISTRY_MODULE)
    if registry is not None:
        _install_stand_ins(registry)
        return
    if not any(isinstance(f, _AfterRegistryImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _AfterRegistryImport())

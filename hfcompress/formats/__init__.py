"""Checkpoint formats an output folder can be written in, and which library loads each.

==========================  ==============================  =====================================
format                      written by                      loads with
==========================  ==============================  =====================================
``dense``                   plain ``save_pretrained``       transformers (any version), vLLM
``compressed-tensors``      ``quantize rtn`` / ``gptq``     transformers + ``compressed-tensors``, vLLM
``bitsandbytes``            ``quantize bnb-*`` / ``calibrated-nf4``  transformers + ``bitsandbytes``
``hfcompress-sparse``       ``prune --format hfcompress-sparse``     ``import hfcompress`` (then transformers)
``hfcompress-quanto``       ``quantize quanto-*`` / ``calibrated-int4`` ``import hfcompress`` (then transformers)
==========================  ==============================  =====================================

The two ``hfcompress-*`` formats cannot be read by plain transformers. They are written
with :func:`guard_config` so that loading them without ``import hfcompress`` *raises*
(instead of transformers' usual "Unknown quantization type ... skip" warning followed by a
model with random weights). See docs/FORMATS.md.
"""

from __future__ import annotations

from typing import Any

from ..errors import UnsupportedError

#: format name -> (library that loads it, pip package to install)
LOADS_WITH: dict[str, tuple[str, str | None]] = {
    "dense": ("transformers", None),
    "compressed-tensors": ("compressed-tensors", "compressed-tensors"),
    "bitsandbytes": ("bitsandbytes", "bitsandbytes"),
    "hfcompress-sparse": ("hfcompress", "hfcompress"),
    "hfcompress-quanto": ("hfcompress", "hfcompress"),
}

#: quantization_config.quant_method -> format name
QUANT_METHOD_FORMAT = {
    "compressed-tensors": "compressed-tensors",
    "bitsandbytes": "bitsandbytes",
    "hfcompress-sparse": "hfcompress-sparse",
    "hfcompress-quanto": "hfcompress-quanto",
}

#: Why ``prune --format compressed-tensors`` (sparsity alone) is refused.
SPARSE_CT_REMOVED = (
    "compressed-tensors has no sparse-only format any more (sparse-bitmask / sparse-24-bitmask were removed in "
    "0.15, and from transformers and vLLM): keep format dense (loads everywhere), use hfcompress-sparse for a "
    "smaller file, or add a quantize stage (rtn / gptq) to write compressed-tensors pack-quantized")

#: Key in ``config.json`` that plain transformers validates when it builds the model.
GUARD_KEY = "attn_implementation"
#: Where the guarded folder keeps the original value of :data:`GUARD_KEY` (inside quantization_config).
SAVED_KEY = "saved_attn_implementation"


def guard_message(fmt: str) -> str:
    return (f"this checkpoint is in the {fmt} format: run `pip install hfcompress` and `import hfcompress` "
            "before from_pretrained")


def guard_config(config: dict[str, Any], fmt: str) -> dict[str, Any]:
    """Make plain transformers refuse ``config`` (a config.json dict carrying our quantization_config).

    transformers only *warns* about an unknown ``quant_method`` and then loads a model
    whose compressed weights are missing (random). It does validate ``attn_implementation``
    while building the model and raises ``ValueError`` quoting the value, so the value is a
    one-line instruction. Our quantizers (registered by ``import hfcompress``) put the
    saved value back (:func:`unguard`) before the model is built.
    """
    qc = config.setdefault("quantization_config", {})
    original = config.get(GUARD_KEY)
    if original is not None and original != guard_message(fmt):
        qc[SAVED_KEY] = original
    config[GUARD_KEY] = guard_message(fmt)
    return config


def unguard(config: Any, quantization_config: Any) -> Any:
    """``HfQuantizer.update_attn_implementation``: restore the attention implementation a guard replaced."""
    current = getattr(config, "_attn_implementation", None)
    if isinstance(current, str) and current.startswith("this checkpoint is in the "):
        config._attn_implementation = getattr(quantization_config, SAVED_KEY, None)
    return config


def format_info(name: str) -> dict[str, Any]:
    """``{"name", "loads_with", "pip"}`` for the report / card (``hfcompress.json`` ``format``)."""
    library, package = LOADS_WITH[name]
    return {"name": name, "loads_with": library, "pip": package}


def format_of_config(config: dict[str, Any]) -> str:
    """The format name of a folder from its config.json dict."""
    qc = config.get("quantization_config")
    if not isinstance(qc, dict):
        return "dense"
    method = qc.get("quant_method")
    if qc.get("load_in_4bit") or qc.get("load_in_8bit"):
        return "bitsandbytes"
    return QUANT_METHOD_FORMAT.get(str(method), str(method))


def folder_format(folder: Any) -> dict[str, Any]:
    """:func:`format_info` of a saved model folder (read from its config.json)."""
    import json
    from pathlib import Path

    path = Path(folder) / "config.json"
    cfg = json.loads(path.read_text()) if path.is_file() else {}
    name = format_of_config(cfg)
    return format_info(name) if name in LOADS_WITH else {"name": name, "loads_with": name, "pip": None}


#: format name -> module whose presence means the loading library is installed
_MODULES = {"compressed-tensors": "compressed_tensors", "bitsandbytes": "bitsandbytes",
            "hfcompress-quanto": "optimum.quanto"}


def missing_library(config: dict[str, Any]) -> str | None:
    """A one-line error if the library that loads a folder with this config.json is not installed, else None."""
    import importlib.util

    name = format_of_config(config)
    module = _MODULES.get(name)
    if module is None:
        return None
    try:
        found = importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        found = False
    if found:
        return None
    package = "optimum-quanto" if name == "hfcompress-quanto" else LOADS_WITH[name][1]
    return f"this model is in the {name} format, which needs the {package} package: pip install {package}"


def check_loadable_before_pull(fetch_config: Any) -> None:
    """Raise :class:`~hfcompress.errors.UnsupportedError` if the repo's format cannot be loaded here.

    ``fetch_config()`` returns the local path of the repo's config.json (or raises when it has none).
    """
    import json
    from pathlib import Path


    try:
        config = json.loads(Path(fetch_config()).read_text())
    except Exception:  # noqa: BLE001 - no config.json (or unreadable): nothing to check before the download
        return
    problem = missing_library(config) if isinstance(config, dict) else None
    if problem:
        raise UnsupportedError(problem + " (then pull again)")

"""Cutting a model by its layouts: slice projections, drop blocks, rewrite the config, rebuild.

Everything works on a state dict and a rewritten config; :func:`rebuild` then instantiates the
model's own class from the config and loads the state strictly, so the result is exactly what
``from_pretrained`` builds from the saved folder. :func:`describable` builds the rewritten model
on the meta device first (no memory) to prove the config can describe the cut before any work.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from ..errors import UnsupportedError
from .discover import _conv1d

#: config fields that index layers (data): "indices" holds layer numbers, "threshold" counts the
#: first N layers (e.g. Qwen2's max_window_layers)
INDEX_FIELDS = {"mlp_only_layers": "indices", "max_window_layers": "threshold", "first_k_dense_replace": "threshold"}


def tensor_keys(prefix: str, path: str, obj: Any) -> tuple[str, str | None]:
    """State-dict keys ``(weight, bias)`` of the projection ``path`` of the block at ``prefix``."""
    full = f"{prefix}.{path}" if prefix else path
    if isinstance(obj, nn.Parameter):
        return full, None
    bias = f"{full}.bias" if getattr(obj, "bias", None) is not None else None
    return f"{full}.weight", bias


def _axis(obj: Any, kind: str) -> int:
    """Axis of the weight that holds the outputs (``kind="out"``) or inputs (``"in"``)."""
    conv = _conv1d()
    if isinstance(obj, nn.Parameter):  # [experts, out, in]
        return 1 if kind == "out" else 2
    if conv is not None and isinstance(obj, conv):  # [in, out]
        return 1 if kind == "out" else 0
    return 0 if kind == "out" else 1


def take(state: dict[str, torch.Tensor], prefix: str, path: str, obj: Any, kind: str,
         idx: torch.Tensor) -> None:
    """Keep only outputs (``kind="out"``) or inputs (``"in"``) ``idx`` of a projection, in ``state``.

    ``idx`` is 1-D, or ``[experts, k]`` for 3-D expert tensors (each expert its own channels).
    """
    wkey, bkey = tensor_keys(prefix, path, obj)
    w = state[wkey]
    ax = _axis(obj, kind)
    if idx.dim() == 2:
        state[wkey] = torch.stack([w[e].index_select(ax - 1, idx[e]) for e in range(w.shape[0])]).contiguous()
    else:
        state[wkey] = w.index_select(ax, idx).contiguous()
    if bkey is not None and kind == "out" and bkey in state:
        state[bkey] = state[bkey].index_select(0, idx).contiguous()


def weight_view(w: torch.Tensor, obj: Any, kind: str) -> torch.Tensor:
    """``w`` as ``[experts, units, rest]`` with the outputs / inputs as units (experts = 1 for 2-D)."""
    ax = _axis(obj, kind)
    if w.dim() == 3:
        return w.movedim(ax, 1).reshape(w.shape[0], w.shape[ax], -1)
    return w.movedim(ax, 0).reshape(1, w.shape[ax], -1)


def renumber_blocks(state: dict[str, torch.Tensor], stack_name: str, kept: list[int]) -> dict[str, torch.Tensor]:
    """Drop the blocks of ``stack_name`` not in ``kept`` and renumber the rest 0..n-1.

    Parameters only the first block owns (T5's relative position bias: the first block computes
    what the others reuse) move to the new first block.
    """
    prefix = stack_name + "." if stack_name else ""
    first_only: dict[str, torch.Tensor] = {}
    blocks: dict[int, set[str]] = {}
    for k in state:
        if k.startswith(prefix):
            i, rest = k[len(prefix):].split(".", 1)
            if i.isdigit():
                blocks.setdefault(int(i), set()).add(rest)
    if 0 in blocks and len(blocks) > 1:
        others = set.intersection(*(v for i, v in blocks.items() if i != 0))
        first_only = {rest: state[f"{prefix}0.{rest}"] for rest in blocks[0] - others}
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        if k.startswith(prefix):
            i, rest = k[len(prefix):].split(".", 1)
            if i.isdigit():
                if int(i) not in kept:
                    continue
                new = kept.index(int(i))
                if new != 0 and rest in first_only:
                    continue
                out[f"{prefix}{new}.{rest}"] = v
                continue
        out[k] = v
    for rest, v in first_only.items():
        out.setdefault(f"{prefix}0.{rest}", v)
    return out


def keep_layers_in_config(config: Any, layers_field: str, kept: list[int], total: int,
                          per_layer_lists: bool = True) -> None:
    """Set the stack's depth to ``len(kept)`` and keep every per-layer config entry consistent.

    Lists with one entry per layer (``layer_types``, per-layer widths, ...) keep the entries of
    the kept layers; fields that index layers (:data:`INDEX_FIELDS`) are renumbered; a
    sparse-step pattern (every k-th layer a mixture of experts) becomes an explicit list.
    """
    targets = {id(c): c for c in (config, _text_config(config))}.values()
    for cfg in targets:
        if not hasattr(cfg, layers_field):
            continue
        setattr(cfg, layers_field, len(kept))
        if not per_layer_lists:
            continue
        step = getattr(cfg, "decoder_sparse_step", None)
        if isinstance(step, int) and step > 1 and isinstance(getattr(cfg, "mlp_only_layers", None), list):
            dense = {i for i in range(total) if (i + 1) % step != 0} | set(cfg.mlp_only_layers)
            cfg.mlp_only_layers = sorted(dense)
            cfg.decoder_sparse_step = 1
        for name, value in list(vars(cfg).items()):
            if name.startswith("_"):
                continue
            if isinstance(value, (list, tuple)) and len(value) == total and name not in INDEX_FIELDS \
                    and name not in ("architectures",):
                setattr(cfg, name, type(value)(value[i] for i in kept))
        for name, how in INDEX_FIELDS.items():
            value = getattr(cfg, name, None)
            if how == "indices" and isinstance(value, list):
                setattr(cfg, name, [kept.index(i) for i in value if i in kept])
            elif how == "threshold" and isinstance(value, int) and not isinstance(value, bool):
                setattr(cfg, name, sum(1 for i in kept if i < value))


def _text_config(config: Any) -> Any:
    getter = getattr(config, "get_text_config", None)
    try:
        return getter() if callable(getter) else config
    except (ValueError, AttributeError):
        return config


def set_field(config: Any, name: str, value: Any) -> None:
    """``config.name = value`` on the config (and its text config), one-line error if refused."""
    try:
        for cfg in {id(c): c for c in (config, _text_config(config))}.values():
            if cfg is config or hasattr(cfg, name):
                setattr(cfg, name, value)
    except (ValueError, TypeError, AttributeError) as exc:
        raise UnsupportedError(f"{type(config).__name__} refuses {name}={value}: "
                               f"{' '.join(str(exc).split())[:160]}") from None


def describable(model: nn.Module, new_config: Any, state: dict[str, torch.Tensor]) -> str | None:
    """None if a model built from ``new_config`` has exactly the shapes of ``state``; else the first
    mismatch as ``key: built shape vs cut shape``. Built on the meta device (no memory)."""
    try:
        with torch.device("meta"):
            probe = type(model)(new_config)
    except Exception as exc:  # noqa: BLE001 - any refusal of the config is the answer
        return f"the rewritten config does not build ({' '.join(str(exc).split())[:160]})"
    built = probe.state_dict()
    for k, v in state.items():
        if k in built and tuple(built[k].shape) != tuple(v.shape):
            return f"{k}: a rebuilt model has {tuple(built[k].shape)}, the cut one {tuple(v.shape)}"
    return None


def rebuild(model: nn.Module, new_config: Any, state: dict[str, torch.Tensor]) -> nn.Module:
    """A fresh model of ``model``'s class from ``new_config`` with ``state`` loaded strictly."""
    dtype = next(model.parameters()).dtype
    new = type(model)(new_config).to(dtype)
    result = new.load_state_dict(state, strict=False)
    tied = _tied_keys(new)
    missing = [k for k in result.missing_keys if k not in tied]
    if missing or result.unexpected_keys:
        raise UnsupportedError(f"rebuilding {type(model).__name__} failed: missing {missing[:3]}, unexpected "
                               f"{result.unexpected_keys[:3]}")
    if hasattr(new, "tie_weights"):
        new.tie_weights()
    new.eval()
    if getattr(model, "generation_config", None) is not None:
        new.generation_config = copy.deepcopy(model.generation_config)
    return new


def _tied_keys(model: nn.Module) -> set[str]:
    """Keys whose parameter is shared with another key (tied embeddings / heads)."""
    seen: dict[int, str] = {}
    tied: set[str] = set()
    for k, p in model.state_dict(keep_vars=True).items():
        if id(p) in seen:
            tied.add(k)
            tied.add(seen[id(p)])
        seen[id(p)] = k
    keys = getattr(model, "_tied_weights_keys", None) or []
    if isinstance(keys, dict):
        tied.update(keys)
    elif isinstance(keys, Iterable):
        tied.update(k for k in keys if isinstance(k, str))
    return tied

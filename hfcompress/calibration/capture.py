"""Input capture: each block gets exactly what the model's own forward passes to *that* block.

Instead of catching block 0's inputs and replaying them for every block, the calibration runs
the model's own forward once with every block's ``forward`` intercepted: when the model calls
block *i* (with its own positional and keyword arguments — the sliding-window or global mask
and rotary embeddings of that layer, ``encoder_hidden_states`` for a decoder block, T5's
position biases returned by the block before, ...), the interceptor calibrates the block on
those arguments (chunk by chunk) and returns its output to the model, which goes on to the next
block. For encoder–decoder models the decoder's blocks therefore see the calibrated encoder's
output. The forward stops right after the last block (no final norm, no LM head logits).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from ..errors import UnsupportedError
from ..loading.offload import execution_device
from .blocks import BlockStack

#: ``fn(global index, stack, index in stack, block, original forward, args, kwargs) -> output``
BlockFn = Callable[[int, BlockStack, int, nn.Module, Callable[..., Any], tuple, dict], Any]


class _Stop(Exception):
    """Raised after the last block: the rest of the model's forward is not needed."""


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def model_inputs(model: nn.Module, batch: torch.Tensor | dict[str, torch.Tensor], keep_labels: bool = False
                 ) -> dict[str, Any]:
    """Keyword arguments for ``model(**...)`` from token ids (or a dict of model inputs).

    Token ids get an all-ones attention mask; encoder–decoder models get ``decoder_input_ids``
    (the same windows shifted right by the decoder start token) unless given; ``use_cache=False``.
    A batch's ``labels`` (image calibration data) are left out unless ``keep_labels``: the
    calibration forward never reaches the head.
    """
    main = getattr(model, "main_input_name", "input_ids")
    inputs: dict[str, Any] = dict(batch) if isinstance(batch, dict) else {main: batch}
    if not keep_labels:
        inputs.pop("labels", None)
    ids = inputs.get("input_ids")
    if ids is not None and "attention_mask" not in inputs and _accepts(model.forward, "attention_mask"):
        inputs["attention_mask"] = torch.ones_like(ids)
    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False) and "decoder_input_ids" not in inputs \
            and "decoder_inputs_embeds" not in inputs:
        n = next(v for v in inputs.values() if isinstance(v, torch.Tensor)).shape[0]
        start = next((v for v in (getattr(config, "decoder_start_token_id", None), getattr(config, "pad_token_id", None),
                                  getattr(config, "bos_token_id", None)) if isinstance(v, int)), 0)
        first = torch.full((n, 1), start, dtype=torch.long)
        inputs["decoder_input_ids"] = torch.cat([first, ids[:, :-1]], 1) if ids is not None else first
    if _accepts(model.forward, "use_cache"):
        inputs["use_cache"] = False
    device = execution_device(model)  # an offloaded model's first weights may be on "meta"
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}


@contextmanager
def intercept_blocks(stacks: list[BlockStack], fn: BlockFn) -> Iterator[None]:
    """While inside, calling block *i* of any stack runs ``fn(...)`` instead of its forward; after
    the last block of the last stack (and its forward hooks) :class:`_Stop` ends the forward."""
    saved: list[tuple[nn.Module, Any]] = []
    stop = None
    g = 0
    try:
        for stack in stacks:
            for i, block in enumerate(stack.blocks):
                original = block.forward
                saved.append((block, block.__dict__.get("forward")))

                def forward(*args, _g=g, _s=stack, _i=i, _b=block, _f=original, **kwargs):
                    return fn(_g, _s, _i, _b, _f, args, kwargs)

                block.forward = forward
                g += 1
        stop = stacks[-1].blocks[-1].register_forward_hook(_raise_stop)
        yield
    finally:
        if stop is not None:
            stop.remove()
        for block, previous in saved:
            block.__dict__.pop("forward", None)
            if previous is not None:
                block.__dict__["forward"] = previous


def _raise_stop(module: nn.Module, args: Any, out: Any) -> None:
    raise _Stop


def run_through_blocks(model: nn.Module, stacks: list[BlockStack], inputs: dict[str, Any], fn: BlockFn) -> None:
    """Run ``model(**inputs)`` with every block intercepted by ``fn`` (see :func:`intercept_blocks`)."""
    with intercept_blocks(stacks, fn):
        try:
            model(**inputs)
        except _Stop:
            return
    raise UnsupportedError(f"the model's forward never reached the last block of {stacks[-1].name}: calibration "
                           "needs inputs that run every block stack (e.g. decoder inputs)")


# -- chunking -----------------------------------------------------------------------------------

def hidden_of(args: tuple, kwargs: dict) -> torch.Tensor:
    """The hidden states a block is called with (first positional argument or ``hidden_states=``)."""
    if args and isinstance(args[0], torch.Tensor):
        return args[0]
    hs = kwargs.get("hidden_states")
    if isinstance(hs, torch.Tensor):
        return hs
    raise UnsupportedError("calibration needs each block to take its hidden states as first argument or as "
                           "hidden_states=")


def slice_batch(value: Any, n: int, a: int, b: int) -> Any:
    """``value`` cut to samples ``a:b`` wherever it carries the batch dimension ``n``."""
    if isinstance(value, torch.Tensor):
        return value[a:b] if value.dim() > 0 and value.shape[0] == n and n > 1 else value
    if isinstance(value, tuple):
        return tuple(slice_batch(v, n, a, b) for v in value)
    if isinstance(value, list):
        return [slice_batch(v, n, a, b) for v in value]
    return value


def slice_call(args: tuple, kwargs: dict, n: int, a: int, b: int, hidden: torch.Tensor | None = None
               ) -> tuple[tuple, dict]:
    """The block's arguments for samples ``a:b`` (``hidden`` replaces the hidden states when given)."""
    args2 = tuple(slice_batch(v, n, a, b) for v in args)
    kwargs2 = {k: slice_batch(v, n, a, b) for k, v in kwargs.items()}
    if hidden is not None:
        if args and isinstance(args[0], torch.Tensor):
            args2 = (hidden, *args2[1:])
        else:
            kwargs2["hidden_states"] = hidden
    return args2, kwargs2


def first_tensor(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    if hasattr(out, "to_tuple"):
        return out.to_tuple()[0]
    raise UnsupportedError(f"a block returned {type(out).__name__}: calibration needs hidden states first")


def merge_outputs(parts: list[Any], sizes: list[int], hidden: torch.Tensor) -> Any:
    """One output with the structure of each chunk's output: ``hidden`` (already filled) in first
    place, other tensors concatenated along the batch where they carry it, else chunk 0's."""
    first = parts[0]
    if isinstance(first, torch.Tensor):
        return hidden
    if isinstance(first, (tuple, list)):
        rest = []
        for k in range(1, len(first)):
            vals = [p[k] for p in parts]
            v0 = vals[0]
            if isinstance(v0, torch.Tensor) and all(isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == s
                                                    for v, s in zip(vals, sizes, strict=True)) and len(vals) > 1:
                rest.append(torch.cat(vals, 0))
            else:
                rest.append(v0)
        return type(first)([hidden, *rest]) if isinstance(first, list) else (hidden, *rest)
    raise UnsupportedError(f"a block returned {type(first).__name__}: calibration needs a tensor or a tuple")

"""Frozen student modules, and the encoder pass a frozen student shares with its teacher.

``freeze_modules(student, ["encoder"])`` stops the named submodules from training (no
gradient, no optimizer state, run in eval mode so dropout / layer drop stay off). When the
frozen module is an encoder–decoder's whole encoder and its weights equal the teacher's
encoder (a student cut from the teacher with ``student_stacks: decoder``), the two models'
encoder outputs are the same tensor, so :func:`shared_encoder` returns the teacher's encoder
and the trainer runs it once per batch for both — for Whisper tiny.en, one encoder forward
per step instead of two forwards and a backward::

    frozen = freeze_modules(student, ["encoder"])      # or "model.encoder", any module name
    shared = shared_encoder(student, teacher)          # the teacher's encoder, or None
"""

from __future__ import annotations

import difflib
import inspect
from typing import Any

import torch
from torch import nn

from ..errors import UsageError


def _encoder(model: nn.Module) -> nn.Module | None:
    get = getattr(model, "get_encoder", None)
    if get is None:
        return None
    try:
        enc = get()
    except (AttributeError, NotImplementedError, TypeError):
        return None
    return enc if isinstance(enc, nn.Module) and enc is not model else None


def resolve_modules(model: nn.Module, names: list[str]) -> list[nn.Module]:
    """The submodules ``names`` of ``model`` (names as in ``named_modules()``; ``"encoder"`` also
    means the model's ``get_encoder()``); a one-line :class:`UsageError` for any other name, or
    when they cover every parameter (nothing would train)."""
    modules = dict(model.named_modules())
    found: list[nn.Module] = []
    for name in names:
        module = modules.get(name)
        if module is None and name == "encoder":
            module = _encoder(model)
        if module is None or module is model:
            shallow = sorted(n for n in modules if n and n.count(".") <= 1)
            close = difflib.get_close_matches(name, shallow, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise UsageError(f"freeze: {name!r} is not a submodule of the student {type(model).__name__}: "
                             f"{hint}give module names such as {', '.join(repr(n) for n in shallow[:4])}")
        found.append(module)
    covered = {id(p) for m in found for p in m.parameters()}
    if found and all(id(p) in covered for p in model.parameters()):
        raise UsageError(f"freeze: {names} covers every parameter of the student: nothing would train; "
                         "freeze fewer modules")
    return found


def freeze_modules(model: nn.Module, names: list[str]) -> list[nn.Module]:
    """Freeze the submodules ``names`` of ``model`` (see :func:`resolve_modules`): no gradient,
    eval mode. Returns them."""
    found = resolve_modules(model, names)
    for module in found:
        module.requires_grad_(False)
        module.eval()
    return found


def shared_encoder(student: nn.Module, teacher: nn.Module | None) -> nn.Module | None:
    """The teacher's encoder when the student's encoder is frozen and equal to it, else None.

    Equal means the same parameter and buffer names, shapes, dtypes, devices and values, so
    running it once gives exactly what each model's own encoder would (in eval mode).
    """
    if teacher is None:
        return None
    s_enc, t_enc = _encoder(student), _encoder(teacher)
    if s_enc is None or t_enc is None or any(p.requires_grad for p in s_enc.parameters()):
        return None
    s_state, t_state = s_enc.state_dict(), t_enc.state_dict()
    if s_state.keys() != t_state.keys():
        return None
    for key, s in s_state.items():
        t = t_state[key]
        if s.shape != t.shape or s.dtype != t.dtype or s.device != t.device or not torch.equal(s, t):
            return None
    return t_enc


def encoder_inputs(encoder: nn.Module, inputs: dict[str, Any]) -> dict[str, Any]:
    """The entries of a batch that ``encoder.forward`` takes (``input_features``, ``input_ids``,
    ``attention_mask`` ...), never the decoder's."""
    params = inspect.signature(encoder.forward).parameters
    return {k: v for k, v in inputs.items() if k in params and not k.startswith("decoder_")}

"""The weight matrices a calibrated method works on, found from the model itself.

A *target* is one weight matrix seen as ``[out_features, in_features]`` (``.weight`` is a view
that writes through, so ``zero_(t.weight, mask)`` edits the model) plus a way to see the input
its forward multiplies it with:

* ``nn.Linear``: the module itself (``weight`` is already ``[out, in]``);
* transformers' ``Conv1D`` (GPT-2 and kin): :class:`Conv1DTarget`, its ``[in, out]`` weight
  transposed;
* mixture-of-experts weights stored as 3-D tensors (transformers 5 ``experts.gate_up_proj``
  ``[experts, 2 x inter, hidden]`` / ``experts.down_proj``): one :class:`ExpertTarget` per
  expert and tensor; during calibration the experts' forward runs expert by expert (the same
  arithmetic as transformers' eager loop) and every expert's hook sees exactly the tokens routed
  to it — an expert that got none sees an empty ``[0, in]`` input.

Router / gate layers (the Linear that scores the experts) are never targets.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..errors import UnsupportedError, UsageError
from .blocks import BlockStack

try:  # transformers' GPT-2-style linear layer (weight [in, out])
    from transformers.pytorch_utils import Conv1D
except ImportError:  # pragma: no cover - transformers is a dependency
    Conv1D = ()  # type: ignore[assignment,misc]

InputHook = Callable[[torch.Tensor], None]


class Conv1DTarget:
    """A transformers ``Conv1D`` seen as a Linear: ``weight`` is the ``[out, in]`` transposed view."""

    def __init__(self, module: nn.Module):
        self.module = module

    @property
    def weight(self) -> torch.Tensor:
        return self.module.weight.t()

    @property
    def parameter(self) -> nn.Parameter:
        return self.module.weight

    @property
    def in_features(self) -> int:
        return int(self.module.weight.shape[0])

    @property
    def out_features(self) -> int:
        return int(self.module.weight.shape[1])

    def register_input_hook(self, fn: InputHook) -> Any:
        return self.module.register_forward_pre_hook(lambda m, args: fn(args[0]))


class ExpertTarget:
    """Expert ``expert`` of a fused 3-D expert tensor (``gate_up_proj`` / ``up_proj`` / ``down_proj``)."""

    def __init__(self, module: nn.Module, param: str, expert: int):
        self.module, self.param, self.expert = module, param, expert

    @property
    def parameter(self) -> nn.Parameter:
        return getattr(self.module, self.param)

    @property
    def weight(self) -> torch.Tensor:
        w = self.parameter[self.expert]
        return w.t() if getattr(self.module, "is_transposed", False) else w

    @property
    def in_features(self) -> int:
        return int(self.weight.shape[1])

    @property
    def out_features(self) -> int:
        return int(self.weight.shape[0])

    def register_input_hook(self, fn: InputHook) -> Any:
        return _ExpertHooks.of(self.module).add((self.param, self.expert), fn)


Target = Any  # nn.Linear | Conv1DTarget | ExpertTarget


def add_input_hook(target: Target, fn: InputHook) -> Any:
    """Call ``fn(x)`` with the input of ``target``'s matrix product each time it runs; returns a handle."""
    if isinstance(target, nn.Module):
        return target.register_forward_pre_hook(lambda m, args: fn(args[0]))
    return target.register_input_hook(fn)


# -- fused experts ------------------------------------------------------------------------------

def is_fused_experts(module: nn.Module) -> bool:
    """A transformers 5 experts module: 3-D ``down_proj`` and ``gate_up_proj`` (or ``up_proj``)."""
    down = getattr(module, "down_proj", None)
    up = getattr(module, "gate_up_proj", None)
    if up is None:
        up = getattr(module, "up_proj", None)
    return isinstance(down, nn.Parameter) and isinstance(up, nn.Parameter) and down.dim() == 3 and up.dim() == 3


def _up_name(module: nn.Module) -> str:
    return "gate_up_proj" if isinstance(getattr(module, "gate_up_proj", None), nn.Parameter) else "up_proj"


class _Handle:
    def __init__(self, hooks: _ExpertHooks, key: tuple[str, int], fn: InputHook):
        self.hooks, self.key, self.fn = hooks, key, fn

    def remove(self) -> None:
        self.hooks.remove(self.key, self.fn)


class _ExpertHooks:
    """Input hooks of one fused experts module; while any is set, its forward is the per-expert loop."""

    def __init__(self, module: nn.Module):
        self.module = module
        self.fns: dict[tuple[str, int], list[InputHook]] = {}

    @classmethod
    def of(cls, module: nn.Module) -> _ExpertHooks:
        hooks = module.__dict__.get("_hfc_expert_hooks")
        if hooks is None:
            if getattr(module, "has_post_expert_norm", False) and not hasattr(module, "post_expert_norm"):
                raise UnsupportedError(f"{type(module).__name__}: calibration needs the experts' post-norm module")
            hooks = cls(module)
            module.__dict__["_hfc_expert_hooks"] = hooks
            module.forward = lambda *a, **k: _per_expert_forward(module, hooks, *a, **k)
        return hooks

    def add(self, key: tuple[str, int], fn: InputHook) -> _Handle:
        self.fns.setdefault(key, []).append(fn)
        return _Handle(self, key, fn)

    def remove(self, key: tuple[str, int], fn: InputHook) -> None:
        fns = self.fns.get(key, [])
        if fn in fns:
            fns.remove(fn)
        if not fns:
            self.fns.pop(key, None)
        if not self.fns:  # last hook gone: back to the model's own forward
            self.module.__dict__.pop("_hfc_expert_hooks", None)
            self.module.__dict__.pop("forward", None)

    def call(self, key: tuple[str, int], x: torch.Tensor) -> None:
        for fn in list(self.fns.get(key, ())):
            fn(x)


def _linear(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None, transposed: bool) -> torch.Tensor:
    out = x @ w if transposed else nn.functional.linear(x, w)
    return out + bias if bias is not None else out


def _per_expert_forward(self: nn.Module, hooks: _ExpertHooks, hidden_states: torch.Tensor,
                        top_k_index: torch.Tensor, top_k_weights: torch.Tensor) -> torch.Tensor:
    """transformers' eager experts loop, over EVERY expert (so each expert's hook runs, with the
    tokens routed to it — possibly none — in the same order on every calibration chunk)."""
    transposed = bool(getattr(self, "is_transposed", False))
    has_bias = bool(getattr(self, "has_bias", False))
    up = _up_name(self)
    gated = up == "gate_up_proj"
    n_exp = getattr(self, up).shape[0]
    final = torch.zeros_like(hidden_states)
    expert_mask = nn.functional.one_hot(top_k_index, num_classes=n_exp + 1).permute(2, 1, 0)
    for e in range(n_exp):
        top_k_pos, token_idx = torch.where(expert_mask[e])
        x = hidden_states[token_idx]
        hooks.call((up, e), x)
        bias = getattr(self, f"{up}_bias")[e] if has_bias else None
        h = _linear(x, getattr(self, up)[e], bias, transposed)
        h = self._apply_gate(h) if gated and hasattr(self, "_apply_gate") else (
            _default_gate(self, h) if gated else self.act_fn(h))
        hooks.call(("down_proj", e), h)
        bias = self.down_proj_bias[e] if has_bias else None
        h = _linear(h, self.down_proj[e], bias, transposed)
        if getattr(self, "has_post_expert_norm", False):
            h = self.post_expert_norm(h)
        h = h * top_k_weights[token_idx, top_k_pos, None]
        final.index_add_(0, token_idx, h.to(final.dtype))
    return final


def _default_gate(self: nn.Module, h: torch.Tensor) -> torch.Tensor:
    gate, up = h.chunk(2, dim=-1)
    return self.act_fn(gate) * up


# -- discovery --------------------------------------------------------------------------------

def _matches(name: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) or fnmatch.fnmatchcase(name, f"*{p}") for p in patterns)


def _is_router(name: str, module: nn.Module, parents: dict[str, nn.Module]) -> bool:
    """The layer that scores the experts (never pruned or quantized by calibration)."""
    parent_name, _, leaf = name.rpartition(".")
    if any("router" in part for part in name.split(".")):
        return True
    parent = parents.get(parent_name)
    has_experts = parent is not None and hasattr(parent, "experts")
    return has_experts and (leaf == "gate" or leaf.endswith("_gate"))


def in_stacks(name: str, stacks: list[BlockStack]) -> bool:
    for s in stacks:
        prefix = s.name + "." if s.name else ""
        if name.startswith(prefix) and name[len(prefix):].split(".", 1)[0].isdigit():
            return True
    return False


def find_targets(model: nn.Module, stacks: list[BlockStack], targets: list[str] | None = None,
                 exclude: list[str] | None = None, *, experts: bool = True) -> dict[str, Target]:
    """``{name: target}``: every Linear / Conv1D (and fused expert matrix) inside the blocks, or,
    with ``targets`` (globs), those matching anywhere; minus ``exclude`` and router layers.

    Fused expert matrices are named ``<experts module>.<tensor>.<expert>`` (e.g.
    ``model.layers.0.mlp.experts.down_proj.3``).
    """
    out: dict[str, Target] = {}
    modules = dict(model.named_modules())

    def want(name: str) -> bool:
        if targets:
            ok = _matches(name, targets)
        else:
            ok = in_stacks(name, stacks)
        return ok and not (exclude and _matches(name, exclude))

    for name, module in modules.items():
        if isinstance(module, nn.Linear) or (Conv1D and isinstance(module, Conv1D)):
            if _is_router(name, module, modules) or not want(name):
                continue
            out[name] = module if isinstance(module, nn.Linear) else Conv1DTarget(module)
        elif experts and is_fused_experts(module):
            for param in (_up_name(module), "down_proj"):
                tensor = getattr(module, param)
                for e in range(tensor.shape[0]):
                    full = f"{name}.{param}.{e}"
                    if want(full):
                        out[full] = ExpertTarget(module, param, e)
    if not out:
        example = f"{stacks[0].block_name(0)}.mlp.up_proj" if stacks else "model.layers.0.mlp.up_proj"
        raise UsageError(f"no Linear module matches targets={targets} exclude={exclude}: module names look "
                         f"like {example}")
    return out


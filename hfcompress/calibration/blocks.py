"""Find a model's repeated blocks from the model itself — never from a list of model types.

The blocks are the ``nn.ModuleList`` items whose classes transformers names in the model's
``_no_split_modules`` (the units accelerate never splits across devices); if a model names
none, the longest ``ModuleList`` of identical modules that hold parameters. Encoder–decoder
models give two stacks (encoder first, then the decoder, whose blocks take
``encoder_hidden_states``)::

    from hfcompress.calibration.blocks import find_block_stacks
    for stack in find_block_stacks(model):
        print(stack.name, stack.role, len(stack.blocks))   # model.layers decoder 30
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from torch import nn

from ..errors import UnsupportedError


@dataclass
class BlockStack:
    """One stack of repeated blocks: ``name`` is its module path (e.g. ``model.layers``)."""

    name: str
    blocks: nn.ModuleList
    #: "encoder" / "decoder" for encoder–decoder models; otherwise "decoder" for models that
    #: generate (causal LMs) and "encoder" for the rest (BERT, ViT, ...).
    role: str

    def block_name(self, i: int) -> str:
        return f"{self.name}.{i}" if self.name else str(i)

    def __len__(self) -> int:
        return len(self.blocks)

    def __iter__(self) -> Iterator[nn.Module]:
        return iter(self.blocks)


def _no_split_classes(model: nn.Module) -> set[str]:
    names: set[str] = set()
    for module in model.modules():  # composite models name their sub-models' blocks there too
        names.update(getattr(module, "_no_split_modules", None) or [])
    return names


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def _outermost(found: list[tuple[str, nn.ModuleList]]) -> list[tuple[str, nn.ModuleList]]:
    """Drop stacks nested inside another stack's blocks (e.g. experts inside a decoder block)."""
    names = [n for n, _ in found]
    return [(n, m) for n, m in found if not any(o != n and (n.startswith(o + ".") or not o) for o in names)]


def _role(model: nn.Module, name: str) -> str:
    config = getattr(model, "config", None)
    if getattr(config, "is_encoder_decoder", False):
        encoder = model.get_encoder() if hasattr(model, "get_encoder") else None
        if encoder is not None:
            enc_ids = {id(m) for m in encoder.modules()}
            stack = model.get_submodule(name) if name else model
            return "encoder" if id(stack) in enc_ids else "decoder"
        return "decoder" if "decoder" in name.split(".") else "encoder"
    can_generate = getattr(model, "can_generate", None)
    if callable(can_generate) and can_generate():
        return "decoder"
    return "decoder" if getattr(config, "is_decoder", False) else "encoder"


def find_block_stacks(model: nn.Module) -> list[BlockStack]:
    """The model's stacks of repeated blocks in execution order (encoder before decoder).

    Raises :class:`~hfcompress.errors.UnsupportedError` (one line) when the model has none.
    """
    classes = _no_split_classes(model)
    lists = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    found = [(n, m) for n, m in lists if classes and all(type(b).__name__ in classes for b in m)]
    if not found:
        uniform = [(n, m) for n, m in lists
                   if len({type(b) for b in m}) == 1 and len(m) >= 2 and _has_params(m)]
        if uniform:
            longest = max(len(m) for _, m in uniform)
            found = [next((n, m) for n, m in uniform if len(m) == longest)]
    found = _outermost(found)
    if not found:
        raise UnsupportedError(f"{type(model).__name__} has no stack of repeated blocks (no ModuleList of "
                               "the classes in its _no_split_modules, nor of identical modules): block-wise "
                               "methods need one")
    stacks = [BlockStack(n, m, _role(model, n)) for n, m in found]
    # Encoder stacks run before decoder stacks; otherwise keep definition order.
    return sorted(stacks, key=lambda s: 0 if s.role == "encoder" and len(stacks) > 1 else 1)


def block_index(name: str, stacks: list[BlockStack]) -> tuple[int, int] | None:
    """``(stack number, block number)`` of a module named ``name``, or None outside the blocks."""
    for si, stack in enumerate(stacks):
        prefix = stack.name + "." if stack.name else ""
        if name.startswith(prefix):
            head = name[len(prefix):].split(".", 1)[0]
            if head.isdigit() and int(head) < len(stack.blocks):
                return si, int(head)
    return None

"""Building a student model for distillation.

Three ways::

    from hfcompress.distill.student import student_from_layers, student_from_config, student_from_pretrained

    student, kept = student_from_layers(teacher, 15)          # every other layer of a 30-layer teacher
    student = student_from_config(teacher, num_hidden_layers=4, hidden_size=256)   # random init
    student = student_from_pretrained("out/smol-minitron")    # a structurally pruned folder

``student_from_layers`` is DistilBERT-style initialisation: a copy of the teacher
(embeddings, norms, head) that keeps a subset of the blocks of every stack (or of the decoder
only), rebuilt from the rewritten config (depth, ``layer_types`` and other per-layer lists,
layer indices), so it reloads with ``from_pretrained``. The default choice of blocks keeps the
teacher's layer pattern (sliding-window / global attention layers in proportion).
"""

from __future__ import annotations

import copy
from typing import Any

from torch import nn

from ..errors import UsageError


def _num_layers(config: Any) -> int:
    for name in ("num_hidden_layers", "n_layers", "num_layers", "n_layer"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    raise UsageError(f"cannot tell the number of layers of {type(config).__name__}")


def find_layer_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The ``nn.ModuleList`` that holds the model's transformer blocks (name, module)."""
    n = _num_layers(model.config)
    candidates = [(name, m) for name, m in model.named_modules() if isinstance(m, nn.ModuleList) and len(m) == n]
    if not candidates:
        raise UsageError(f"cannot find the list of {n} layers in {type(model).__name__}: "
                         "build the student with student_from_config instead")
    # the shallowest one (model.layers, not a nested per-layer list)
    return min(candidates, key=lambda item: item[0].count("."))


def _even(indices: list[int], count: int) -> list[int]:
    """``count`` evenly spaced entries of ``indices`` (every k-th from the first when it divides)."""
    n = len(indices)
    if count <= 0:
        return []
    if count >= n:
        return list(indices)
    if n % count == 0:
        return indices[:: n // count]
    if count == 1:
        return [indices[-1]]
    return sorted({indices[round(i * (n - 1) / (count - 1))] for i in range(count)})


def select_layers(total: int, keep: int | list[int], layer_types: list[Any] | None = None) -> list[int]:
    """Indices of the layers to keep: an explicit list, or ``keep`` layers chosen evenly.

    When ``total`` is a multiple of ``keep`` this is every ``total/keep``-th layer from the
    first (15 of 30 -> 0, 2, ..., 28: "every other layer"); otherwise evenly spaced from the
    first to the last layer. With ``layer_types`` (one entry per layer, e.g. sliding-window /
    global attention) the kept layers keep the pattern's proportions: each kind gets its share
    of ``keep`` (at least one when there is room), spread evenly over that kind's layers — five
    sliding-window layers then a global one, halved, keep two sliding-window layers and the global.
    """
    if isinstance(keep, (list, tuple)):
        idx = sorted(set(int(i) for i in keep))
        if not idx or idx[0] < 0 or idx[-1] >= total:
            raise UsageError(f"student layers {list(keep)} must be distinct indices in [0, {total - 1}]")
        return idx
    keep = int(keep)
    if not 1 <= keep <= total:
        raise UsageError(f"the student must keep between 1 and {total} layers, got {keep}: "
                         f"e.g. --student-layers {max(1, total // 2)}")
    kinds: dict[Any, list[int]] = {}
    if isinstance(layer_types, (list, tuple)) and len(layer_types) == total:
        for i, t in enumerate(layer_types):
            kinds.setdefault(t, []).append(i)
    if len(kinds) < 2:
        return _even(list(range(total)), keep)
    share = {k: keep * len(v) / total for k, v in kinds.items()}
    count = {k: min(len(kinds[k]), max(1 if keep >= len(kinds) else 0, int(share[k]))) for k in kinds}
    while sum(count.values()) > keep:  # the at-least-one rule overshot: take from the largest
        k = max((k for k in count if count[k] > 1), key=lambda k: count[k])
        count[k] -= 1
    while sum(count.values()) < keep:  # largest remainder first
        k = max((k for k in kinds if count[k] < len(kinds[k])), key=lambda k: share[k] - count[k])
        count[k] += 1
    return sorted(i for k, idx in kinds.items() for i in _even(idx, count[k]))


def student_from_layers(teacher: nn.Module, keep: int | list[int], *, stacks: str = "all"
                        ) -> tuple[nn.Module, list[int] | dict[str, list[int]]]:
    """A copy of ``teacher`` keeping the blocks ``keep`` (a count or explicit indices) of each stack.

    Works on any model whose blocks :func:`~hfcompress.calibration.blocks.find_block_stacks`
    finds. ``stacks="all"`` cuts every stack (encoder and decoder of an encoder–decoder model),
    ``"decoder"`` only the decoder stack(s). The student is rebuilt from the teacher's rewritten
    config (depth, per-layer lists such as ``layer_types``, layer indices) with the teacher's
    weights, so ``from_pretrained`` reloads it as is. Returns ``(student, kept)``: ``kept`` is the
    list of kept indices for one stack, ``{stack name: indices}`` for several. The teacher is not
    modified.
    """
    from ..calibration.blocks import find_block_stacks
    from ..layouts.discover import layout_for
    from ..layouts.surgery import keep_layers_in_config, rebuild, renumber_blocks

    if stacks not in ("all", "decoder"):
        raise UsageError(f"stacks must be 'all' or 'decoder', got {stacks!r}")
    found = find_block_stacks(teacher)
    chosen = [s for s in found if stacks == "all" or s.role == "decoder"]
    if not chosen:
        raise UsageError(f"{type(teacher).__name__} has no decoder stack: use stacks='all'")
    config = copy.deepcopy(teacher.config)
    state = dict(teacher.state_dict())
    kept_all: dict[str, list[int]] = {}
    for stack in chosen:
        total = len(stack)
        types = getattr(_text_config(teacher.config), "layer_types", None) if len(found) == 1 else None
        kept = select_layers(total, keep, types)
        field = layout_for(stack.blocks[0], teacher.config, stack.role)[0].fields.layers
        state = renumber_blocks(state, stack.name, kept)
        keep_layers_in_config(config, field, kept, total, per_layer_lists=len(found) == 1)
        kept_all[stack.name] = kept
    student = rebuild(teacher, config, state)
    student.train(teacher.training)
    return student, (next(iter(kept_all.values())) if len(kept_all) == 1 else kept_all)


def _text_config(config: Any) -> Any:
    getter = getattr(config, "get_text_config", None)
    return getter() if callable(getter) else config


def student_from_config(teacher_or_config: Any, *, task_model_cls: Any = None, **overrides: Any) -> nn.Module:
    """A randomly initialised model: the teacher's config with ``overrides`` (smaller width/depth).

    ``student_from_config(teacher, num_hidden_layers=4, hidden_size=256, intermediate_size=512,
    num_attention_heads=4)``. The class is the teacher's (or ``task_model_cls``).
    """
    config = getattr(teacher_or_config, "config", teacher_or_config)
    config = copy.deepcopy(config)
    text = _text_config(config)
    for key, value in overrides.items():
        if not hasattr(text, key):
            raise UsageError(f"student_config key {key!r} is not a field of {type(text).__name__}: "
                             "use one of its attributes, e.g. num_hidden_layers, hidden_size")
        setattr(text, key, value)
    if "num_hidden_layers" in overrides and isinstance(getattr(text, "layer_types", None), list):
        types = text.layer_types
        text.layer_types = [types[i % len(types)] for i in range(overrides["num_hidden_layers"])]
    hidden, heads = getattr(text, "hidden_size", None), getattr(text, "num_attention_heads", None)
    if isinstance(hidden, int) and isinstance(heads, int) and ("hidden_size" in overrides or
                                                                "num_attention_heads" in overrides):
        if hidden % heads:
            raise UsageError(f"hidden_size {hidden} is not a multiple of num_attention_heads {heads}")
        if getattr(text, "head_dim", None) is not None:
            text.head_dim = hidden // heads
        kv = getattr(text, "num_key_value_heads", None)
        if isinstance(kv, int) and heads % kv:
            text.num_key_value_heads = heads
    cls = task_model_cls or (type(teacher_or_config) if isinstance(teacher_or_config, nn.Module) else None)
    if cls is None:
        from transformers import AutoModelForCausalLM

        cls = AutoModelForCausalLM
    if hasattr(cls, "_from_config"):
        return cls._from_config(config)
    return cls.from_config(config)


def student_from_pretrained(name_or_path: str, **load_kwargs: Any) -> Any:
    """Load a student (e.g. a structurally pruned model folder, for prune -> distill) as a bundle."""
    from ..loading import load

    return load(name_or_path, **load_kwargs)

"""Building a student model for distillation.

Three ways::

    from hfcompress.distill.student import student_from_layers, student_from_config, student_from_pretrained

    student, kept = student_from_layers(teacher, 15)          # every other layer of a 30-layer teacher
    student = student_from_config(teacher, num_hidden_layers=4, hidden_size=256)   # random init
    student = student_from_pretrained("out/smol-minitron")    # a structurally pruned folder

``student_from_layers`` is DistilBERT-style initialisation: a copy of the teacher
(embeddings, norms, head) that keeps a subset of its layers, with ``num_hidden_layers``,
``layer_types`` and each attention module's ``layer_idx`` renumbered.
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


def select_layers(total: int, keep: int | list[int]) -> list[int]:
    """Indices of the layers to keep: an explicit list, or ``keep`` evenly spaced layers.

    When ``total`` is a multiple of ``keep`` this is every ``total/keep``-th layer from the
    first (15 of 30 -> 0, 2, ..., 28: "every other layer"); otherwise evenly spaced from the
    first to the last layer.
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
    if total % keep == 0:
        step = total // keep
        return list(range(0, total, step))
    if keep == 1:
        return [0]
    return sorted({round(i * (total - 1) / (keep - 1)) for i in range(keep)})


def student_from_layers(teacher: nn.Module, keep: int | list[int]) -> tuple[nn.Module, list[int]]:
    """A copy of ``teacher`` keeping the layers ``keep`` (a count or explicit indices).

    Returns ``(student, kept_indices)``. The teacher is not modified.
    """
    total = _num_layers(teacher.config)
    kept = select_layers(total, keep)
    student = copy.deepcopy(teacher)
    path, _ = find_layer_list(student)
    parent_name, _, attr = path.rpartition(".")
    parent = student.get_submodule(parent_name) if parent_name else student
    old = getattr(parent, attr)
    new = nn.ModuleList([old[i] for i in kept])
    setattr(parent, attr, new)
    for new_idx, layer in enumerate(new):
        for module in layer.modules():
            if hasattr(module, "layer_idx") and isinstance(module.layer_idx, int):
                module.layer_idx = new_idx
            if hasattr(module, "layer_id") and isinstance(module.layer_id, int):
                module.layer_id = new_idx
    _update_depth(student.config, kept)
    return student, kept


def _update_depth(config: Any, kept: list[int]) -> None:
    for cfg in {id(c): c for c in (config, _text_config(config))}.values():
        for name in ("num_hidden_layers", "n_layers", "num_layers", "n_layer"):
            if isinstance(getattr(cfg, name, None), int):
                setattr(cfg, name, len(kept))
                break
        layer_types = getattr(cfg, "layer_types", None)
        if isinstance(layer_types, (list, tuple)) and len(layer_types) > max(kept):
            cfg.layer_types = [layer_types[i] for i in kept]
        for name in ("max_window_layers",):  # Qwen2: layers below this index use sliding window
            value = getattr(cfg, name, None)
            if isinstance(value, int):
                setattr(cfg, name, sum(1 for i in kept if i < value))


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

"""The ``distill`` and ``finetune`` verbs.

::

    import hfcompress
    from hfcompress.distill import KDConfig, LoraFinetuneConfig

    student = hfcompress.distill(teacher_model, KDConfig(student_layers=15), tokenizer=tok)
    recovered = hfcompress.distill.finetune(pruned_bundle, LoraFinetuneConfig(r=16))
"""

from __future__ import annotations

from typing import Any

from ..loading import ModelBundle
from ..stage import StageContext, as_bundle, run_stage
from .base import DistillConfig, FinetuneConfig
from .kd import KDConfig, apply_kd


def distill(model: Any, config: DistillConfig | None = None, *, tokenizer: Any = None,
            student: Any = None, **fields: Any) -> Any:
    """Distill ``model`` (the teacher: PreTrainedModel, bundle or repo id) into a student.

    ``config`` is a :class:`~hfcompress.distill.kd.KDConfig` (or built from ``fields``,
    e.g. ``distill(teacher, student_layers=15, training={"max_steps": 100})``);
    ``student`` optionally gives a ready student model. Returns the trained student (a
    bundle when given a bundle or a repo id, else the model).
    """
    if config is None:
        if student is not None and not any(k in fields for k in ("student", "student_layers", "student_config")):
            fields["student"] = "given"
        config = KDConfig(**fields)
    bundle = as_bundle(model, tokenizer)
    if student is not None:
        apply_kd(bundle, config, StageContext(), student_model=student)
    else:
        run_stage(bundle, config)
    return bundle if isinstance(model, (ModelBundle, str)) else bundle.model


def finetune(model: Any, config: FinetuneConfig, *, tokenizer: Any = None) -> Any:
    """Recovery fine-tuning (LoRA / QLoRA) of ``model``; returns the merged model (or bundle)."""
    bundle = as_bundle(model, tokenizer)
    run_stage(bundle, config)
    return bundle if isinstance(model, (ModelBundle, str)) else bundle.model

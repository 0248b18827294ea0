"""Bases of the ``distill`` and ``finetune`` families, and their verbs.

::

    import hfcompress
    from hfcompress.distill import KDConfig, LoraFinetuneConfig

    student = hfcompress.distill(teacher_model, KDConfig(student_layers=15), tokenizer=tok)
    recovered = hfcompress.distill.finetune(pruned_bundle, LoraFinetuneConfig(r=16))
"""

from __future__ import annotations

from typing import Any, ClassVar

from ..config import StageConfig


class DistillConfig(StageConfig):
    """Base of every distillation method config."""

    family: ClassVar[str] = "distill"


class FinetuneConfig(StageConfig):
    """Base of every recovery fine-tuning method config (family ``finetune``)."""

    family: ClassVar[str] = "finetune"


def distill(model: Any, config: DistillConfig | None = None, *, tokenizer: Any = None,
            student: Any = None, **fields: Any) -> Any:
    """Distill ``model`` (the teacher: PreTrainedModel, bundle or repo id) into a student.

    ``config`` is a :class:`~hfcompress.distill.kd.KDConfig` (or built from ``fields``,
    e.g. ``distill(teacher, student_layers=15, training={"max_steps": 100})``);
    ``student`` optionally gives a ready student model. Returns the trained student (a
    bundle when given a bundle or a repo id, else the model).
    """
    from ..loading import ModelBundle
    from ..stage import StageContext, as_bundle, run_stage
    from .kd import KDConfig, apply_kd

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
    from ..loading import ModelBundle
    from ..stage import as_bundle, run_stage

    bundle = as_bundle(model, tokenizer)
    run_stage(bundle, config)
    return bundle if isinstance(model, (ModelBundle, str)) else bundle.model

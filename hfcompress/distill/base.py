"""Bases of the ``distill`` and ``finetune`` families (the verbs are in :mod:`.verbs`).

A method is a config class deriving from one of these plus ``@register(Config)`` on its
``apply(bundle, config, ctx: StageContext)`` (see :mod:`hfcompress.distill.kd`).
"""

from __future__ import annotations

from typing import ClassVar

from ..config import StageConfig


class DistillConfig(StageConfig):
    """Base of every distillation method config."""

    family: ClassVar[str] = "distill"


class FinetuneConfig(StageConfig):
    """Base of every recovery fine-tuning method config (family ``finetune``)."""

    family: ClassVar[str] = "finetune"

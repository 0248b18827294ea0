"""Base of the distill family."""

from __future__ import annotations

from typing import ClassVar

from ..config import StageConfig


class DistillConfig(StageConfig):
    """Base of every distillation / recovery method config."""

    family: ClassVar[str] = "distill"

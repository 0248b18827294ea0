"""Base of the evaluate family."""

from __future__ import annotations

from typing import ClassVar

from ..config import StageConfig


class EvaluateConfig(StageConfig):
    """Base of every evaluation method config."""

    family: ClassVar[str] = "evaluate"

"""Distillation and recovery fine-tuning."""

from .base import DistillConfig

__all__ = ["DistillConfig"]

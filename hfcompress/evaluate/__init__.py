"""Evaluation: perplexity, task metrics, efficiency."""

from .base import EvaluateConfig

__all__ = ["EvaluateConfig"]

"""Pruning: ``prune(model, <Method>Config(...))``. Methods register themselves on import."""

from .base import PruneConfig, prune

__all__ = ["PruneConfig", "prune"]

"""Base of the prune family."""

from __future__ import annotations

from typing import Any, ClassVar

from ..config import StageConfig


class PruneConfig(StageConfig):
    """Base of every pruning method config."""

    family: ClassVar[str] = "prune"


def prune(model: Any, config: PruneConfig, *, tokenizer: Any = None) -> Any:
    """Prune ``model`` (a PreTrainedModel, a :class:`ModelBundle`, or a repo id) in place.

    Returns the same kind of object it was given (a rebuilt model for structured methods).
    """
    from ..loading import ModelBundle
    from ..pipeline import as_bundle, run_stage

    bundle = as_bundle(model, tokenizer)
    run_stage(bundle, config)
    return bundle if isinstance(model, ModelBundle) or isinstance(model, str) else bundle.model

"""Base config classes shared by every stage family.

A method's config is a pydantic model: the Python API takes it, a YAML recipe is a
list of them serialised (``{family: {method: ..., field: value}}``). Unknown keys
are errors (``extra="forbid"``)::

    from hfcompress.prune import WandaConfig
    cfg = WandaConfig(sparsity=0.5, calibration=CalibrationConfig(samples=32))
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field


class StrictModel(BaseModel):
    """Pydantic base: unknown keys and wrong types are errors; assignment is validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class StageConfig(StrictModel):
    """Base of every method config. Subclasses set ``family`` and a ``method`` literal."""

    family: ClassVar[str] = ""
    method: str


class CalibrationConfig(StrictModel):
    """Calibration text: a Hub dataset id (or a local dataset folder), tokenized into windows.

    ``samples`` windows of ``seq_len`` tokens are drawn at seeded random offsets from
    the concatenated, tokenized text (as the GPTQ / Wanda / SparseGPT papers do).
    """

    dataset: str = "fixtures/enwiki-sample"
    config: str | None = None
    split: str = "train"
    text_column: str = "text"
    samples: int = Field(32, ge=1, le=100_000)
    seq_len: int = Field(512, ge=8, le=131_072)
    seed: int = 0
    revision: str | None = None

"""Distillation and recovery fine-tuning.

* ``distill`` family, method ``kd``: :class:`KDConfig` — train a student (cut from the
  teacher's layers, built from a config, or loaded, e.g. a pruned folder) with
  :class:`DistillationTrainer`.
* ``finetune`` family, methods ``lora`` / ``qlora``: :class:`LoraFinetuneConfig`,
  :class:`QLoraFinetuneConfig` — peft recovery fine-tuning, merged back with the
  sparsity mask preserved.

Heavy imports (torch, transformers, peft) happen on first use of the trainer / stages.
"""

from __future__ import annotations

import importlib
from typing import Any

from .base import DistillConfig, FinetuneConfig
from .data import TrainDataConfig
from .kd import KDConfig
from .recovery import LoraFinetuneConfig, QLoraFinetuneConfig
from .verbs import distill, finetune

__all__ = ["DistillConfig", "DistillationTrainer", "FinetuneConfig", "KDConfig", "LoraFinetuneConfig",
           "QLoraFinetuneConfig", "TrainDataConfig", "distill", "finetune"]


def __getattr__(name: str) -> Any:
    if name == "DistillationTrainer":
        return importlib.import_module(".trainer", __name__).DistillationTrainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


from .._verbs import make_package_callable  # noqa: E402

make_package_callable(__name__, "distill")

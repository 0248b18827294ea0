"""Pruning: ``prune(model, <Method>Config(...))``. Methods register themselves on import.

Methods: ``threshold``, ``magnitude``, ``taylor``, ``wanda``, ``sparsegpt`` (unstructured and,
except threshold, N:M); ``magnitude`` / ``wanda`` / ``taylor`` also prune structurally
(``structured="ffn" | "heads" | "layers"``) and rebuild a smaller model. See docs/PRUNING.md.
"""

from .base import PruneConfig, prune
from .magnitude import MagnitudeConfig
from .sparsegpt import SparseGPTConfig
from .taylor import TaylorConfig
from .threshold import ThresholdConfig
from .wanda import WandaConfig

__all__ = ["MagnitudeConfig", "PruneConfig", "SparseGPTConfig", "TaylorConfig", "ThresholdConfig",
           "WandaConfig", "prune"]


from .._verbs import make_package_callable  # noqa: E402
from ..registry import import_submodules  # noqa: E402

import_submodules(__name__)  # every method file registers itself: adding one needs no edit here
make_package_callable(__name__, "prune")

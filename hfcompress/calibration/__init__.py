"""The calibration layer: block discovery, per-block input capture, the sequential block-by-block
scheduler, calibration data, activation statistics and the second-order (OBS) helpers that every
calibrated method (Wanda, SparseGPT, OWL, structured importance, GPTQ-style quantizers) hooks.

Below the method families: it imports nothing from ``prune``, ``quantize``, ``distill`` or above.
"""

from .blocks import BlockStack, block_index, find_block_stacks
from .data import (
           calibration_windows,
           describe_batch,
           num_samples,
           release_free_memory,
           sample_length,
           take_samples,
)
from .modality import media_inputs, modality_of
from .second_order import Hessians, fix_dead, inverse_cholesky_upper, obs_quantize
from .sequential import AUTO_CHUNK_TOKENS, DenseInputs, Sequential
from .stats import SquaredNorms, squared_norms
from .targets import Conv1DTarget, ExpertTarget, add_input_hook, find_targets

__all__ = ["AUTO_CHUNK_TOKENS", "BlockStack", "Conv1DTarget", "DenseInputs", "ExpertTarget", "Hessians", "Sequential",
           "SquaredNorms", "add_input_hook", "block_index", "calibration_windows", "describe_batch",
           "find_block_stacks", "find_targets", "fix_dead", "inverse_cholesky_upper", "media_inputs", "modality_of",
           "num_samples", "obs_quantize", "release_free_memory", "sample_length", "squared_norms", "take_samples"]

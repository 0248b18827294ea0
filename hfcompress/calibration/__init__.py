"""The calibration layer: block discovery, input capture, sequential block-by-block runs and the
second-order helpers every calibrated method (Wanda, SparseGPT, OWL, GPTQ-style quantizers) hooks.

Below the method families: it imports nothing from ``prune``, ``quantize``, ``distill`` or above.
"""

from .blocks import BlockStack, block_index, find_block_stacks

__all__ = ["BlockStack", "block_index", "find_block_stacks"]

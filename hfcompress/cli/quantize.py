"""CLI: ``hfcompress quantize MODEL --method METHOD --output DIR``.

::

    hfcompress quantize HuggingFaceTB/SmolLM2-135M-Instruct --method bnb-nf4 --double-quant -o out/nf4
    hfcompress quantize MODEL --method gptq --bits 4 --group-size 128 -o out/gptq-int4
    hfcompress quantize MODEL --method rtn --bits 8 --group-size -1 --no-symmetric -o out/rtn-int8
    hfcompress quantize MODEL --method quanto-int4 --group-size 64 -o out/int4
    hfcompress quantize MODEL --method calibrated-nf4 --calibration fixtures/enwiki-sample -o out/cnf4

``--method`` and the quantization flags are generated from the registered quantize configs
(:func:`hfcompress.cli.common.add_method_args`); a flag the chosen method has no field for
is refused with a one-line error.
"""

from __future__ import annotations

import argparse

from ..config import StageConfig
from .common import add_stage_command, method_config, run_stages


def build_config(args: argparse.Namespace) -> StageConfig:
    """The quantize config the flags describe (kept for callers of the earlier name)."""
    return method_config(args)


def _run(args: argparse.Namespace) -> int:
    return run_stages(args, [method_config(args)], name=f"quantize-{args.method}")


def register(sub) -> None:
    add_stage_command(
        sub, "quantize", help="quantize a model (bitsandbytes, optimum-quanto, GPTQ, calibrated NF4/int4)",
        description="Quantize a model's Linear weights and save a reloadable checkpoint.",
        method_help="bnb-*: bitsandbytes; quanto-*: optimum-quanto; rtn / gptq: round-to-nearest / our GPTQ, "
                    "written as compressed-tensors pack-quantized; gptq-optimum: optimum.gptq (needs gptqmodel); "
                    "calibrated-*: our GPTQ-style error correction stored as NF4 / int4", run=_run)

"""CLI: ``hfcompress quantize MODEL --method METHOD --output DIR``.

::

    hfcompress quantize HuggingFaceTB/SmolLM2-135M-Instruct --method bnb-nf4 --double-quant -o out/nf4
    hfcompress quantize MODEL --method gptq --bits 4 --group-size 128 -o out/gptq-int4
    hfcompress quantize MODEL --method rtn --bits 8 --group-size -1 --asymmetric -o out/rtn-int8
    hfcompress quantize MODEL --method quanto-int4 --group-size 64 -o out/int4
    hfcompress quantize MODEL --method calibrated-nf4 --calibration fixtures/enwiki-sample -o out/cnf4
"""

from __future__ import annotations

import argparse

from ..errors import UsageError
from .common import add_calibration_args, add_model_args, add_output_args, calibration_from_args, run_stages

METHODS = ("bnb-int8", "bnb-nf4", "bnb-fp4", "quanto-int8", "quanto-int4", "quanto-int2", "quanto-float8",
           "rtn", "gptq", "gptq-optimum", "calibrated-nf4", "calibrated-int4")

# flag -> (config field, methods that accept it)
_FLAGS = {
    "double_quant": ("double_quant", {"bnb-nf4", "bnb-fp4", "calibrated-nf4"}),
    "compute_dtype": ("compute_dtype", {"bnb-nf4", "bnb-fp4", "calibrated-nf4"}),
    "threshold": ("threshold", {"bnb-int8"}),
    "group_size": ("group_size", {"quanto-int4", "quanto-int2", "rtn", "gptq", "gptq-optimum", "calibrated-int4"}),
    "bits": ("bits", {"rtn", "gptq", "gptq-optimum"}),
    "asymmetric": ("symmetric", {"rtn", "gptq"}),
    "act_order": ("act_order", {"gptq"}),
    "scale_dtype": ("scale_dtype", {"quanto-int8", "quanto-int4", "quanto-int2", "quanto-float8"}),
    "damp": ("damp", {"gptq", "calibrated-nf4", "calibrated-int4"}),
}
_CALIBRATED = {"gptq", "gptq-optimum", "calibrated-nf4", "calibrated-int4"}


def build_config(args: argparse.Namespace):
    from ..registry import get_method

    method = args.method
    cls = get_method("quantize", method).config_cls
    params: dict = {"skip_modules": list(args.skip_modules or [])}
    for flag, (field, allowed) in _FLAGS.items():
        value = getattr(args, flag, None)
        if value is None or value is False:
            continue
        if method not in allowed:
            opt = "--" + flag.replace("_", "-")
            if flag == "compute_dtype" and method == "bnb-int8":
                raise UsageError("--compute-dtype does not apply to bnb-int8 (LLM.int8 multiplies in int8 with fp16 "
                                 "outliers): drop it, or use --method bnb-nf4 / bnb-fp4")
            raise UsageError(f"{opt} does not apply to --method {method} (it applies to "
                             f"{', '.join(sorted(allowed))})")
        params[field] = (not value) if flag == "asymmetric" else value
    calibration = calibration_from_args(args)
    if calibration is not None:
        if method not in _CALIBRATED:
            raise UsageError(f"--calibration applies to calibrated methods ({', '.join(sorted(_CALIBRATED))}), "
                             f"not to {method}")
        params["calibration"] = calibration
    from pydantic import ValidationError

    try:
        return cls(**params)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise UsageError(f"--{'-'.join(map(str, err['loc'])).replace('_', '-')}: {err['msg']}") from None


def _run(args: argparse.Namespace) -> int:
    config = build_config(args)
    return run_stages(args, [config], name=f"quantize-{args.method}")


def register(sub) -> None:
    p = sub.add_parser("quantize", help="quantize a model (bitsandbytes, optimum-quanto, GPTQ, calibrated NF4/int4)",
                       description="Quantize a model's Linear weights and save a reloadable checkpoint.")
    add_model_args(p)
    g = p.add_argument_group("quantization")
    g.add_argument("--method", required=True, choices=METHODS,
                   help="rtn / gptq: int4 / int8 weights (round-to-nearest / our GPTQ) saved as compressed-tensors "
                        "pack-quantized (loads with plain transformers + compressed-tensors, and vLLM); bnb-*: "
                        "bitsandbytes; quanto-*: optimum-quanto; gptq-optimum: optimum.gptq (needs gptqmodel); "
                        "calibrated-*: our GPTQ-style error correction stored as NF4 / int4")
    g.add_argument("--skip-modules", nargs="+", default=None, metavar="NAME",
                   help="modules (names or patterns like '*.down_proj') kept in full precision")
    g.add_argument("--double-quant", action="store_true", help="4-bit bnb: also quantize the absmax scales")
    g.add_argument("--compute-dtype", choices=["float32", "float16", "bfloat16"], default=None,
                   help="4-bit bnb: dtype of the dequantized matmul")
    g.add_argument("--threshold", type=float, default=None, help="bnb-int8: LLM.int8 outlier threshold (6.0)")
    g.add_argument("--group-size", type=int, default=None, help="inputs per scale group (rtn, gptq: default 128, -1 = "
                                                                  "per channel; quanto int4/int2, calibrated-int4)")
    g.add_argument("--bits", type=int, default=None, help="rtn / gptq: weight bits (4 or 8); gptq-optimum: 2, 3, 4, 8")
    sym = g.add_mutually_exclusive_group()
    sym.add_argument("--symmetric", dest="asymmetric", action="store_false", default=False,
                     help="rtn / gptq: symmetric grid, scale only (default)")
    sym.add_argument("--asymmetric", dest="asymmetric", action="store_true",
                     help="rtn / gptq: asymmetric grid (scale + zero point per group)")
    g.add_argument("--act-order", action="store_true", help="gptq: columns by decreasing Hessian diagonal")
    g.add_argument("--scale-dtype", choices=["float16", "float32"], default=None, help="quanto: dtype of scales")
    g.add_argument("--damp", type=float, default=None, help="calibrated-*: Hessian dampening (0.01)")
    add_calibration_args(p)
    add_output_args(p)
    p.set_defaults(func=_run)

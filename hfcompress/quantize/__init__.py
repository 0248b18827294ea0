"""Quantization: ``quantize(model, <Method>Config(...))``. Backends register on import.

==================  ===========  =============================================  ==============
method              kind         scheme                                         backend
==================  ===========  =============================================  ==============
bnb-int8            uniform      LLM.int8: int8 absmax per row + fp16 outliers  bitsandbytes
bnb-nf4             non-uniform  NF4 codebook, absmax per 64                    bitsandbytes
bnb-fp4             non-uniform  FP4 (e2m1) codebook, absmax per 64             bitsandbytes
quanto-int8         uniform      int8 absmax per row                            optimum-quanto
quanto-int4/int2    uniform      affine per group                               optimum-quanto
quanto-float8       non-uniform  float8 e4m3 per row                            optimum-quanto
rtn                 uniform      int4/int8 round-to-nearest, group / channel    ours -> compressed-tensors
gptq                uniform      int4/int8 GPTQ (our OBS error correction)      ours -> compressed-tensors
gptq-optimum        uniform      GPTQ int (needs gptqmodel, torch>=2.14.1)      optimum.gptq
calibrated-nf4      non-uniform  our GPTQ-style error correction onto NF4       ours -> bnb NF4
calibrated-int4     uniform      our GPTQ-style error correction onto int4      ours -> quanto
==================  ===========  =============================================  ==============
"""

from .base import QuantizeConfig, quantize
from .bnb import BnbFP4Config, BnbInt8Config, BnbNF4Config
from .calibrated import CalibratedInt4Config, CalibratedNF4Config
from .gptq import GPTQConfig, GPTQOptimumConfig
from .quanto import QuantoFloat8Config, QuantoInt2Config, QuantoInt4Config, QuantoInt8Config
from .rtn import RTNConfig

__all__ = [
    "QuantizeConfig", "quantize",
    "BnbInt8Config", "BnbNF4Config", "BnbFP4Config",
    "QuantoInt8Config", "QuantoInt4Config", "QuantoInt2Config", "QuantoFloat8Config",
    "RTNConfig", "GPTQConfig", "GPTQOptimumConfig", "CalibratedNF4Config", "CalibratedInt4Config",
]


from .._verbs import make_package_callable  # noqa: E402
from ..registry import import_submodules  # noqa: E402

import_submodules(__name__)  # every method file registers itself: adding one needs no edit here
make_package_callable(__name__, "quantize")

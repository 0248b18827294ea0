"""Our calibrated 4-bit quantization: GPTQ-style error correction onto a fixed storage grid.

``calibrated-nf4`` (non-uniform) and ``calibrated-int4`` (uniform) run the same pure-torch
algorithm (Frantar et al., GPTQ, 2022 — the OBS update that SparseGPT also uses) and
differ only in the grid the weights land on:

* ``calibrated-nf4``: bitsandbytes' NF4 codebook with absmax per block of 64 inputs —
  exactly the layout of ``bnb-nf4``, so the result is *stored as* a plain bnb NF4
  checkpoint (same size, reload with plain ``from_pretrained``). Each block's absmax is
  fixed when the block is reached (from the error-updated weights, rounded to bfloat16)
  and the largest weight is pinned to ±absmax, so bitsandbytes re-derives the same
  absmax and every weight maps back to its chosen code exactly.
* ``calibrated-int4``: affine 4-bit (scale + shift per group of ``group_size`` inputs, float16),
  stored in the hfcompress quanto format (``quanto-int4`` layout).

Calibration is block-by-block and sequential: the inputs of transformer block *i* are
captured (from the already-quantized blocks before it), the Hessian ``H = 2 X^T X`` of each
Linear's inputs is accumulated, each weight matrix is quantized column by column with
the OBS update ``W[:, j+1:] -= err_j * Hinv[j, j+1:] / Hinv[j, j]`` (lazy batches of 128
columns), and the block is re-run with its quantized weights to give block *i+1*'s inputs.
Zeros of a pruned model stay zero (masked out of the update) when the model is sparse.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from ..calibration import (
    DenseInputs,
    Hessians,
    Sequential,
    calibration_windows,
    describe_batch,
    find_block_stacks,
    fix_dead,
    inverse_cholesky_upper,
    obs_quantize,
)
from ..calibration.targets import Conv1DTarget, in_stacks
from ..config import CalibrationConfig
from ..errors import UsageError
from ..registry import register
from .base import (
    QuantizeConfig,
    check_not_quantized,
    in_features,
    input_sparsity,
    is_conv1d,
    select_linears,
)


class _CalibratedConfig(QuantizeConfig):
    calibration: CalibrationConfig = Field(default_factory=lambda: CalibrationConfig(samples=32, seq_len=512))
    damp: float = Field(0.01, gt=0.0, lt=1.0, description="Hessian dampening, fraction of its mean diagonal")
    block_size: int = Field(128, ge=8, le=4096, description="columns per lazy OBS update batch")
    batch_size: int = Field(4, ge=1, le=512, description="calibration windows per chunk of the block forwards")
    true_sequential: bool = Field(False, description="quantize each block's layers in execution order, each "
                                                      "seeing inputs from the already-quantized layers (lock-step "
                                                      "chunks); default: Hessians from the block's unquantized "
                                                      "forward, two passes (lowest memory)")
    calibration_dtype: Literal["float32", "bfloat16", "float16"] | None = Field(
        None, description="autocast dtype of the calibration forwards (default: the model's dtype)")

    def calibration_torch_dtype(self) -> Any:
        return getattr(torch, self.calibration_dtype) if self.calibration_dtype else None


class CalibratedNF4Config(_CalibratedConfig):
    """GPTQ-style calibrated error correction onto the NF4 grid; stored as a plain bnb NF4 checkpoint."""

    kind: ClassVar[str] = "non-uniform"
    bits: ClassVar[float] = 4
    method: Literal["calibrated-nf4"] = "calibrated-nf4"
    act_order: bool = Field(True, description="process columns by decreasing Hessian diagonal (static groups)")
    clip_search: bool = Field(True, description="search a per-row shrink of each block's absmax (0.75-1.0) "
                                                 "minimising the Hessian-weighted rounding error")
    double_quant: bool = False
    compute_dtype: Literal["float32", "float16", "bfloat16"] | None = None


class CalibratedInt4Config(_CalibratedConfig):
    """GPTQ-style calibrated error correction onto an affine int4 grid; stored in the hfcompress quanto format."""

    kind: ClassVar[str] = "uniform"
    bits: ClassVar[float] = 4
    method: Literal["calibrated-int4"] = "calibrated-int4"
    group_size: int = Field(64, ge=8, le=65536, description="inputs per (scale, shift) group")


# ---------------------------------------------------------------------------------------------
# Grids
# ---------------------------------------------------------------------------------------------

class NF4Grid:
    """bnb NF4: code * absmax, absmax = max |w| over 64 consecutive inputs of a row."""

    CLIP_FACTORS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75)

    def __init__(self, group_size: int = 64, clip_search: bool = False):
        import bitsandbytes.functional as F

        self.group_size = group_size
        self.clip_search = clip_search
        self.codes = F.get_4bit_type("nf4", device="cpu").float()
        self.mids = (self.codes[1:] + self.codes[:-1]) / 2

    def _rtn(self, wg: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))[:, None]
        return self.codes[torch.bucketize((wg / safe).clamp(-1, 1), self.mids)] * scale[:, None]

    def start(self, wg: torch.Tensor, hdiag: torch.Tensor | None = None) -> None:
        absmax = wg.abs().amax(dim=1)
        scale = absmax
        if self.clip_search:
            # Per row, the shrink of the block's absmax that minimises the H-diagonal-weighted
            # round-to-nearest error (the clipped largest weight is then stored as ±scale).
            weight = hdiag[None, :] if hdiag is not None else 1.0
            best_err = None
            for f in self.CLIP_FACTORS:
                s = (absmax * f).to(torch.bfloat16).float()
                err = (((wg - self._rtn(wg, s)) ** 2) * weight).sum(dim=1)
                if best_err is None:
                    best_err, scale = err, s
                else:
                    better = err < best_err
                    best_err = torch.where(better, err, best_err)
                    scale = torch.where(better, s, scale)
        self.scale = scale.to(torch.bfloat16).float()  # what bnb's CPU path stores anyway
        self.pin = wg.abs().argmax(dim=1)
        self.sign = torch.where(wg.gather(1, self.pin[:, None])[:, 0] >= 0, 1.0, -1.0)

    def quantize(self, w: torch.Tensor, j: int) -> torch.Tensor:
        safe = torch.where(self.scale > 0, self.scale, torch.ones_like(self.scale))
        x = (w / safe).clamp(-1, 1)
        q = self.codes[torch.bucketize(x, self.mids)] * self.scale
        pinned = self.pin == j
        return torch.where(pinned, self.sign * self.scale, q)

    # Static groups (for act-order): every block's absmax fixed up front from the original weights.
    def prepare_static(self, W: torch.Tensor, hdiag: torch.Tensor) -> None:
        g = self.group_size
        scales, pins, signs = [], [], []
        for c in range(0, W.shape[1], g):
            self.start(W[:, c:c + g], hdiag[c:c + g])
            scales.append(self.scale)
            pins.append(self.pin)
            signs.append(self.sign)
        self.static = (torch.stack(scales, 1), torch.stack(pins, 1), torch.stack(signs, 1))

    def quantize_static(self, w: torch.Tensor, col: int) -> torch.Tensor:
        scales, pins, signs = self.static
        grp = col // self.group_size
        self.scale, self.pin, self.sign = scales[:, grp], pins[:, grp], signs[:, grp]
        return self.quantize(w, col % self.group_size)


class AffineGrid:
    """Affine ``bits``-bit: q = clamp(round((w + shift) / scale)) * scale - shift, per group (quanto layout)."""

    def __init__(self, bits: int, group_size: int):
        self.bits, self.group_size = bits, group_size
        self.qmax = 2 ** bits - 1
        self.scales: list[torch.Tensor] = []
        self.shifts: list[torch.Tensor] = []

    def start(self, wg: torch.Tensor, hdiag: torch.Tensor | None = None) -> None:
        rmin, rmax = wg.amin(dim=1), wg.amax(dim=1)
        scale = ((rmax - rmin) / self.qmax).to(torch.float16).float()
        self.scale = torch.where(scale > 0, scale, torch.full_like(scale, 1e-8).to(torch.float16).float())
        self.shift = (-rmin).to(torch.float16).float()
        self.scales.append(self.scale)
        self.shifts.append(self.shift)

    def quantize(self, w: torch.Tensor, j: int) -> torch.Tensor:
        data = torch.clamp(torch.round((w + self.shift) / self.scale), 0, self.qmax)
        return data * self.scale - self.shift


@torch.no_grad()
def gptq_quantize(W: torch.Tensor, H: torch.Tensor, grid: Any, *, block_size: int = 128, damp: float = 0.01,
                  mask: torch.Tensor | None = None, act_order: bool = False) -> torch.Tensor:
    """GPTQ with groups of ``grid.group_size`` consecutive columns; returns the quantized W.

    Without ``act_order`` each group's scale is fixed when the group is reached (from the
    error-updated weights). With ``act_order`` columns are processed by decreasing Hessian
    diagonal and every group's scale is fixed up front ("static groups"), so the storage
    layout (groups of consecutive columns) is unchanged. The OBS loop and the damped inverse
    are the calibration layer's (:mod:`hfcompress.calibration.second_order`).
    """
    W = W.clone().float()
    H = H.clone().float()
    fix_dead(H, W)
    if mask is not None:
        W = W * mask
    hdiag = torch.diag(H)
    if act_order:
        grid.prepare_static(W, hdiag)
        perm = torch.argsort(hdiag, descending=True)
        inv = torch.argsort(perm)
        W = W[:, perm]
        H = H[perm][:, perm]
        M = mask[:, perm] if mask is not None else None
        Hinv = inverse_cholesky_upper(H, damp, retries=5)
        Q = obs_quantize(W, Hinv, lambda w, col, i: grid.quantize_static(w, int(perm[col])),
                         block_size=block_size, mask=M)
        return Q[:, inv]
    g = grid.group_size
    block_size = max(g, (block_size // g) * g)  # groups never straddle a lazy batch
    Hinv = inverse_cholesky_upper(H, damp, retries=5)

    def start_group(W1: torch.Tensor, i1: int, i: int) -> None:
        if i % g == 0:
            grid.start(W1[:, i:i + g], hdiag[i1 + i:i1 + i + g])

    return obs_quantize(W, Hinv, lambda w, col, i: grid.quantize(w, i % g), block_size=block_size, mask=mask,
                        on_column=start_group)


# ---------------------------------------------------------------------------------------------
# Block-by-block calibration: hooks on the calibration layer's scheduler
# ---------------------------------------------------------------------------------------------

@torch.no_grad()
def calibrate_blocks(model: Any, ids: torch.Tensor, chosen: dict[str, Any], make_grid: Any, config: Any,
                     progress: bool = False) -> dict[str, Any]:
    """Quantize every chosen matrix inside the block stacks in place (weights replaced by grid values).

    One forward of the model through :class:`~hfcompress.calibration.Sequential`: per block, the
    Hessians ``2/N X^T X`` of each group of layers sharing an input are accumulated chunk by chunk
    (``config.batch_size`` windows per chunk) from the block's unquantized forward, each matrix is
    quantized (GPTQ), then the block's outputs — from its quantized weights — feed the next block.
    With ``config.true_sequential`` the layers are quantized in execution order instead, each
    seeing inputs from the already-quantized layers before it (lock-step chunks). With
    ``config.dense_inputs`` every block's outputs come from its dense weights (the quantized
    ones are installed after the pass), so each layer is calibrated on the dense model's inputs.
    """
    stacks = find_block_stacks(model)
    targets = {n: t for n, t in chosen.items() if in_stacks(n, stacks)}
    hess = Hessians(scale="mean2")
    grids: dict[str, Any] = {}
    done: list[str] = []
    act_order = getattr(config, "act_order", False)

    def on_chunk(names: list[str], x: torch.Tensor) -> None:
        hess.add(names[0], x)

    def on_group(names: list[str], x: torch.Tensor | None) -> None:
        if x is not None:
            hess.add(names[0], x)
        H, tokens = hess.pop(names[0])
        for n in names:
            m = targets[n]
            W = m.weight
            if not tokens:  # no calibration token reached it: plain rounding (identity Hessian)
                H = torch.eye(W.shape[1])
            sparse = float((W == 0).float().mean()) > 0.01
            grid = make_grid(m)
            Q = gptq_quantize(W, H, grid, block_size=config.block_size, damp=config.damp,
                              mask=(W != 0).float() if sparse else None,
                              act_order=act_order and hasattr(grid, "prepare_static"))
            if isinstance(m, torch.nn.Linear):
                m.weight.data = Q.to(W.dtype)
            else:
                W.copy_(Q)
            grids[n] = grid
            done.append(n)

    deferral = None
    if getattr(config, "dense_inputs", False):  # every layer calibrated on the dense model's inputs
        deferral = DenseInputs(targets, on_group)
    seq = Sequential(model, None, targets, deferral.on_group if deferral else on_group, on_chunk, config.batch_size,
                     progress=progress, in_order=bool(getattr(config, "true_sequential", False)), stacks=stacks,
                     compute_dtype=getattr(config, "calibration_torch_dtype", lambda: None)(),
                     after_block=deferral.after_block if deferral else None)
    seq.run(ids)
    if deferral is not None:
        deferral.flush()
    return {"grids": grids, "calibrated": done, "no_tokens": list(seq.stats.get("no_tokens", []))}


def _no_tokens(info: dict[str, Any]) -> dict[str, Any]:
    if not info.get("no_tokens"):
        return {}
    return {"no_calibration_tokens": sorted(info["no_tokens"]), "no_calibration_tokens_fallback": "round-to-nearest"}


def _calibration(bundle: Any, config: _CalibratedConfig) -> torch.Tensor | dict[str, torch.Tensor]:
    return calibration_windows(bundle.tokenizer, bundle.model, config.calibration)


@register(CalibratedNF4Config)
def apply_calibrated_nf4(bundle: Any, config: CalibratedNF4Config, ctx: Any) -> dict[str, Any]:
    from .bnb import BnbNF4Config, apply_bnb, select_bnb

    model = bundle.model
    check_not_quantized(model)
    chosen, kept = select_bnb(model, config.skip_modules)  # what bitsandbytes will store, checked first
    # Conv1D (GPT-2) by its real orientation: the [out, in] view of its [in, out] weight
    pool = {n: Conv1DTarget(m) if is_conv1d(m) else m for n, m in chosen.items()}
    odd = sorted(n for n, m in pool.items() if m.in_features % 64)
    ids = _calibration(bundle, config)
    sparsity_before = input_sparsity(model, list(chosen))
    targets = {n: m for n, m in pool.items() if n not in odd}
    info = calibrate_blocks(model, ids, targets, lambda m: NF4Grid(64, config.clip_search), config,
                            progress=getattr(ctx, "progress", False))
    summary = apply_bnb(bundle, BnbNF4Config(double_quant=config.double_quant, compute_dtype=config.compute_dtype,
                                             skip_modules=config.skip_modules), ctx)
    summary.update({
        "backend": "hfcompress (GPTQ-style error correction) -> bitsandbytes NF4",
        "kind": config.kind,
        "scheme": "NF4 codebook, absmax per block of 64; weights chosen by OBS error correction",
        "calibrated_modules": len(info["calibrated"]),
        "plain_nf4_modules": sorted(set(chosen) - set(info["calibrated"])),
        **_no_tokens(info),
        "calibration": {**describe_batch(ids), "dataset": config.calibration.dataset},
    })
    if sparsity_before > 0.01:
        summary["sparsity_before"] = round(sparsity_before, 4)
    return summary


@register(CalibratedInt4Config)
def apply_calibrated_int4(bundle: Any, config: CalibratedInt4Config, ctx: Any) -> dict[str, Any]:
    from optimum.quanto import qint4
    from optimum.quanto.nn import quantize_module
    from optimum.quanto.quantize import set_module_by_name
    from optimum.quanto.tensor.weights.quantization import quantize_weight

    from .bnb import measure
    from .quanto_format import HfcQuantoConfig, attach, conv1d_as_linear

    model = bundle.model
    check_not_quantized(model)
    chosen, kept = select_linears(model, config.skip_modules, conv1d=True)
    bad = sorted({in_features(m) for m in chosen.values() if in_features(m) % config.group_size})
    if bad:
        raise UsageError(f"group size {config.group_size} does not divide in_features {bad}: pick a divisor")
    conv1d_as_linear(model, [n for n, m in chosen.items() if is_conv1d(m)])  # stored as quanto QLinear
    chosen = {n: model.get_submodule(n) for n in chosen}
    ids = _calibration(bundle, config)
    sparsity_before = input_sparsity(model, list(chosen))
    info = calibrate_blocks(model, ids, chosen, lambda m: AffineGrid(4, config.group_size), config,
                            progress=getattr(ctx, "progress", False))
    spec: dict[str, dict[str, Any]] = {}
    for name, module in chosen.items():
        W = module.weight.data
        out_f, in_f = W.shape
        g = config.group_size
        grid = info["grids"].get(name)
        if grid is None:  # outside the block stack: plain round-to-nearest on the same grid
            grid = AffineGrid(4, g)
            Wg = W.float()
            Q = torch.empty_like(Wg)
            for c in range(0, in_f, g):
                grid.start(Wg[:, c:c + g])
                for j in range(g):
                    Q[:, c + j] = grid.quantize(Wg[:, c + j], j)
            W = Q.to(W.dtype)
        # scales / shifts in quanto's grouped order: row r, group c -> index r * (in/g) + c
        scale = torch.stack(grid.scales, dim=1).reshape(-1, 1).to(W.dtype)
        shift = torch.stack(grid.shifts, dim=1).reshape(-1, 1).to(W.dtype)
        qmodule = quantize_module(module, weights=qint4)
        qmodule.weight_group_size = g
        qw = quantize_weight(W, qtype=qint4, axis=0, scale=scale, shift=shift, group_size=g, optimized=False)
        with torch.no_grad():
            qmodule.weight = torch.nn.Parameter(qw.optimize(), requires_grad=False)
        qmodule.name = name
        set_module_by_name(model, name, qmodule)
        spec[name] = {"weights": "qint4", "group_size": g}
    attach(model, HfcQuantoConfig(weights="qint4", group_size=config.group_size, modules=spec,
                                  scale_dtype="float16"))
    bundle.saver = None
    summary: dict[str, Any] = {
        "backend": "hfcompress (GPTQ-style error correction) -> optimum-quanto int4",
        "kind": config.kind,
        "format": "hfcompress-quanto (reload with from_pretrained after `import hfcompress`)",
        "weight_bits": 4,
        "scheme": f"affine int4, scale+shift (float16) per group of {config.group_size}",
        "calibrated_modules": len(info["calibrated"]),
        "calibration": {**describe_batch(ids), "dataset": config.calibration.dataset},
        **_no_tokens(info),
    }
    summary.update(measure(bundle, ctx, list(chosen), kept, sparsity_before=sparsity_before))
    return summary

"""compressed-tensors ``pack-quantized`` output: int4 / int8 weight-only checkpoints that plain
transformers (with the ``compressed-tensors`` package) and vLLM load.

The quantizers (``quantize rtn`` and our calibrated ``quantize gptq``) choose integer codes
on compressed-tensors' own grid — scale and zero point from its ``calculate_qparams``,
``q = clamp(round(w / scale + zp), qmin, qmax)``, ``w' = (q - zp) * scale`` — and leave the
dequantized values ``w'`` in the in-memory model. Saving (:func:`save_pack_quantized`, the
bundle's saver) hands each quantized Linear's ``weight`` / ``weight_scale`` /
``weight_zero_point`` to compressed-tensors' ``pack-quantized`` compressor (it re-derives the
same codes and packs eight 4-bit codes per int32), writes the model with ``save_pretrained``
and the ``quantization_config`` with its ``QuantizationConfig`` / ``ModelCompressor``. A
reload therefore computes exactly what the in-memory model did::

    from transformers import AutoModelForCausalLM          # pip install compressed-tensors
    model = AutoModelForCausalLM.from_pretrained("out/smol-gptq-int4")

Limits of compressed-tensors 0.20 that shape the output:

* groups must divide ``in_features``: a Linear whose width the requested group size does
  not divide gets the largest of 64 / 32 that does (a second config group, in the summary);
* asymmetric checkpoints, and those with quantized embeddings, load in transformers only when
  dequantized at load time (its meta-device path does not pack zero points, and leaves a
  quantized Embedding without a weight): those folders carry ``"dequantize": true`` in their
  ``quantization_config`` (transformers' own loading option). That path reads a single scheme
  for all modules, so they get one group size and one bit width throughout;
* sparsity is no longer a compressed-tensors format (``sparse-bitmask`` /
  ``sparse-24-bitmask`` were removed in 0.15, and from transformers and vLLM): a 2:4 model
  quantized here keeps its zeros exactly (zero is on every grid) but is stored packed.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch

from ..errors import UsageError

FORMAT = "pack-quantized"
#: fallback group sizes (vLLM's int4 kernels take 32 / 64 / 128 / channel) when the requested one does not divide
FALLBACK_GROUPS = (64, 32)


def weight_args(bits: int, group_size: int | None, symmetric: bool) -> Any:
    """compressed-tensors ``QuantizationArgs`` for int weights (``group_size`` None / <= 0: per output channel)."""
    from compressed_tensors.quantization import QuantizationArgs

    if group_size is not None and group_size > 0:
        return QuantizationArgs(num_bits=bits, type="int", symmetric=symmetric, strategy="group",
                                group_size=group_size)
    return QuantizationArgs(num_bits=bits, type="int", symmetric=symmetric, strategy="channel")


def group_plan(modules: dict[str, Any], group_size: int | None, *, uniform: bool = False) -> dict[str, int | None]:
    """name -> group size used for that module (the requested one, or a fallback that divides its width).

    ``uniform``: one group size for every module (the largest candidate dividing all widths) —
    needed when the checkpoint is dequantized at load time, where transformers reads a single scheme.
    """
    if group_size is None or group_size <= 0:
        return dict.fromkeys(modules)
    candidates = (group_size, *[x for x in FALLBACK_GROUPS if x < group_size])
    widths = {name: m.weight.shape[1] for name, m in modules.items()}
    if uniform:
        for g in candidates:
            if all(w % g == 0 for w in widths.values()):
                return dict.fromkeys(modules, g)
        bad = sorted({w for w in widths.values() if w % candidates[-1]})
        raise UsageError(f"group size {group_size} (nor 64 / 32) does not divide in_features {bad}: "
                         "pass --group-size -1 (per channel) or skip those modules")
    return {name: fit_group(width, group_size, name) for name, width in widths.items()}


def fit_group(width: int, group_size: int | None, name: str = "the module") -> int | None:
    """The group size a module ``width`` inputs wide really uses: ``group_size`` or the largest of 64 / 32
    below it that divides the width (None / <= 0: per output channel); a one-line error when none does."""
    if group_size is None or group_size <= 0:
        return None
    for g in (group_size, *[x for x in FALLBACK_GROUPS if x < group_size]):
        if width % g == 0:
            return g
    raise UsageError(f"group size {group_size} does not divide in_features {width} of {name} "
                     "(nor do 64 / 32): pass --group-size -1 (per channel) or skip that module")


class CTIntGrid:
    """compressed-tensors' int grid, group by group, for ``gptq_quantize`` (and plain rounding).

    ``start`` fixes a group's scale / zero point from the current (error-updated) weights
    with compressed-tensors' ``calculate_qparams`` (scale rounded to the weight dtype, as it
    is stored); ``quantize`` rounds one column onto it. ``scales`` / ``zero_points`` collect the
    groups in order ([out, n_groups] once stacked).
    """

    #: shrinks of each group's range tried by ``clip_search`` (1.0: plain min/max)
    CLIP_FACTORS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75)

    def __init__(self, args: Any, in_features: int, dtype: torch.dtype, clip_search: bool = False):
        from compressed_tensors.quantization.utils import calculate_range

        self.args = args
        self.clip_search = clip_search
        self.group_size = args.group_size if args.strategy == "group" else in_features
        self.dtype = dtype
        qmin, qmax = calculate_range(args, "cpu")
        self.qmin, self.qmax = float(qmin), float(qmax)
        self.scales: list[torch.Tensor] = []
        self.zero_points: list[torch.Tensor] = []

    def qparams(self, wg: torch.Tensor, hdiag: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale / zero point of each group (last dim of ``wg``) from its min / max. With
        ``clip_search`` and ``hdiag`` (the Hessian diagonal of the group's inputs, shaped like
        ``wg``'s last dims), the range is shrunk by the factor of :data:`CLIP_FACTORS` that
        minimises the Hessian-weighted rounding error of the group, per row."""
        from compressed_tensors.quantization.utils import calculate_qparams

        lo, hi = wg.amin(dim=-1), wg.amax(dim=-1)
        if not (self.clip_search and hdiag is not None):
            scale, zp = calculate_qparams(lo, hi, self.args)
            return scale.to(self.dtype).float(), zp.float()
        best = None
        for f in self.CLIP_FACTORS:
            scale, zp = calculate_qparams(lo * f, hi * f, self.args)
            scale, zp = scale.to(self.dtype).float(), zp.float()
            err = ((wg - self.round(wg, scale[..., None], zp[..., None])) ** 2 * hdiag).sum(dim=-1)
            if best is None:
                best = (err, scale, zp)
            else:
                better = err < best[0]
                best = (torch.where(better, err, best[0]), torch.where(better, scale, best[1]),
                        torch.where(better, zp, best[2]))
        return best[1], best[2]

    def start(self, wg: torch.Tensor, hdiag: torch.Tensor | None = None) -> None:
        self.scale, self.zp = self.qparams(wg, hdiag)
        self.scales.append(self.scale)
        self.zero_points.append(self.zp)

    def quantize(self, w: torch.Tensor, j: int) -> torch.Tensor:
        return self.round(w, self.scale, self.zp)

    def round(self, w: torch.Tensor, scale: torch.Tensor, zp: torch.Tensor) -> torch.Tensor:
        q = torch.clamp(torch.round(w / scale + zp), self.qmin, self.qmax)
        return (q - zp) * scale

    # act-order with static groups: every group's parameters fixed up front from the original weights
    def prepare_static(self, W: torch.Tensor, hdiag: torch.Tensor) -> None:
        g = self.group_size
        scale, zp = self.qparams(W.float().unflatten(-1, (-1, g)), hdiag.float().unflatten(-1, (-1, g)))
        self.scales, self.zero_points = list(scale.unbind(1)), list(zp.unbind(1))
        self.static = (scale, zp)

    def quantize_static(self, w: torch.Tensor, col: int) -> torch.Tensor:
        scale, zp = self.static
        grp = col // self.group_size
        return self.round(w, scale[:, grp], zp[:, grp])

    def params(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(weight_scale [out, n_groups] in the weight dtype, weight_zero_point or None when symmetric)."""
        scale = torch.stack(self.scales, dim=1).to(self.dtype)
        zp = None if self.args.symmetric else torch.stack(self.zero_points, dim=1).to(torch.int8)
        return scale, zp


@torch.no_grad()
def rtn_quantize(W: torch.Tensor, args: Any) -> tuple[torch.Tensor, CTIntGrid]:
    """Round-to-nearest onto compressed-tensors' grid: (dequantized weight in W's dtype, grid with the params)."""
    grid = CTIntGrid(args, W.shape[1], W.dtype)
    Wg = W.float().unflatten(-1, (-1, grid.group_size))
    scale, zp = grid.qparams(Wg)
    Q = grid.round(Wg, scale[..., None], zp[..., None]).flatten(-2)
    grid.scales, grid.zero_points = list(scale.unbind(1)), list(zp.unbind(1))
    return Q.to(W.dtype), grid


# ---------------------------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------------------------

def _targets(names: list[str], all_names: list[str]) -> list[str]:
    """Compact compressed-tensors targets for ``names``: ``re:^prefix\\.\\d+\\.suffix$`` where a block
    position holds the same choice in every block, exact module names otherwise."""
    split = re.compile(r"^(.*?)\.(\d+)\.(.+)$")
    chosen = set(names)
    families: dict[tuple[str, str], list[str]] = defaultdict(list)
    for n in all_names:
        m = split.match(n)
        if m:
            families[(m.group(1), m.group(3))].append(n)
    out, covered = [], set()
    for (prefix, suffix), members in families.items():
        if all(x in chosen for x in members):
            out.append(f"re:^{re.escape(prefix)}\\.\\d+\\.{re.escape(suffix)}$")
            covered.update(members)
    out.extend(n for n in names if n not in covered)
    return out


def build_quantization_config(spec: dict[str, Any]) -> Any:
    """compressed-tensors ``QuantizationConfig`` (status ``compressed``) for the stage's spec."""
    from compressed_tensors.quantization import QuantizationConfig, QuantizationScheme

    plan: dict[str, int | None] = spec["plan"]
    bits_of: dict[str, int] = spec["bits_of"]
    keys = sorted({(bits_of[n], g) for n, g in plan.items()}, key=lambda k: (-k[0], -(k[1] or 0)))
    single = len(keys) == 1 and not spec.get("embeddings")
    groups = {}
    for i, (bits, g) in enumerate(keys):
        names = [n for n, x in plan.items() if x == g and bits_of[n] == bits]
        targets = ["Linear"] if single else _targets(names, spec["all_linears"])
        groups[f"group_{i}"] = QuantizationScheme(targets=targets, format=FORMAT,
                                                  weights=weight_args(bits, g, spec["symmetric"]))
    return QuantizationConfig(config_groups=groups, ignore=sorted(spec["ignore"]), format=FORMAT,
                              quantization_status="compressed")


def compressed_state_dict(model: Any, spec: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The model's state dict with every quantized Linear packed by compressed-tensors' compressor."""
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.quantization import QuantizationScheme

    compressor = BaseCompressor.get_value_from_registry(FORMAT)
    params: dict[str, tuple[torch.Tensor, torch.Tensor | None]] = spec["params"]
    packed_ptrs = {model.get_submodule(n).weight.data_ptr() for n in params}
    sd: dict[str, torch.Tensor] = {}
    for key, t in model.state_dict().items():
        if t.data_ptr() in packed_ptrs and key.endswith("weight"):
            continue  # a packed weight, or a tied alias of one (e.g. lm_head = embed_tokens)
        sd[key] = t
    for name, (scale, zp) in params.items():
        weight = model.get_submodule(name).weight.detach()
        scheme = QuantizationScheme(targets=[name], format=FORMAT,
                                    weights=weight_args(spec["bits_of"][name], spec["plan"][name], spec["symmetric"]))
        local = {"weight": weight, "weight_scale": scale.to(weight.dtype)}
        if zp is not None:
            local["weight_zero_point"] = zp
        for k, v in compressor.compress(local, scheme).items():
            sd[f"{name}.{k}"] = v.contiguous()
    return sd


def save_pack_quantized(bundle: Any, folder: Path) -> None:
    """``bundle.saver``: write a compressed-tensors ``pack-quantized`` checkpoint (config + safetensors)."""
    from compressed_tensors.compressors import ModelCompressor

    model = bundle.model
    spec = bundle.meta["compressed_tensors"]
    qconfig = build_quantization_config(spec)
    sd = compressed_state_dict(model, spec)
    model.save_pretrained(folder, state_dict=sd)
    ModelCompressor(quantization_config=qconfig).update_config(str(folder))
    if not spec["symmetric"] or spec.get("embeddings"):
        # compressed-tensors 0.20's meta-device load path does not pack zero points, and leaves a quantized
        # Embedding without a weight: transformers' own `dequantize` option routes loading through the
        # compressor's decompress instead.
        path = Path(folder) / "config.json"
        cfg = json.loads(path.read_text())
        cfg["quantization_config"]["dequantize"] = True
        path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def attach(bundle: Any, *, bits_of: dict[str, int], symmetric: bool, plan: dict[str, int | None],
           params: dict[str, tuple[torch.Tensor, torch.Tensor | None]], kept: list[str],
           embeddings: list[str] | None = None) -> None:
    """Record what the saver needs and install it (the in-memory model holds the dequantized weights)."""
    import torch.nn as nn

    all_linears = [n for n, m in bundle.model.named_modules() if isinstance(m, nn.Linear)]
    bundle.meta["compressed_tensors"] = {
        "bits_of": dict(bits_of), "symmetric": symmetric, "plan": dict(plan), "params": params,
        "ignore": sorted(set(all_linears) - set(params)), "all_linears": all_linears, "kept": sorted(kept),
        "embeddings": sorted(embeddings or []),
    }
    bundle.meta["format"] = "compressed-tensors"
    bundle.saver = save_pack_quantized


def scheme_summary(bits: int, symmetric: bool, plan: dict[str, int | None], group_size: int | None) -> dict[str, Any]:
    sizes: dict[str, int] = defaultdict(int)
    for g in plan.values():
        sizes["channel" if g is None else str(g)] += 1
    out: dict[str, Any] = {
        "format": "compressed-tensors pack-quantized (reload: plain from_pretrained with compressed-tensors installed)",
        "weight_bits": bits, "symmetric": symmetric,
        "group_size": group_size if group_size and group_size > 0 else "channel",
        "modules_per_group_size": dict(sizes),
    }
    if len(sizes) > 1 or (group_size and group_size > 0 and str(group_size) not in sizes):
        out["group_fallback"] = "modules whose in_features the group size does not divide use the largest of 64 / 32 that does"
    return out

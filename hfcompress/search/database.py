"""The level database: every targeted layer compressed once at every level of the grid.

Built as EvoPress does: each layer is calibrated on the *dense* model's inputs, so a layer's
variant at a level does not depend on the other layers' levels and any profile can be
assembled by swapping weights. The same computation is what ``prune`` does with
``dense_inputs: true`` and per-layer ``overrides``, so the recipe a search writes reproduces
the searched model exactly. (``sequential_inputs``: the statistics are instead taken on the inputs of a
start profile installed block by block, the ordinary sequential stage's computation.)

On disk (``<cache>/<key>/``, key = hash of the model's weights, the method and its options,
the calibration and the chunking), only what differs from the dense model:

* ``stats/<group>.safetensors``: the calibration statistics of each input group (SparseGPT's
  Hessian ``X^T X``; Wanda's input norms), from ONE dense calibration pass, so levels a later
  budget needs are computed without another forward;
* ``levels/<layer>/<zeros>.safetensors``: the layer with that many zeros: a packed bitmask of
  the zeros, plus (SparseGPT, which updates the kept weights) the kept values.

For GPTQ bit widths (:class:`BitsDatabase`): ``stats/`` holds GPTQ's Hessians ``2/N X^T X`` from
one dense pass, and ``levels/<layer>/<width>.safetensors`` the layer's int8 codes and scales (+ zero
points) on compressed-tensors' grid at that :class:`Width` (bits and the group size the layer really
uses, e.g. ``3g64`` or ``3ch``), as ``quantize --method gptq`` with ``dense_inputs`` and that layer's
override computes them.

Entries are written atomically and reused by every later search of the same key.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from ..calibration import Hessians, Sequential, SquaredNorms, find_block_stacks
from ..calibration.targets import in_stacks
from ..formats import compressed_tensors as ct
from ..prune.engine import arch_info, calibration_ids, target_linears
from ..prune.masks import prune_mask, zero_
from ..prune.sparsegpt import SparseGPTConfig, sparsegpt_prune
from ..quantize.calibrated import gptq_quantize
from ..quantize.gptq import _calibration_ids
from ..quantize.rtn import prepare

DEFAULT_CACHE = Path(os.environ.get("HFCOMPRESS_SEARCH_CACHE", Path.home() / ".cache" / "hfcompress" / "search"))


def fingerprint(model: torch.nn.Module) -> str:
    """Hash of the model's config and every parameter's bytes (the database's identity)."""
    h = hashlib.blake2b(digest_size=16)
    config = getattr(model, "config", None)
    if config is not None:
        h.update(json.dumps(config.to_diff_dict(), sort_keys=True, default=str).encode())
    for name, p in model.state_dict().items():
        h.update(name.encode())
        t = p.detach().cpu().contiguous()
        h.update(str((t.dtype, tuple(t.shape))).encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _safe(name: str) -> str:
    return name.replace("/", "_")


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def pack_mask(mask: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.packbits(mask.reshape(-1).numpy().astype(np.uint8)))


def unpack_mask(packed: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
    n = shape[0] * shape[1]
    return torch.from_numpy(np.unpackbits(packed.numpy())[:n].astype(bool)).reshape(shape)


#: part of every database key: raised whenever the statistics' arithmetic changes, so a cache built
#: by older code is never mixed with entries the current code would compute differently
#: (2: Hessians accumulated on their upper triangle, squared norms as a gemv)
STATS_VERSION = 2

class _LevelStore:
    """What both databases share: the on-disk layout ``<cache>/<key>/{meta.json, stats/, levels/<layer>/<level>.safetensors}``
    keyed by a hash of ``identity``, and the dense weights to restore."""

    linears: dict[str, Any]
    dense: dict[str, torch.Tensor]
    #: per layer, the level installed during the statistics pass (``sequential_inputs``); None: dense inputs
    seq_levels: dict[str, Any] | None = None

    def _open(self, ident: dict[str, Any], cache_dir: str | os.PathLike | None) -> None:
        self.identity = ident
        self.key = hashlib.blake2b(json.dumps(ident, sort_keys=True).encode(), digest_size=10).hexdigest()
        self.root = Path(cache_dir or DEFAULT_CACHE).expanduser() / self.key
        self.groups: list[list[str]] | None = None
        self.built_now = {"stats": False, "entries": 0}

    def sequential_inputs(self, levels: dict[str, Any]) -> None:
        """Calibrate on the inputs the model gets with ``levels`` (zeros or bits per layer) computed and
        installed block by block, as the ordinary sequential stage does, instead of the dense model's:
        those entries are then exactly what that stage computes, the others are computed on the same
        inputs. Another database (its key names the levels); the model is dense again afterwards."""
        self.seq_levels = dict(levels)
        digest = hashlib.blake2b(json.dumps(sorted(levels.items())).encode(), digest_size=8).hexdigest()
        self._open({**self.identity, "inputs": {"sequential": digest}}, self.root.parent)

    def shape(self, name: str) -> tuple[int, int]:
        m = self.linears[name]
        return int(m.out_features), int(m.in_features)

    def entry_path(self, name: str, level: int) -> Path:
        return self.root / "levels" / _safe(name) / f"{level}.safetensors"

    def has(self, name: str, level: int) -> bool:
        return self.entry_path(name, level).is_file()

    def size_bytes(self) -> dict[str, int]:
        """Bytes on disk: statistics and level entries."""
        def total(folder: Path) -> int:
            return sum(p.stat().st_size for p in folder.rglob("*.safetensors")) if folder.is_dir() else 0
        return {"stats": total(self.root / "stats"), "levels": total(self.root / "levels")}

    def _meta_path(self) -> Path:
        return self.root / "meta.json"

    def _stats_written(self, groups: list[list[str]]) -> None:
        """Record the statistics pass (its input groups) atomically in ``meta.json``."""
        self.groups = groups
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self._meta_path().with_suffix(".tmp")
        tmp.write_text(json.dumps({"identity": self.identity, "groups": groups}, indent=1))
        os.replace(tmp, self._meta_path())
        self.built_now["stats"] = True

    def restore_dense(self, names: Iterable[str] | None = None) -> None:
        with torch.no_grad():
            for n in names or self.linears:
                self.linears[n].weight.copy_(self.dense[n])


class SparsityDatabase(_LevelStore):
    """Wanda / SparseGPT variants of every target at given zero counts (see the module doc)."""

    def __init__(self, bundle: Any, method: str, calibration: Any, batch_size: int | None,
                 cache_dir: str | os.PathLike | None = None, progress: bool = False):
        self.bundle, self.method, self.calibration, self.batch_size = bundle, method, calibration, batch_size
        self.progress = progress
        model = bundle.model
        self.info = arch_info(model)
        self.linears = target_linears(model, self.info, None, None)
        self.sgpt = SparseGPTConfig()
        self.dense = {n: m.weight.detach().clone() for n, m in self.linears.items()}
        ident = {"model": fingerprint(model), "method": method, "calibration": calibration.model_dump(mode="json"),
                 "batch_size": batch_size, "version": STATS_VERSION}
        if method == "sparsegpt":
            ident["sparsegpt"] = {"percdamp": self.sgpt.percdamp, "blocksize": self.sgpt.blocksize}
        self._open(ident, cache_dir)

    # -- statistics: one dense calibration pass ---------------------------------------------
    def ensure_stats(self) -> None:
        meta = self._meta_path()
        if meta.is_file():
            self.groups = json.loads(meta.read_text())["groups"]
            return
        ids = calibration_ids(self.bundle, self.calibration)
        stats_dir = self.root / "stats"
        if self.method == "sparsegpt":
            acc: Any = Hessians()

            def pop(names: list[str]) -> dict[str, torch.Tensor]:
                H, tokens = acc.pop(names[0])
                return {"H": H, "tokens": torch.tensor(tokens)} if tokens and H is not None else {}
        else:
            acc = SquaredNorms()

            def pop(names: list[str]) -> dict[str, torch.Tensor]:
                norm = acc.pop_norms(names[0])
                return {"norm": norm} if norm is not None else {}

        def on_chunk(names: list[str], x: torch.Tensor) -> None:
            acc.add(names[0], x)

        groups: list[list[str]] = []

        def on_group(names: list[str], x: torch.Tensor | None) -> None:
            if x is not None:
                acc.add(names[0], x)
            tensors = pop(names)
            groups.append(list(names))
            _atomic_save(tensors or {"none": torch.zeros(0)}, stats_dir / f"{_safe(names[0])}.safetensors")
            if self.seq_levels is not None:  # the next blocks see this group at its start level
                zeros = {n: self.seq_levels[n] for n in names}
                if any(not self.has(n, z) for n, z in zeros.items()):
                    self._compute(list(names), zeros, tensors)
                for n, z in zeros.items():
                    self.install(n, z)

        seq = Sequential(self.bundle.model, self.info, self.linears, on_group, on_chunk, self.batch_size,
                         progress=self.progress, stacks=self.info.stacks)
        try:
            seq.run(ids)
        finally:
            if self.seq_levels is not None:
                self.restore_dense()
        self._stats_written(groups)

    def _stats(self, group: list[str]) -> dict[str, torch.Tensor]:
        data = load_file(self.root / "stats" / f"{_safe(group[0])}.safetensors")
        return {} if "none" in data else data

    def input_norms(self) -> dict[str, torch.Tensor | None]:
        """Per layer, ``||X_j||`` of its dense calibration inputs (Wanda's statistic; for SparseGPT the
        square root of the Hessian's diagonal), None where no token reached it."""
        self.ensure_stats()
        assert self.groups is not None
        out: dict[str, torch.Tensor | None] = {}
        for group in self.groups:
            stats = self._stats(group)
            norm = stats.get("norm")
            if norm is None and "H" in stats:
                norm = torch.diagonal(stats["H"]).clamp(min=0).sqrt()
            out.update(dict.fromkeys(group, norm))
        return out

    # -- level entries ----------------------------------------------------------------------
    def ensure(self, wanted: dict[str, list[int]], note: Any = None) -> None:
        """Compute every missing ``(layer, zeros)`` of ``wanted`` (per layer, the same-length list
        of zero counts by level index, the index shared across a group)."""
        missing = {n: [z for z in zs if not self.has(n, z)] for n, zs in wanted.items()}
        if not any(missing.values()):
            if self.groups is None and self._meta_path().is_file():
                self.groups = json.loads(self._meta_path().read_text())["groups"]
            return
        self.ensure_stats()
        assert self.groups is not None
        done = 0
        for group in self.groups:
            todo = [i for i in range(max(len(wanted.get(n, [])) for n in group))
                    if any(not self.has(n, wanted[n][i]) for n in group if n in wanted)]
            if not todo:
                continue
            stats = self._stats(group)
            for i in todo:
                self._compute(group, {n: wanted[n][i] for n in group}, stats)
            done += 1
            if note is not None:
                note(f"level database: {done} input groups computed")

    @torch.no_grad()
    def _compute(self, group: list[str], zeros: dict[str, int], stats: dict[str, torch.Tensor]) -> None:
        """The group's layers at the given zero counts, exactly as ``prune`` with ``dense_inputs`` does."""
        sparsity = {n: z / self.dense[n].numel() for n, z in zeros.items()}
        out: dict[str, torch.Tensor] = {}
        if self.method == "wanda":
            norm = stats.get("norm")
            for n in group:
                w = self.dense[n].clone()
                score = w.abs().float()
                if norm is not None:
                    score.mul_(norm)
                zero_(w, prune_mask(score, sparsity[n], None, per="row"))
                out[n] = w
        elif "H" not in stats:  # no calibration token reached the group: exact-count magnitude
            for n in group:
                w = self.dense[n].clone()
                zero_(w, prune_mask(w.abs().float(), sparsity[n], None, per="layer"))
                out[n] = w
        else:
            mats = [self.dense[n] for n in group]
            W = torch.cat([m.float() for m in mats], 0) if len(mats) > 1 else mats[0].float().clone()
            segs, r = [], 0
            for n, m in zip(group, mats, strict=True):
                segs.append((r, r + m.shape[0], sparsity[n]))
                r += m.shape[0]
            sparsegpt_prune(W, stats["H"].clone(), segs, None, self.sgpt.blocksize, self.sgpt.percdamp)
            for (a, b, _), n, m in zip(segs, group, mats, strict=True):
                w = torch.empty_like(m)
                w.copy_(W[a:b])
                out[n] = w
        for n, w in out.items():
            if self.has(n, zeros[n]):
                continue
            mask = w == 0
            tensors = {"mask": pack_mask(mask)}
            if self.method == "sparsegpt":
                tensors["values"] = w[~mask]
            _atomic_save(tensors, self.entry_path(n, zeros[n]))
            self.built_now["entries"] += 1

    def weight(self, name: str, zeros: int) -> torch.Tensor:
        """The layer's weight at ``zeros`` zeros (decoded from the database)."""
        data = load_file(self.entry_path(name, zeros))
        mask = unpack_mask(data["mask"], self.shape(name))
        if "values" in data:
            w = torch.zeros(self.shape(name), dtype=self.dense[name].dtype)
            w[~mask] = data["values"]
            return w
        w = self.dense[name].clone()
        return zero_(w, mask)

    def install(self, name: str, zeros: int) -> None:
        with torch.no_grad():
            self.linears[name].weight.copy_(self.weight(name, zeros))



class Width(NamedTuple):
    """What one layer stores at a GPTQ level: its bit width and the group size it really uses."""

    bits: int
    #: inputs per scale group; None: one scale per output channel
    group: int | None

    def __str__(self) -> str:
        return f"{self.bits}g{self.group}" if self.group else f"{self.bits}ch"

    @classmethod
    def parse(cls, text: str) -> Width:
        """``"3g64"`` / ``"3ch"`` (as ``str`` writes it) -> Width."""
        if text.endswith("ch"):
            return cls(int(text[:-2]), None)
        bits, _, group = text.partition("g")
        return cls(int(bits), int(group))


class BitsDatabase(_LevelStore):
    """GPTQ variants of every target at given bit widths (see the module doc), on compressed-tensors' grid.

    ``config`` is the :class:`~hfcompress.quantize.gptq.GPTQConfig` the searched recipe runs (with
    ``dense_inputs``): its calibration, chunking, damping, act-order, clip search, group plan and
    symmetry are those of every entry, so ``compress`` with the recipe reproduces the entries exactly.
    An entry holds the int8 codes and the scales (+ zero points) of the layer at that :class:`Width`
    (its group size: the config's plan, or a level's own through :meth:`width`).
    """

    def __init__(self, bundle: Any, config: Any, cache_dir: str | os.PathLike | None = None, progress: bool = False):

        self.bundle, self.config, self.progress = bundle, config, progress
        model = bundle.model
        chosen, self.kept, self.plan, _ = prepare(bundle, config)
        self.stacks = find_block_stacks(model)
        self.linears = {n: m for n, m in chosen.items() if in_stacks(n, self.stacks)}
        self.outside = sorted(set(chosen) - set(self.linears))
        self.dense = {n: m.weight.detach().clone() for n, m in self.linears.items()}
        ident = {"model": fingerprint(model), "method": "gptq", "calibration": config.calibration.model_dump(mode="json"),
                 "batch_size": config.batch_size, "version": STATS_VERSION,
                 "gptq": {k: getattr(config, k) for k in ("group_size", "symmetric", "act_order", "clip_search",
                                                          "damp", "block_size", "skip_modules")}}
        self._open(ident, cache_dir)

    def ensure_stats(self) -> None:
        """The Hessians ``2/N X^T X`` of every input group from ONE pass of the dense model, chunked as
        the GPTQ stage chunks it (``config.batch_size`` windows, two passes per block)."""
        meta = self._meta_path()
        if meta.is_file():
            self.groups = json.loads(meta.read_text())["groups"]
            return

        ids = _calibration_ids(self.bundle, self.config.calibration)
        hess = Hessians(scale="mean2")
        groups: list[list[str]] = []

        def on_chunk(names: list[str], x: torch.Tensor) -> None:
            hess.add(names[0], x)

        def on_group(names: list[str], x: torch.Tensor | None) -> None:
            if x is not None:
                hess.add(names[0], x)
            H, tokens = hess.pop(names[0])
            groups.append(list(names))
            data = {"H": H, "tokens": torch.tensor(tokens)} if tokens and H is not None else {"none": torch.zeros(0)}
            _atomic_save(data, self.root / "stats" / f"{_safe(names[0])}.safetensors")
            if self.seq_levels is not None:  # the next blocks see this group at its start width
                for n in names:
                    if not self.has(n, self.seq_levels[n]):
                        self._compute(n, self.seq_levels[n], data.get("H"))
                    self.install(n, self.seq_levels[n])

        seq = Sequential(self.bundle.model, None, self.linears, on_group, on_chunk, self.config.batch_size,
                         progress=self.progress, in_order=False, stacks=self.stacks)
        try:
            seq.run(ids)
        finally:
            if self.seq_levels is not None:
                self.restore_dense()
        self._stats_written(groups)

    def width(self, name: str, bits: int, group_size: int | None = None) -> Width:
        """The layer's :class:`Width` at ``bits`` with a requested ``group_size`` (None: the config's plan;
        -1: per channel; else the stage's 64 / 32 fallback, as the GPTQ stage's own override resolves it)."""
        if group_size is None:
            return Width(bits, self.plan[name])
        return Width(bits, ct.fit_group(self.shape(name)[1], group_size, name))

    def ensure(self, widths: dict[str, Iterable[Width]], note: Any = None) -> None:
        """Compute every missing ``(layer, width)`` entry."""
        wanted = {n: list(ws) for n, ws in widths.items()}
        if all(self.has(n, w) for n, ws in wanted.items() for w in ws):
            return
        self.ensure_stats()
        assert self.groups is not None
        done = 0
        for group in self.groups:
            todo = [(n, w) for n in group for w in wanted.get(n, []) if not self.has(n, w)]
            if not todo:
                continue
            data = load_file(self.root / "stats" / f"{_safe(group[0])}.safetensors")
            H = data.get("H")
            for n, b in todo:
                self._compute(n, b, H)
            done += 1
            if note is not None:
                note(f"level database: {done} input groups computed")

    @torch.no_grad()
    def _compute(self, name: str, width: Width, H: torch.Tensor | None) -> None:
        """The layer at ``width``, exactly as the GPTQ stage's ``calibrate_blocks`` computes it."""

        cfg = self.config
        W = self.dense[name]
        if H is None:  # no calibration token reached the group: plain rounding (identity Hessian)
            H = torch.eye(W.shape[1])
        sparse = float((W == 0).float().mean()) > 0.01
        grid = ct.CTIntGrid(ct.weight_args(width.bits, width.group, cfg.symmetric), W.shape[1], W.dtype,
                            clip_search=cfg.clip_search)
        Q = gptq_quantize(W, H, grid, block_size=cfg.block_size, damp=cfg.damp,
                          mask=(W != 0).float() if sparse else None, act_order=cfg.act_order)
        scale, zp = grid.params()
        g = grid.group_size
        s = scale.float().repeat_interleave(g, dim=1)
        z = zp.float().repeat_interleave(g, dim=1) if zp is not None else 0.0
        codes = torch.round(Q / s + z)
        tensors = {"codes": codes.to(torch.int8), "scale": scale}
        if zp is not None:
            tensors["zero_point"] = zp
        if not torch.equal(self._decode(tensors, g, W.dtype), Q.to(W.dtype)):
            raise AssertionError(f"level database: the codes of {name} at {width} do not decode to its weights")
        _atomic_save(tensors, self.entry_path(name, width))
        self.built_now["entries"] += 1

    @staticmethod
    def _decode(tensors: dict[str, torch.Tensor], group: int, dtype: torch.dtype) -> torch.Tensor:
        s = tensors["scale"].float().repeat_interleave(group, dim=1)
        z = tensors["zero_point"].float().repeat_interleave(group, dim=1) if "zero_point" in tensors else 0.0
        return ((tensors["codes"].float() - z) * s).to(dtype)

    def entry(self, name: str, width: Width) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor | None]]:
        """(the layer's dequantized weight at ``width``, its (scale, zero point) as the saver wants them)."""
        data = load_file(self.entry_path(name, width))
        w = self._decode(data, width.group or self.shape(name)[1], self.dense[name].dtype)
        return w, (data["scale"], data.get("zero_point"))

    def install(self, name: str, width: Width) -> None:
        with torch.no_grad():
            self.linears[name].weight.copy_(self.entry(name, width)[0])


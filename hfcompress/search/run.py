"""``search()``: budget in, searched per-layer profile out (model, recipe.yaml, report).

::

    import hfcompress
    result = hfcompress.search("HuggingFaceTB/SmolLM2-135M-Instruct", method="sparsegpt",
                               budget="sparsity=0.6", generations=40, output="out/smol-sgpt60")
    result.report["comparison"]          # searched vs uniform vs OWL (KL to the dense model)
    hfcompress.search(MODEL, method="gptq", budget="bits=3.5", levels="2,3,4,8", output="out/smol-3.5bit")

Order of work: every option and the output folder are checked before the model is loaded; the
level database is built (or read from the cache); the fitness reference (the dense model's
next-token log-probabilities on the fitness windows) is computed; the search runs (resumable);
the baselines are scored; and the output is written atomically by running the searched recipe
through :func:`hfcompress.compress` (so ``hfcompress compress recipe.yaml`` reproduces it), with
the report (``search_report.json`` / ``.md``, plots) and a card section added.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import torch

from ..calibration import block_index, find_block_stacks
from ..config import CalibrationConfig, build_config
from ..errors import UnsupportedError, UsageError
from ..formats import compressed_tensors as ct
from ..io import atomic_folder, check_output, write_json
from ..loading import ModelBundle, load
from ..pipeline import compress
from ..prune.drop import DropBlocksConfig
from ..prune.engine import arch_info, calibration_ids, target_linears
from ..prune.owl import owl_from_norms, stack_block
from ..prune.sparsegpt import SparseGPTConfig
from ..prune.wanda import WandaConfig
from ..quantize.gptq import GPTQConfig
from ..recipes import Recipe
from ..stage import StageContext, run_stage
from . import report as _report
from .budget import Budget, Level, SearchConfig
from .database import DEFAULT_CACHE, BitsDatabase, SparsityDatabase, Width, fingerprint
from .evolve import SearchState, evolve
from .fitness import Fitness, PrefixScorer, skipped_blocks
from .space import Profile, Space

PRUNE_CONFIGS = {"wanda": WandaConfig, "sparsegpt": SparseGPTConfig}
#: OWL's hyper-parameters for ``start: owl`` (the prune stages' defaults)
OWL_DEFAULTS = {k: WandaConfig.model_fields[k].default for k in ("owl_lambda", "owl_m")}


@dataclass
class SearchResult:
    bundle: ModelBundle
    report: dict[str, Any]
    recipe: Recipe
    output: Path | None = None


def _say(progress: bool, line: str) -> None:
    if progress:
        import sys

        print(line, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------- sparsity
@dataclass
class SparsityPlan:
    """The sparsity space: per layer the uniform zeros and the zeros per level step."""

    names: list[str]
    numel: dict[str, int]
    base: dict[str, int]
    step_zeros: dict[str, int]
    kmin: int
    kmax: int
    space: Space

    def zeros(self, name: str, k: int) -> int:
        return self.base[name] + k * self.step_zeros[name]

    def profile_zeros(self, profile: Profile) -> dict[str, int]:
        return {n: self.zeros(n, k) for n, k in zip(self.names, profile, strict=True)}


def plan_sparsity(linears: dict[str, Any], method: str, budget: Budget, lo: float, hi: float,
                  step: Fraction) -> SparsityPlan:
    """Exact zero counts per layer and level; one-line errors when the grid cannot be exact."""
    q = step.denominator
    s = budget.value
    names = list(linears)
    numel, base, step_zeros = {}, {}, {}
    for n in names:
        rows, cols = int(linears[n].out_features), int(linears[n].in_features)
        if cols % q:
            raise UsageError(f"level step 1/{q} is not a whole number of weights per row of {n} ({cols} inputs): "
                             f"pass --levels {lo:g}:{hi:g}:1/Q with Q dividing every layer's input width")
        numel[n] = rows * cols
        base[n] = rows * int(round(cols * s)) if method == "wanda" else int(round(rows * cols * s))
        step_zeros[n] = rows * (cols // q)
    kmin = math.ceil((lo - s) * q - 1e-9)
    kmax = math.floor((hi - s) * q + 1e-9)
    los, his = [], []
    for n in names:
        k_lo = max(kmin, -(base[n] // step_zeros[n]))
        k_hi = min(kmax, (numel[n] - 1 - base[n]) // step_zeros[n])
        if method == "wanda":  # whole rows: at most cols - 1 zeros per row
            rows = numel[n] // int(linears[n].in_features)
            k_hi = min(k_hi, (numel[n] - rows - base[n]) // step_zeros[n])
        los.append(k_lo)
        his.append(k_hi)
    g = 0
    for n in names:
        g = math.gcd(g, step_zeros[n])
    space = Space(names, los, his, [step_zeros[n] // g for n in names])
    return SparsityPlan(names, numel, base, step_zeros, kmin, kmax, space)


def _owl_start(bundle: ModelBundle, db: SparsityDatabase, plan: SparsityPlan, target: float, step: Fraction
               ) -> Profile:
    """OWL's per-block sparsities (its defaults; outlier ratios from the database's dense input norms,
    the same statistic OWL's own calibration pass computes) as levels, rounded to the exact budget."""
    stacks = find_block_stacks(bundle.model)
    block_sp = owl_from_norms({n: db.dense[n] for n in plan.names}, db.input_norms(), stacks, target,
                              OWL_DEFAULTS["owl_lambda"], OWL_DEFAULTS["owl_m"])
    q = step.denominator
    blocks = [stack_block(n, stacks) for n in plan.names]
    targets = [(block_sp[b] - target) * q if b is not None else 0.0 for b in blocks]
    try:
        return plan.space.nearest(targets)
    except ValueError:
        raise UsageError("--start owl: OWL's profile cannot be rounded to this level grid at the exact budget: "
                         "widen --levels or use --start uniform") from None


class Installed:
    """The profile currently in the model's weights; a new one swaps only the layers that differ."""

    def __init__(self, db: SparsityDatabase, plan: SparsityPlan):
        self.db, self.plan = db, plan
        self.current: dict[str, int] = {}

    def set(self, profile: Profile) -> None:
        for n, z in self.plan.profile_zeros(profile).items():
            if self.current.get(n) != z:
                self.db.install(n, z)
                self.current[n] = z


def _fitness_windows(bundle: ModelBundle, cfg: SearchConfig) -> torch.Tensor:
    cal = cfg.calibration
    need = math.ceil(cfg.tokens[-1] / cal.seq_len)
    fit_cal = CalibrationConfig(**{**cal.model_dump(), "seed": cal.seed + 1, "samples": need})
    return calibration_ids(bundle, fit_cal).clone()


def _scorer(bundle: ModelBundle, fitness: Fitness, names: list[str], install: Any, cfg: SearchConfig) -> Any:
    """``evaluate(profile, tokens)``: install the profile and score it from its first changed block
    (:class:`PrefixScorer`); whole forwards when the model has more than one block stack."""
    stacks = find_block_stacks(bundle.model)
    if len(stacks) != 1:
        def whole(profile: Profile, tokens: int) -> float:
            install(profile)
            return fitness(tokens)
        return whole
    unit_block = [where[1] if (where := block_index(n, stacks)) is not None else 0 for n in names]
    return PrefixScorer(fitness, list(stacks[0].blocks), unit_block, install, cfg.tokens[-1])


def _scoring(evaluate: Any) -> dict[str, Any]:
    """How the candidates of this run were scored (blocks run out of the blocks a whole forward runs)."""
    if not isinstance(evaluate, PrefixScorer):
        return {"from_first_changed_block": False}
    return {"from_first_changed_block": evaluate.enabled, "blocks_run": evaluate.blocks_run,
            "blocks_whole": evaluate.blocks_total,
            "fraction_run": round(evaluate.blocks_run / max(evaluate.blocks_total, 1), 4)}


def _evolve(space: Any, evaluate: Any, db: Any, cfg: Any, what: dict[str, Any], progress: bool,
            deadline: float | None) -> Any:
    """The evolutionary search over ``space``, resumable from ``<db>/runs/<key>.json`` (key: the
    database, ``what`` is searched and the search options)."""
    key = _state_key({"db": db.key, **what, "offspring": cfg.offspring, "tokens": cfg.tokens,
                      "survivors": cfg.survivors, "max_switches": cfg.max_switches, "seed": cfg.seed})
    return evolve(space, evaluate, key=key, state_path=db.root / "runs" / f"{key}.json",
                  generations=cfg.generations, offspring=cfg.offspring, tokens=cfg.tokens, survivors=cfg.survivors,
                  max_switches=cfg.max_switches, seed=cfg.seed, progress=progress,
                  prime=getattr(evaluate, "prime", None), deadline=deadline)


def _state_key(parts: dict[str, Any]) -> str:
    return hashlib.blake2b(json.dumps(parts, sort_keys=True, default=str).encode(), digest_size=10).hexdigest()


def search(model: str | os.PathLike | ModelBundle, config: SearchConfig | None = None, *,
           output: str | os.PathLike | None = None, overwrite: bool = False, progress: bool = True,
           load_kwargs: dict[str, Any] | None = None, **options: Any) -> SearchResult:
    """Search per-layer levels meeting the budget exactly; see the module docstring.

    ``config`` or keyword ``options`` (the :class:`SearchConfig` fields: ``method``, ``budget``,
    ``levels``, ``generations``, ``offspring``, ``tokens``, ``survivors``, ``seed``,
    ``calibration``, ``cache_dir``, ...).
    """
    if config is None:
        config = build_config(SearchConfig, options)
    elif options:
        raise UsageError("search(): pass a SearchConfig or keyword options, not both")
    budget = config.parsed_budget()
    grid = config.grid(budget) if budget.kind == "sparsity" else None
    source = model.path if isinstance(model, ModelBundle) else (Path(model) if os.path.isdir(model) else None)
    if output is not None:
        check_output(output, source=source, overwrite=overwrite)
    started = time.perf_counter()
    bundle = model if isinstance(model, ModelBundle) else load(model, **(load_kwargs or {}))
    if bundle.task not in (None, "causal-lm", "text-generation") and not hasattr(bundle.model, "lm_head"):
        raise UnsupportedError(f"search scores candidates by their next-token distribution: it needs a causal "
                               f"language model, and this is a {bundle.task} model")
    cache_root = Path(config.cache_dir or DEFAULT_CACHE).expanduser()
    # bit widths: the level costs and the budget's reachability are checked before any calibration work
    prepared = _prepare_bits(bundle, config, budget, cache_root, progress) if config.method == "gptq" else None
    windows = _fitness_windows(bundle, config)
    deadline = started + 60 * config.time_limit if config.time_limit is not None else None
    if budget.kind == "sparsity":
        result = _search_sparsity(bundle, config, budget, grid, windows, cache_root, progress, deadline)
    elif prepared is not None:
        result = _search_bits(bundle, config, budget, prepared, windows, progress, deadline)
    else:
        result = _search_drop(bundle, config, budget, windows, cache_root, progress, deadline)
    result["report"]["seconds"] = round(time.perf_counter() - started, 1)
    return _finish(bundle, config, result, output, overwrite, progress)


def _search_sparsity(bundle: ModelBundle, cfg: SearchConfig, budget: Budget, grid: Any, windows: torch.Tensor,
                     cache_root: Path, progress: bool, deadline: float | None) -> dict[str, Any]:
    lo, hi, step = grid
    model = bundle.model
    info = arch_info(model)
    linears = target_linears(model, info, None, None)
    plan = plan_sparsity(linears, cfg.method, budget, lo, hi, step)
    db = SparsityDatabase(bundle, cfg.method, cfg.calibration, cfg.batch_size, cache_root, progress=progress)
    if cfg.database_inputs == "sequential":  # the uniform start, block by block (OWL is refused with it)
        db.sequential_inputs(plan.profile_zeros(plan.space.start))
    fitness = Fitness(model, windows)  # the dense reference, before any level is installed
    wanted = {n: [plan.zeros(n, min(max(k, plan.space.lo[i]), plan.space.hi[i]))
                  for k in range(plan.kmin, plan.kmax + 1)] for i, n in enumerate(plan.names)}
    t = time.perf_counter()
    _say(progress, f"search: level database {db.key}: {plan.kmax - plan.kmin + 1} levels x {len(plan.names)} layers")
    db.ensure(wanted, note=(lambda m: _say(progress, f"search: {m}")) if progress else None)
    db_seconds = round(time.perf_counter() - t, 1)
    installed = Installed(db, plan)
    what: dict[str, Any] = {"budget": str(budget), "grid": [lo, hi, str(step)]}
    if cfg.start == "owl":
        plan.space.origin = _owl_start(bundle, db, plan, budget.value, step)
        what["start"] = "owl"
    evaluate = _scorer(bundle, fitness, plan.names, installed.set, cfg)
    state = _evolve(plan.space, evaluate, db, cfg, what, progress, deadline)
    best = tuple(state.parent)
    zeros = plan.profile_zeros(best)
    total = sum(plan.numel.values())
    uniform_zeros = sum(plan.base.values())
    if sum(zeros.values()) != uniform_zeros:  # the space guarantees it; a broken invariant must not pass
        raise AssertionError("search: the profile's zeros differ from the budget's")
    sparsity = {n: zeros[n] / plan.numel[n] for n in plan.names}
    recipe_cfg = PRUNE_CONFIGS[cfg.method](sparsity=budget.value, dense_inputs=cfg.finalize == "assembled",
                                           overrides=sparsity,
                                           calibration=cfg.calibration, batch_size=cfg.batch_size)
    comparison = [{"name": "searched", "kl": state.fitness, "zeros": uniform_zeros,
                   "sparsity": uniform_zeros / total},
                  {"name": f"{'OWL-shaped' if cfg.start == 'owl' else 'uniform'} ({cfg.database_inputs} inputs, "
                           f"search start)",
                   "kl": state.curve[0]["fitness"],
                   "zeros": uniform_zeros, "sparsity": uniform_zeros / total}]
    installed.set(best)
    searched_state = _assembled_weights(cfg, linears)
    db.restore_dense()
    installed.current.clear()
    if cfg.baselines:
        for name, extra in (("uniform", {}), ("owl", {"owl": True})):
            _say(progress, f"search: scoring the {name} baseline ({cfg.method}, sequential)")
            other = copy.deepcopy(bundle)
            run_stage(other, PRUNE_CONFIGS[cfg.method](sparsity=budget.value, calibration=cfg.calibration,
                                                      batch_size=cfg.batch_size, **extra),
                      StageContext(progress=False))
            olin = target_linears(other.model, arch_info(other.model), None, None)
            z = sum(int((m.weight == 0).sum()) for m in olin.values())
            comparison.append({"name": name, "kl": fitness(cfg.tokens[-1], other.model), "zeros": z,
                               "sparsity": z / total})
            del other
    layers = [{"name": n, "level": k, "zeros": zeros[n], "sparsity": round(sparsity[n], 6), "params": plan.numel[n],
               "start_level": k0} for n, k, k0 in zip(plan.names, best, plan.space.start, strict=True)]
    sizes = db.size_bytes()
    report = {
        "method": cfg.method, "budget": str(budget), "kind": "sparsity",
        "grid": {"min": lo, "max": hi, "step": str(step), "levels": plan.kmax - plan.kmin + 1,
                 "unit": "Linear layer", "units": len(plan.names)},
        "budget_check": {"zeros": sum(zeros.values()), "uniform_zeros": uniform_zeros, "targeted_parameters": total,
                         "exact": True},
        "database": {"key": db.key, "inputs": cfg.database_inputs, "stats_bytes": sizes["stats"],
                     "level_bytes": sizes["levels"],
                     "built_stats_now": db.built_now["stats"], "entries_computed_now": db.built_now["entries"],
                     "seconds": db_seconds},
        "layers": layers, "comparison": comparison, "scoring": _scoring(evaluate),
    }
    return _assembled_or_sequential(cfg, {"report": report, "state": state, "recipe_cfg": recipe_cfg,
                                          "fitness": fitness, "expected": searched_state, "db_root": db.root,
                                          "assemble": lambda: installed.set(best)})


# ---------------------------------------------------------------------------------------- drop
def _search_drop(bundle: ModelBundle, cfg: SearchConfig, budget: Budget, windows: torch.Tensor,
                 cache_root: Path, progress: bool, deadline: float | None) -> dict[str, Any]:
    model = bundle.model
    info = arch_info(model)
    if len(info.stacks) != 1:
        raise UnsupportedError("block-drop search handles models with one block stack (decoder-only): "
                               f"this model has {len(info.stacks)}")
    blocks = list(info.stacks[0].blocks)
    n_drop = int(budget.value)
    if n_drop >= len(blocks):
        raise UsageError(f"budget {budget} is unreachable: the model has {len(blocks)} blocks; drop at most "
                         f"{len(blocks) - 1}")
    fitness = Fitness(model, windows)
    # the start: the project's angular-distance choice (prune structured="layers")
    other = copy.deepcopy(bundle)
    rec = run_stage(other, WandaConfig(structured="layers", sparsity=n_drop / len(blocks),
                                       calibration=cfg.calibration, batch_size=cfg.batch_size),
                    StageContext(progress=False))
    angular = sorted(rec["summary"]["removed_layers"])
    angular_kl = fitness(cfg.tokens[-1], other.model)
    del other
    start = [1 if i in angular else 0 for i in range(len(blocks))]
    space = Space([f"{info.layers_name}.{i}" for i in range(len(blocks))],
                  [-s for s in start], [1 - s for s in start], [1] * len(blocks))

    def dropped(profile: Profile) -> list[int]:
        return [i for i, (s, k) in enumerate(zip(start, profile, strict=True)) if s + k]

    def evaluate(profile: Profile, tokens: int) -> float:
        with skipped_blocks([blocks[i] for i in dropped(profile)]):
            return fitness(tokens)

    ident = {"model": fingerprint(model), "calibration": cfg.calibration.model_dump(mode="json"), "method": "drop"}
    root = cache_root / _state_key(ident)
    key = _state_key({**ident, "budget": str(budget), "offspring": cfg.offspring, "tokens": cfg.tokens,
                      "survivors": cfg.survivors, "max_switches": cfg.max_switches, "seed": cfg.seed})
    state = evolve(space, evaluate, key=key, state_path=root / "runs" / f"{key}.json",
                   generations=cfg.generations, offspring=cfg.offspring, tokens=cfg.tokens, survivors=cfg.survivors,
                   max_switches=cfg.max_switches, seed=cfg.seed, progress=progress, deadline=deadline)
    best = dropped(tuple(state.parent))
    if len(best) != n_drop:
        raise AssertionError("search: the profile drops a different number of blocks than the budget")
    comparison = [{"name": "searched", "kl": state.fitness, "dropped": best},
                  {"name": "angular distance (search start)", "kl": angular_kl, "dropped": angular}]
    report = {"method": "drop", "budget": str(budget), "kind": "blocks",
              "grid": {"levels": 2, "unit": "block", "units": len(blocks)},
              "budget_check": {"dropped": len(best), "budget": n_drop, "exact": True},
              "database": {"key": root.name, "note": "no weights: a level is keep / drop"},
              "layers": [{"name": space.names[i], "dropped": i in best} for i in range(len(blocks))],
              "dropped": best, "comparison": comparison}
    return {"report": report, "state": state, "recipe_cfg": DropBlocksConfig(blocks=best), "fitness": fitness,
            "expected": None, "db_root": root}


# ---------------------------------------------------------------------------------------- bit widths
@dataclass
class BitsPlan:
    """The bit-width space: per layer its :class:`Width` at each level (sorted by bytes) and the cost of
    each (bits, or bytes when levels differ in group size; over the gcd ``unit``)."""

    names: list[str]
    levels: tuple[Level, ...]  # as --levels spelled them
    widths: dict[str, list[Width]]  # per layer, its distinct widths in level-index order
    numel: dict[str, int]
    nbytes: dict[str, list[int]]  # packed int + scale (+ zero point) bytes at each level
    unit: int  # the gcd of every level cost
    target: Fraction  # the budget, in bits or bytes
    achieved: int  # the start's (and every searched profile's) total, in units
    low: int
    high: int
    source_bytes: int
    space: Space
    costed_in: str  # "bits" (scales excluded) or "bytes"

    def width_of(self, profile: Profile) -> dict[str, Width]:
        return {n: self.widths[n][k] for n, k in zip(self.names, profile, strict=True)}

    def totals(self, profile: Profile) -> dict[str, Any]:
        """Average bits per weight (parameter-weighted) and bytes (weights + scales) of ``profile``."""
        widths = self.width_of(profile)
        n = sum(self.numel.values())
        total_bits = sum(widths[x].bits * self.numel[x] for x in self.names)
        nbytes = sum(self.nbytes[x][k] for x, k in zip(self.names, profile, strict=True))
        return {"average_bits": total_bits / n, "total_bits": total_bits, "bytes": nbytes,
                "fraction_of_source": nbytes / self.source_bytes,
                "average_bits_with_scales": 8 * nbytes / n}


def layer_bytes(shape: tuple[int, int], bits: int, group: int | None, scale_bytes: int, zero_points: bool) -> int:
    """Bytes compressed-tensors ``pack-quantized`` stores for one Linear: the codes packed densely into
    int32 (``ceil(in * bits / 32)`` per row) plus one scale (+ int8 zero point) per row and group."""
    rows, cols = shape
    groups = cols // group if group else 1
    return rows * math.ceil(cols * bits / 32) * 4 + rows * groups * (scale_bytes + (1 if zero_points else 0))


#: most DP bits (units x reachable totals) the start-profile search may hold
_DP_LIMIT = 4_000_000_000


def _layer_widths(db: BitsDatabase, name: str, levels: tuple[Level, ...]) -> list[Width]:
    try:
        return list({db.width(name, v.bits, v.group_size): None for v in levels})
    except UsageError as e:
        raise UsageError(f"--levels {','.join(map(str, levels))}: {e}") from None


def plan_bits(db: BitsDatabase, budget: Budget, levels: tuple[Level, ...]) -> BitsPlan:
    """Level costs, the exact (or largest not above) reachable total, and a start profile meeting it
    (every layer at the budget's width where that meets it, else near-uniform); one-line errors for a
    budget outside [all lowest, all highest].

    Levels that all use the search's group size are costed in bits (``bits=``) or bytes (``size=``).
    Levels with their own group sizes are costed in bytes, scales included, whatever the budget: then
    ``bits=B`` means the bytes every layer takes at B bits with the search's group size."""
    names = list(db.linears)
    shapes = {n: db.shape(n) for n in names}
    numel = {n: r * c for n, (r, c) in shapes.items()}
    itemsize = {n: db.dense[n].element_size() for n in names}
    asym = not db.config.symmetric

    def nbytes_of(n: str, w: Width) -> int:
        return layer_bytes(shapes[n], w.bits, w.group, itemsize[n], asym)

    widths = {n: sorted(_layer_widths(db, n, levels), key=lambda w, n=n: (nbytes_of(n, w), w.bits))
              for n in names}
    nbytes = {n: [nbytes_of(n, w) for w in widths[n]] for n in names}
    source_bytes = sum(numel[n] * itemsize[n] for n in names)
    grouped = any(v.group_size is not None for v in levels)
    B = Fraction(str(budget.value))
    if budget.kind == "bits" and not grouped:
        raw = {n: [w.bits * numel[n] for w in widths[n]] for n in names}
        target = B * sum(numel.values())
    elif budget.kind == "bits":  # the bytes of every layer at B bits, the search's group size
        raw = nbytes
        target = sum((Fraction(nbytes_of(n, Width(int(B), db.plan[n]))) if B.denominator == 1 else
                      B * numel[n] / 8 + Fraction(nbytes_of(n, Width(0, db.plan[n]))) for n in names),
                     Fraction(0))
    else:
        raw = nbytes
        target = B * (source_bytes if budget.value < 1 else 1)
    unit = 0
    for n in names:
        for c in raw[n]:
            unit = math.gcd(unit, c)
    costs = [[c // unit for c in raw[n]] for n in names]
    low, high = sum(min(c) for c in costs), sum(max(c) for c in costs)
    in_bits = budget.kind == "bits" and not grouped
    shown_levels = ",".join(map(str, levels))
    if target < low * unit or target > high * unit:
        shown = (lambda v: f"{v / sum(numel.values()):.4g} bits") if in_bits else \
            (lambda v: f"{v:.6g} bytes ({v / source_bytes:.4g} of the source)")
        raise UsageError(f"budget {budget} is unreachable with levels {shown_levels}: the "
                         f"{'average bits' if in_bits else 'bytes'} lie between {shown(low * unit)} (every layer "
                         f"at its lowest) and {shown(high * unit)} (at its highest); change --budget or --levels")
    if high * len(names) > _DP_LIMIT:
        raise UnsupportedError(f"budget {budget}: the level costs of this model have too small a common divisor "
                               f"({unit}) for an exact search; use a bits= budget or other --levels")
    t_units = math.floor(target / unit)
    reach = [1]
    for c in costs:
        prev, cur = reach[-1], 0
        for x in c:
            cur |= prev << x
        reach.append(cur)
    best = (reach[-1] & ((1 << (t_units + 1)) - 1)).bit_length() - 1
    uniform = None
    if budget.kind == "bits" and B.denominator == 1 and Level(int(B)) in levels:
        uniform = [widths[n].index(Width(int(B), db.plan[n])) for n in names]
    if uniform is not None and sum(c[k] for c, k in zip(costs, uniform, strict=True)) == best:
        start = uniform
    else:  # near-uniform: each layer at the level nearest its share of the total (last layers first)
        share = (best - low) / max(high - low, 1)
        start = [0] * len(names)
        r = best
        for u in range(len(names) - 1, -1, -1):
            c = costs[u]
            ideal = min(c) + share * (max(c) - min(c))
            for k in sorted(range(len(c)), key=lambda k: (abs(c[k] - ideal), k)):
                if r - c[k] >= 0 and (reach[u] >> (r - c[k])) & 1:
                    start[u] = k
                    r -= c[k]
                    break
            else:  # the reachability table says some level fits
                raise AssertionError("search: no start profile for a reachable total")
    space = Space(names, [0] * len(names), [len(widths[n]) - 1 for n in names], [1] * len(names), costs=costs,
                  origin=tuple(start))
    return BitsPlan(names, levels, widths, numel, nbytes, unit, target, best, low, high, source_bytes, space,
                    "bits" if in_bits else "bytes")


def _gptq_config(cfg: SearchConfig, overrides: dict[str, Any] | None = None) -> GPTQConfig:
    """The GPTQ stage of the searched recipe (``dense_inputs``; every target's width in ``overrides``)."""
    return GPTQConfig(bits=8, group_size=cfg.gptq_group_size(), symmetric=True, calibration=cfg.calibration,
                      batch_size=cfg.batch_size or GPTQConfig.model_fields["batch_size"].default,
                      dense_inputs=True, overrides=overrides or {})


def _overrides(plan: dict[str, int | None], widths: dict[str, Width]) -> dict[str, Any]:
    """The recipe's per-layer overrides: the bit width, plus the group size where it is not the one the stage's
    group ``plan`` gives the layer."""
    return {n: w.bits if w.group == plan[n] else {"bits": w.bits, "group_size": w.group or -1}
            for n, w in widths.items()}


def _prepare_bits(bundle: ModelBundle, cfg: SearchConfig, budget: Budget, cache_root: Path,
                  progress: bool) -> tuple[BitsDatabase, BitsPlan]:
    db = BitsDatabase(bundle, _gptq_config(cfg), cache_root, progress=progress)
    plan = plan_bits(db, budget, cfg.bit_levels(budget))
    if cfg.database_inputs == "sequential":
        db.sequential_inputs(plan.width_of(plan.space.start))
    return db, plan


def _search_bits(bundle: ModelBundle, cfg: SearchConfig, budget: Budget, prepared: tuple[BitsDatabase, BitsPlan],
                 windows: torch.Tensor, progress: bool, deadline: float | None) -> dict[str, Any]:
    db, plan = prepared
    model = bundle.model
    fitness = Fitness(model, windows)  # the dense reference, before any level is installed
    t = time.perf_counter()
    _say(progress, f"search: level database {db.key}: levels {','.join(map(str, plan.levels))} x "
                   f"{len(plan.names)} layers")
    db.ensure(plan.widths, note=(lambda m: _say(progress, f"search: {m}")) if progress else None)
    db_seconds = round(time.perf_counter() - t, 1)
    current: dict[str, Width] = {}

    def install(profile: Profile) -> None:
        for n, w in plan.width_of(profile).items():
            if current.get(n) != w:
                db.install(n, w)
                current[n] = w

    evaluate = _scorer(bundle, fitness, plan.names, install, cfg)
    state = _evolve(plan.space, evaluate, db, cfg, {"budget": str(budget), "levels": [str(v) for v in plan.levels]}, progress,
                    deadline)
    best = tuple(state.parent)
    if plan.space.cost(best) != plan.achieved:  # the space guarantees it; a broken invariant must not pass
        raise AssertionError("search: the profile's total differs from the budget's")
    widths = plan.width_of(best)
    totals, start_totals = plan.totals(best), plan.totals(plan.space.start)
    sizes = ("average_bits", "bytes", "average_bits_with_scales")
    row = {k: totals[k] for k in sizes}
    start_widths = plan.width_of(plan.space.start)
    uniform = sorted(set(start_widths.values()))
    uniform_start = len(uniform) == 1 or len({(w.bits, w.group == db.plan[n]) for n, w in start_widths.items()}) == 1
    comparison = [{"name": "searched", "kl": state.fitness, **row},
                  {"name": f"start ({'uniform' if uniform_start else 'near-uniform'}, {cfg.database_inputs} inputs)",
                   "kl": state.curve[0]["fitness"],
                   **{k: start_totals[k] for k in sizes}}]
    install(best)
    expected = _assembled_weights(cfg, db.linears)
    db.restore_dense()
    current.clear()
    bits = sorted({w.bits for w in start_widths.values()})
    stage_groups = all(w.group == db.plan[n] for n, w in start_widths.items())
    if cfg.baselines and stage_groups and len(bits) == 1 and bits[0] in (4, 8):
        _say(progress, f"search: scoring the uniform {bits[0]}-bit baseline (gptq, sequential)")
        other = copy.deepcopy(bundle)
        base = _gptq_config(cfg).model_copy(update={"bits": bits[0], "dense_inputs": False})
        run_stage(other, base, StageContext(progress=False))
        comparison.append({"name": f"uniform {bits[0]}-bit (quantize --method gptq)",
                           "kl": fitness(cfg.tokens[-1], other.model), **row})
        del other
    exact = plan.achieved * plan.unit == plan.target
    if budget.kind == "bits" and plan.costed_in == "bits":
        check = {"budget_bits": budget.value, "average_bits": totals["average_bits"], "total_bits": totals["total_bits"],
                 "targeted_parameters": sum(plan.numel.values()), "exact": exact}
    elif budget.kind == "bits":  # levels with their own group sizes: the bytes of uniform B-bit
        check = {"budget_bits": budget.value, "budget_bytes": float(plan.target), "bytes": totals["bytes"],
                 "average_bits": totals["average_bits"],
                 "average_bits_with_scales": totals["average_bits_with_scales"], "exact": exact,
                 "meaning": f"the bytes (codes + scales) of every layer at {budget.value:g} bits with group size "
                            f"{cfg.gptq_group_size()}"}
    else:
        check = {"budget_bytes": float(plan.target), "bytes": totals["bytes"],
                 "fraction_of_source": totals["fraction_of_source"], "source_bytes": plan.source_bytes,
                 "exact": exact}
    if not exact:
        check["note"] = "no mix of the levels meets the budget exactly: the largest total not above it"
    layers = [{"name": n, "bits": widths[n].bits, "group_size": widths[n].group or "channel", "width": str(widths[n]),
               "level": k, "params": plan.numel[n], "bytes": plan.nbytes[n][k],
               "start_bits": start_widths[n].bits, "start_width": str(start_widths[n])}
              for n, k in zip(plan.names, best, strict=True)]
    sizes = db.size_bytes()
    report = {
        "method": cfg.method, "budget": str(budget), "kind": "bits",
        "grid": {"levels": [str(v) for v in plan.levels], "unit": "Linear layer", "units": len(plan.names),
                 "group_size": cfg.gptq_group_size(), "symmetric": True, "costed_in": plan.costed_in},
        "budget_check": check,
        "accounting": {"bits": "average bits per weight over the targeted Linear weights, parameter-weighted; "
                               "scales excluded",
                       "size": "packed int32 codes + scales (+ zero points) of the targeted Linear weights, as "
                               "stored (compressed-tensors' weight_shape entries excluded)",
                       "average_bits": totals["average_bits"], "bytes": totals["bytes"],
                       "source_bytes": plan.source_bytes, "fraction_of_source": totals["fraction_of_source"]},
        "database": {"key": db.key, "inputs": cfg.database_inputs, "stats_bytes": sizes["stats"],
                     "level_bytes": sizes["levels"],
                     "built_stats_now": db.built_now["stats"], "entries_computed_now": db.built_now["entries"],
                     "seconds": db_seconds},
        "layers": layers, "comparison": comparison, "scoring": _scoring(evaluate),
    }
    if db.outside:
        report["outside_blocks"] = {"modules": db.outside, "bits": 8, "note": "rounded to nearest at 8 bits by the "
                                    "GPTQ stage; not in the budget"}

    def assemble() -> None:
        install(best)
        params = {n: db.entry(n, widths[n])[1] for n in plan.names}
        chosen_bits = {**dict.fromkeys(db.outside, 8), **{n: w.bits for n, w in widths.items()}}
        if not db.outside:
            ct.attach(bundle, bits_of=chosen_bits, symmetric=True, plan={n: widths[n].group for n in plan.names},
                      params=params, kept=db.kept)

    recipe_cfg = _gptq_config(cfg, _overrides(db.plan, widths)).model_copy(update={"dense_inputs": cfg.finalize == "assembled"})
    return _assembled_or_sequential(cfg, {"report": report, "state": state, "recipe_cfg": recipe_cfg,
                                          "fitness": fitness, "expected": expected, "db_root": db.root,
                                          "assemble": assemble})


# ---------------------------------------------------------------------------------------- output
def _sequential(cfg: SearchConfig) -> bool:
    """Whether the output recomputes the searched levels block by block (``finalize: sequential``);
    block dropping has no weights to recompute."""
    return cfg.method != "drop" and cfg.finalize == "sequential"


def _assembled_weights(cfg: SearchConfig, linears: dict[str, Any]) -> dict[str, torch.Tensor] | None:
    """The installed searched weights, kept only when the output must reproduce them (``assembled``)."""
    if _sequential(cfg):
        return None
    return {n: m.weight.detach().clone() for n, m in linears.items()}


def _assembled_or_sequential(cfg: SearchConfig, result: dict[str, Any]) -> dict[str, Any]:
    """``finalize: sequential``: the output is the recipe's own (sequential) computation at the searched
    levels, so there are no database weights to assemble or to compare it with."""
    if _sequential(cfg):
        result.pop("assemble")
    return result


def _final_row(report: dict[str, Any], kl: float) -> None:
    """Put the output (levels recomputed sequentially) first in the comparison; the database profile
    the search scored stays beside it, renamed."""
    searched = report["comparison"][0]
    report["comparison"][0] = {**searched, "name": "searched profile, database weights (as scored)"}
    report["comparison"].insert(0, {**searched, "name": "searched (output: levels recomputed sequentially)",
                                    "kl": kl})


def _finish(bundle: ModelBundle, cfg: SearchConfig, result: dict[str, Any], output: str | os.PathLike | None,
            overwrite: bool, progress: bool) -> SearchResult:
    state: SearchState = result["state"]
    report = result["report"]
    recipe = Recipe(name=f"search-{cfg.method}-{report['budget'].replace('=', '-')}", stages=[result["recipe_cfg"]])
    cal = cfg.calibration
    report.update({
        "calibration": {"dataset": cal.dataset, "config": cal.config, "split": cal.split, "samples": cal.samples,
                        "seq_len": cal.seq_len, "seed": cal.seed},
        "fitness": {"metric": "mean per-token KL(dense || candidate)", "tokens": cfg.tokens,
                    "tokens_scored": [result["fitness"].tokens_for(t) for t in cfg.tokens],
                    "windows": {"dataset": cal.dataset, "seed": cal.seed + 1, "seq_len": cal.seq_len}},
        "search": {"generations": state.generation, "offspring": cfg.offspring, "survivors": cfg.survivors,
                   "max_switches": cfg.max_switches, "seed": cfg.seed, "evaluations": state.evaluations,
                   "resumed_from": state.resumed_from, "accepted": sum(1 for c in state.curve[1:] if c["accepted"]),
                   "generations_asked": cfg.generations, "time_limit_minutes": cfg.time_limit,
                   "stopped_at_time_limit": state.stopped_at_deadline},
        "curve": state.curve,
    })
    if cfg.method != "drop":
        report["finalize"] = cfg.finalize
    points_path = result["db_root"] / "points.json"
    if output is None:
        bundle.model.eval()
        _apply_in_memory(bundle, result)
        if _sequential(cfg):
            report["final_kl"] = result["fitness"](cfg.tokens[-1], bundle.model)
            _final_row(report, report["final_kl"])
        report["pareto"] = _report.record_points(points_path, report)
        return SearchResult(bundle=bundle, report=report, recipe=recipe)
    _say(progress, "search: writing the output (the searched recipe through compress)")
    with atomic_folder(output, overwrite=overwrite) as tmp:
        res = compress(bundle, recipe, output=tmp, overwrite=True, progress=progress)
        final = res.bundle
        expected = result["expected"]
        if expected is not None:
            lin = target_linears(final.model, arch_info(final.model), None, None)
            diffs = [float((lin[n].weight.detach() - w).abs().max()) for n, w in expected.items()]
            report["reproduced"] = {"exact": max(diffs) == 0.0, "max_abs_diff": max(diffs)}
        report["final_kl"] = result["fitness"](cfg.tokens[-1], final.model)
        if _sequential(cfg):
            _final_row(report, report["final_kl"])
        elif "reproduced" not in report:
            report["reproduced"] = {"exact": report["final_kl"] == state.fitness}
        report["pareto"] = _report.record_points(points_path, report)
        write_json(tmp / _report.REPORT_JSON, report)
        (tmp / _report.REPORT_MD).write_text(_report.markdown(report))
        _report.plots(report, tmp)
        _report.append_card(tmp, report, name=Path(output).name)
    return SearchResult(bundle=final, report=report, recipe=recipe, output=Path(output).resolve())


def _apply_in_memory(bundle: ModelBundle, result: dict[str, Any]) -> None:
    """No output folder: leave the searched model in ``bundle``: assembled from the level database
    (``finalize: assembled``, the weights the recipe reproduces) or built by its recipe stage (sequential
    levels; block dropping)."""
    if "assemble" in result:
        result["assemble"]()
    else:
        run_stage(bundle, result["recipe_cfg"], StageContext(progress=False))

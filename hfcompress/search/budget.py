"""The search's options and the budget spelling: ``sparsity=0.6``, ``blocks=6``, ``bits=3.5``,
``size=0.25`` / ``size=6e7`` (checked before any work).

::

    from hfcompress.search import SearchConfig
    cfg = SearchConfig(method="sparsegpt", budget="sparsity=0.6", generations=40)
    cfg.parsed_budget()          # Budget(kind="sparsity", value=0.6)
    SearchConfig(method="gptq", budget="size=0.25", levels="2,3,4,8", group_size=128)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Literal, NamedTuple

from pydantic import Field, field_validator, model_validator

from ..config import CalibrationConfig, StrictModel
from ..errors import UsageError

#: budget kind -> what it means, in words (errors and docs)
BUDGET_KINDS = {
    "sparsity": "average fraction of zeros over the targeted Linear layers (parameter-weighted), e.g. sparsity=0.6",
    "blocks": "number of transformer blocks to drop, e.g. blocks=6",
    "bits": "average bits per weight over the targeted Linear layers (parameter-weighted, scales excluded), "
            "e.g. bits=3.5",
    "size": "bytes of the targeted Linear layers' packed weights + scales, as a fraction of their source bytes "
            "(0 < S < 1, e.g. size=0.25) or in bytes (S > 1, e.g. size=6e7)",
}
#: method -> the budget kinds its levels can meet
METHOD_BUDGETS = {"wanda": ("sparsity",), "sparsegpt": ("sparsity",), "drop": ("blocks",), "gptq": ("bits", "size")}
#: default bit-width levels of ``--method gptq``
DEFAULT_BITS = (2, 3, 4, 8)


class Level(NamedTuple):
    """A GPTQ level as ``--levels`` spells it: ``3`` (3 bits at the search's group size), ``3g32`` (3 bits in
    groups of 32 inputs) or ``3ch`` (3 bits, one scale per output channel)."""

    bits: int
    #: None: the search's ``group_size``; -1: per output channel
    group_size: int | None = None

    def __str__(self) -> str:
        if self.group_size is None:
            return str(self.bits)
        return f"{self.bits}ch" if self.group_size < 0 else f"{self.bits}g{self.group_size}"

    @classmethod
    def parse(cls, text: str) -> Level:
        """``"3"`` / ``"3g32"`` / ``"3ch"`` -> Level (ValueError otherwise)."""
        t = text.strip().lower()
        if t.endswith("ch"):
            return cls(int(t[:-2]), -1)
        bits, sep, group = t.partition("g")
        if sep and (not group.isdigit() or int(group) < 1):
            raise ValueError(text)
        return cls(int(bits), int(group) if sep else None)


@dataclass(frozen=True)
class Budget:
    """A parsed budget: ``kind`` (``sparsity`` | ``blocks`` | ``bits`` | ``size``) and its value."""

    kind: str
    value: float

    def __str__(self) -> str:
        return f"{self.kind}={int(self.value) if self.kind == 'blocks' else self.value:g}"


def parse_budget(text: str) -> Budget:
    """``"sparsity=0.6"`` -> Budget; a one-line :class:`UsageError` for anything else."""
    key, sep, value = str(text).partition("=")
    key = key.strip().lower()
    if not sep or key not in BUDGET_KINDS:
        raise UsageError(f"budget {text!r}: write KIND=VALUE with KIND one of {', '.join(BUDGET_KINDS)} "
                         "(e.g. --budget sparsity=0.6 or --budget blocks=6)")
    try:
        number = float(value)
    except ValueError:
        raise UsageError(f"budget {text!r}: {value!r} is not a number (e.g. --budget {key}=0.6)") from None
    if not math.isfinite(number):
        raise UsageError(f"budget {text!r}: the value must be a finite number")
    if key == "sparsity" and not 0.0 < number < 1.0:
        raise UsageError(f"budget {text!r}: sparsity must be in (0, 1), e.g. sparsity=0.6")
    if key == "blocks" and (number != int(number) or number < 1):
        raise UsageError(f"budget {text!r}: blocks is a whole number of blocks >= 1, e.g. blocks=6")
    if key == "bits" and number <= 0:
        raise UsageError(f"budget {text!r}: bits is a positive average bit width, e.g. bits=3.5")
    if key == "size" and (number <= 0 or number == 1):
        raise UsageError(f"budget {text!r}: size is a fraction of the source bytes (0 < S < 1, e.g. size=0.25) "
                         "or a byte count (S > 1, e.g. size=6e7)")
    return Budget(key, number)


def parse_step(text: str) -> Fraction:
    """``"1/16"`` or ``"0.0625"`` -> Fraction(1, 16); the step must be 1/Q for a whole Q."""
    try:
        step = Fraction(str(text).strip()).limit_denominator(4096)
    except (ValueError, ZeroDivisionError):
        raise UsageError(f"level step {text!r} is not a number: write it like 1/16") from None
    if step <= 0 or step.numerator != 1:
        raise UsageError(f"level step {text!r} must be 1/Q for a whole Q (e.g. 1/16 or 1/32) so that every "
                         "level is an exact number of zeros per row")
    return step


class SearchConfig(StrictModel):
    """Budget-driven search of per-layer (or per-block) levels (EvoPress-style)."""

    method: Literal["wanda", "sparsegpt", "drop", "gptq"] = Field(
        description="whose levels are searched: wanda / sparsegpt sparsity per Linear, drop whole blocks, or "
                    "gptq bit widths per Linear")
    budget: str = Field(description="sparsity=S (average over the targeted layers), blocks=N (blocks dropped), "
                                    "bits=B (average bits per weight) or size=S (fraction or bytes)")
    levels: str | None = Field(
        None, description="sparsity grid MIN:MAX[:STEP] (default: budget +-0.25 within [0, 0.95], step 1/16); "
                          "each level is the budget's uniform count of zeros plus whole steps. gptq: the bit "
                          "widths B1,B2,... (default 2,3,4,8), each optionally with its own group size: BgG "
                          "(e.g. 3g32) or Bch (per output channel); levels with other group sizes are costed in "
                          "bytes (scales included)")
    group_size: int | None = Field(None, ge=-1, le=65536,
                                   description="gptq: inputs per scale group (default 128, with the 64 / 32 "
                                               "fallback of `quantize`; -1: per output channel)")
    generations: int = Field(40, ge=0, le=100_000, description="generations of the evolutionary search")
    offspring: int = Field(16, ge=1, le=4096, description="offspring per generation")
    tokens: list[int] = Field(default_factory=lambda: [512, 2048],
                              description="fitness tokens of each selection step (few for every offspring, "
                                          "more for the survivors)")
    survivors: list[int] = Field(default_factory=lambda: [4, 1],
                                 description="offspring kept after each selection step (the last is 1)")
    start: Literal["uniform", "owl"] = Field(
        "uniform", description="wanda / sparsegpt: the search's first parent. uniform: every layer at the budget's "
                               "sparsity (EvoPress); owl: OWL's per-block sparsities (lambda 0.08, M 5, from the "
                               "level database's statistics) on the level grid, rounded to the exact budget")
    time_limit: float | None = Field(None, gt=0, le=100_000,
                                     description="minutes: start no generation that would end past this long "
                                                 "after the search began (loading and level database included; "
                                                 "writing the output comes after); the report says how many "
                                                 "generations ran, a rerun with more time resumes")
    max_switches: int = Field(3, ge=1, le=64, description="most level switches per mutation")
    seed: int = Field(0, description="seed of the search (mutations)")
    calibration: CalibrationConfig = Field(default_factory=lambda: CalibrationConfig(samples=32, seq_len=512),
                                           description="calibration text: level database and fitness tokens")
    batch_size: int | None = Field(None, ge=1, description="calibration windows per chunk (default: 2,048 tokens)")
    finalize: Literal["sequential", "assembled"] = Field(
        "sequential",
        description="wanda / sparsegpt / gptq: how the output's weights are computed at the searched levels. "
                    "sequential: block by block on the compressed model's own inputs (what prune / quantize "
                    "do by default; the searched profile's zeros or bits are unchanged); assembled: exactly "
                    "the level-database weights the search scored (computed on dense inputs)")
    database_inputs: Literal["dense", "sequential"] = Field(
        "dense",
        description="wanda / sparsegpt / gptq: the inputs each level-database entry is calibrated on. dense: the "
                    "dense model's (EvoPress; one database per model, method and calibration, reused across "
                    "budgets); sequential: the model's with the search's start profile computed block by block, "
                    "as the ordinary stage runs (the start then scores exactly what that stage gives; one "
                    "database per start profile; needs finalize: sequential)")
    baselines: bool = Field(True, description="also score the uniform / OWL (or angular-distance) profiles")
    cache_dir: str | None = Field(None, description="level database cache (default: ~/.cache/hfcompress/search)")

    @field_validator("tokens")
    @classmethod
    def _tokens(cls, v: list[int]) -> list[int]:
        if not v or any(t < 1 for t in v) or v != sorted(v):
            raise ValueError("tokens must be increasing positive counts, e.g. 512 2048")
        return v

    @model_validator(mode="after")
    def _steps(self) -> SearchConfig:
        if len(self.survivors) != len(self.tokens):
            raise ValueError(f"give one survivors count per selection step ({len(self.tokens)} tokens values, "
                             f"{len(self.survivors)} survivors)")
        if self.survivors[-1] != 1 or any(b > a for a, b in zip(self.survivors, self.survivors[1:], strict=False)) \
                or any(s < 1 for s in self.survivors):
            raise ValueError("survivors must be decreasing counts >= 1 ending with 1, e.g. 4 1")
        return self

    def parsed_budget(self) -> Budget:
        """The budget, checked against the method (a one-line error for a mismatch)."""
        budget = parse_budget(self.budget)
        if budget.kind not in METHOD_BUDGETS[self.method]:
            fits = [m for m, kinds in METHOD_BUDGETS.items() if budget.kind in kinds]
            raise UsageError(f"--method {self.method} searches {METHOD_BUDGETS[self.method][0]} levels, not "
                             f"{budget.kind}: use --budget {METHOD_BUDGETS[self.method][0]}=... or --method "
                             f"{' / '.join(fits)}")
        if self.method == "drop" and self.levels:
            raise UsageError("--levels applies to sparsity searches (drop levels are keep / drop): remove it")
        if self.method == "drop" and "finalize" in self.model_fields_set:
            raise UsageError("--finalize applies to wanda / sparsegpt / gptq searches (dropped blocks have no "
                             "weights to recompute): remove it")
        if self.start != "uniform" and self.method not in ("wanda", "sparsegpt"):
            raise UsageError(f"--start {self.start} applies to wanda / sparsegpt searches (--method {self.method} "
                             f"starts from its own profile): remove it")
        if self.database_inputs == "sequential":
            if self.method == "drop":
                raise UsageError("--database-inputs applies to wanda / sparsegpt / gptq searches (block dropping "
                                 "has no level database): remove it")
            if self.finalize == "assembled":
                raise UsageError("--finalize assembled reproduces dense-input database weights, which no recipe "
                                 "reproduces from sequential inputs: use --database-inputs dense or --finalize "
                                 "sequential")
            if self.start == "owl":
                raise UsageError("--start owl takes OWL's ratios from the dense-input statistics: use "
                                 "--database-inputs dense or --start uniform")
        if self.group_size is not None and self.method != "gptq":
            raise UsageError("--group-size applies to --method gptq (bit-width levels): remove it")
        if self.method == "gptq":
            self.bit_levels(budget)
        return budget

    def bit_levels(self, budget: Budget | None = None) -> tuple[Level, ...]:
        """The gptq levels (sorted by bits, then group size; one-line error for a bad list or a ``bits=``
        budget outside their widths)."""
        levels = tuple(Level(b) for b in DEFAULT_BITS)
        if self.levels:
            try:
                levels = tuple(sorted({Level.parse(x) for x in self.levels.replace(" ", "").split(",") if x},
                                      key=lambda v: (v.bits, v.group_size is not None, v.group_size or 0)))
            except ValueError:
                raise UsageError(f"--levels {self.levels!r}: gptq levels are bit widths, optionally with a group "
                                 "size, e.g. 2,3,4,8 or 3ch,3g64,3g32,4") from None
            if len(levels) < 2 or any(not 2 <= v.bits <= 8 for v in levels):
                raise UsageError(f"--levels {self.levels!r}: give two or more bit widths in 2..8, e.g. 2,3,4,8")
        bits = sorted({v.bits for v in levels})
        if budget is not None and budget.kind == "bits" and not bits[0] <= budget.value <= bits[-1]:
            raise UsageError(f"budget {budget} is unreachable with bit widths {','.join(map(str, bits))}: the "
                             f"average lies in [{bits[0]}, {bits[-1]}]; change --budget or --levels")
        return levels

    def gptq_group_size(self) -> int:
        return 128 if self.group_size is None else self.group_size

    def grid(self, budget: Budget) -> tuple[float, float, Fraction]:
        """``(min, max, step)`` of the sparsity grid (one-line error when the budget is outside it)."""
        s = budget.value
        lo, hi, step = max(0.0, s - 0.25), min(0.95, s + 0.25), Fraction(1, 16)
        if self.levels:
            parts = self.levels.split(":")
            if len(parts) not in (2, 3):
                raise UsageError(f"--levels {self.levels!r}: write MIN:MAX or MIN:MAX:STEP, e.g. 0.35:0.85:1/16")
            try:
                lo, hi = float(parts[0]), float(parts[1])
            except ValueError:
                raise UsageError(f"--levels {self.levels!r}: MIN and MAX must be numbers, e.g. 0.35:0.85") from None
            if len(parts) == 3:
                step = parse_step(parts[2])
            if not 0.0 <= lo < hi < 1.0:
                raise UsageError(f"--levels {self.levels!r}: need 0 <= MIN < MAX < 1")
        if not lo <= s <= hi:
            raise UsageError(f"budget {budget} is unreachable with levels {lo:g}..{hi:g}: every layer would need "
                             f"a sparsity of {s:g}; widen --levels to include it")
        if s - float(step) < lo and s + float(step) > hi:
            raise UsageError(f"--levels {lo:g}:{hi:g} with step {step} leaves only the uniform level: widen "
                             "it or use a smaller step")
        return lo, hi, step

"""The search space: per-unit level ranges with integer costs, and budget-exact mutations.

Each unit ``u`` (a Linear for sparsity, a block for dropping) has level offsets ``k`` in
``[lo_u, hi_u]`` (0 = the uniform profile's level) and a whole-number weight ``w_u``: the
profile's cost is ``sum(k_u * w_u)`` and the budget is met exactly when it is 0.

For sparsity, level ``k`` of a layer with ``n`` weights holds ``base + k * n * step`` zeros, so
``w_u = n_u * step / g`` (``g``: the gcd over the layers): one step of a 3x larger layer is worth
three steps of the smaller one. For dropping, ``k`` is 0 (kept) or 1 (dropped) relative to the
start set, weight 1.

For bit widths, a unit's levels are its bit widths (index 0 = the lowest) with an explicit cost
per level (``costs[u][k]``: bits or bytes, over the gcd), the start is the budget's start profile,
and the budget is met when the total equals the start's.

A mutation (EvoPress's level switch) moves one unit a level up or down and *repairs* the cost
by moving other units the other way until the total change is exactly zero (units of the same
weight first, so most switches are clean swaps); a switch that cannot be repaired is retried
elsewhere. The total stays exactly the budget's.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

Profile = tuple[int, ...]


@dataclass
class Space:
    """Level ranges and weights of the units (names in execution order)."""

    names: list[str]
    lo: list[int]
    hi: list[int]
    weight: list[int]
    #: per unit, the cost of each level index (None: level k costs ``k * weight``)
    costs: list[list[int]] | None = None
    #: the start profile (None: level 0 everywhere)
    origin: Profile | None = None

    def __post_init__(self) -> None:
        if not (len(self.names) == len(self.lo) == len(self.hi) == len(self.weight)):
            raise ValueError("space: one lo / hi / weight per unit")
        self.total = self.cost(self.start)

    @property
    def start(self) -> Profile:
        return self.origin if self.origin is not None else tuple(0 for _ in self.names)

    def level_cost(self, u: int, k: int) -> int:
        return self.costs[u][k] if self.costs is not None else k * self.weight[u]

    def cost(self, profile: Profile) -> int:
        return sum(self.level_cost(u, k) for u, k in enumerate(profile))

    def valid(self, profile: Profile) -> bool:
        return all(lo <= k <= hi for k, lo, hi in zip(profile, self.lo, self.hi, strict=True)) and \
            self.cost(profile) == self.total

    def _delta(self, u: int, k: int, d: int) -> int:
        """|cost change| of moving unit ``u`` from level ``k`` by ``d`` (costs increase with the level)."""
        return abs(self.level_cost(u, k + d) - self.level_cost(u, k))

    def _switch(self, child: list[int], rng: random.Random) -> bool:
        """One cost-neutral level switch in place; False when none was found in a few tries."""
        n = len(child)
        for _ in range(8 * n):
            a = rng.randrange(n)
            d = rng.choice((-1, 1))
            if not self.lo[a] <= child[a] + d <= self.hi[a]:
                continue
            trial = list(child)
            need = self._delta(a, trial[a], d)
            trial[a] += d
            others = [b for b in range(n) if b != a]
            rng.shuffle(others)
            same = [b for b in others if self.lo[b] <= trial[b] - d <= self.hi[b]
                    and self._delta(b, trial[b], -d) == need]
            for pool in (same, others):
                progress = True
                while need and progress:
                    progress = False
                    for b in pool:
                        if need and self.lo[b] <= trial[b] - d <= self.hi[b] and \
                                (step := self._delta(b, trial[b], -d)) <= need:
                            trial[b] -= d
                            need -= step
                            progress = True
                            if pool is same:
                                break
                    if pool is same:
                        break
                if not need:
                    break
            if need == 0:
                child[:] = trial
                return True
        return False

    def nearest(self, targets: list[float]) -> Profile:
        """A profile near real-valued levels ``targets`` whose cost is exactly the budget's: each unit
        rounded into its range, then units moved one level at a time, toward their targets first and
        the largest weight that still fits the remaining difference first, until the cost matches.
        Deterministic; a ValueError when no such profile is found."""
        prof = [min(max(round(t), lo), hi) for t, lo, hi in zip(targets, self.lo, self.hi, strict=True)]
        diff = self.cost(tuple(prof)) - self.total
        while diff:
            d = -1 if diff > 0 else 1
            moves = [u for u in range(len(prof)) if self.lo[u] <= prof[u] + d <= self.hi[u]
                     and self._delta(u, prof[u], d) <= abs(diff)]
            if not moves:
                raise ValueError("no profile near the targets meets the budget exactly")
            u = max(moves, key=lambda u: (self._delta(u, prof[u], d), (targets[u] - prof[u]) * d, -u))
            diff += d * self._delta(u, prof[u], d)
            prof[u] += d
        return tuple(prof)

    def mutate(self, parent: Profile, rng: random.Random, max_switches: int) -> Profile:
        """An offspring: ``min(U(1, m), U(1, m))`` cost-neutral level switches of ``parent``."""
        child = list(parent)
        switches = min(rng.randint(1, max_switches), rng.randint(1, max_switches))
        for _ in range(switches):
            self._switch(child, rng)
        return tuple(child)

    def offspring(self, parent: Profile, rng: random.Random, count: int, max_switches: int) -> list[Profile]:
        """``count`` distinct offspring different from ``parent`` (fewer when the space is that small)."""
        seen = {parent}
        kids: list[Profile] = []
        for _ in range(count * 20):
            if len(kids) == count:
                break
            kid = self.mutate(parent, rng, max_switches)
            if kid not in seen:
                seen.add(kid)
                kids.append(kid)
        return kids

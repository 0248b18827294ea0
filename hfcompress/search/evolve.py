"""The evolutionary loop (EvoPress-style (1 + lambda) with multi-step selection), resumable.

Generation ``g`` (its random generator seeded from ``(seed, g)``, so a resumed run draws exactly
what an uninterrupted one would):

1. ``offspring`` distinct mutations of the parent (cost-neutral level switches, :mod:`.space`);
2. selection steps: all offspring scored on ``tokens[0]`` fitness tokens, the best
   ``survivors[0]`` kept and scored on ``tokens[1]``, ... down to one;
3. the survivor replaces the parent when its fitness on the last step's tokens is no worse.

The state (generation, parent, its fitness, the curve) is written atomically after every
generation; a rerun with the same key continues from it.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .space import Profile, Space


@dataclass
class SearchState:
    key: str
    generation: int
    parent: list[int]
    fitness: float
    curve: list[dict[str, Any]] = field(default_factory=list)
    evaluations: int = 0
    resumed_from: list[int] = field(default_factory=list)
    #: this run stopped before ``generations`` because the next generation would pass the deadline
    stopped_at_deadline: bool = False

    @classmethod
    def load(cls, path: Path, key: str) -> SearchState | None:
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        if data.get("key") != key:
            return None
        return cls(**data)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.__dict__, indent=1))
        os.replace(tmp, path)


def _progress_line(g: int, total: int, best: float, tokens: list[int], started: float, done_now: int) -> str:
    elapsed = time.perf_counter() - started
    eta = elapsed / max(done_now, 1) * (total - g)
    return (f"search: generation {g}/{total} best KL {best:.5f} tokens per candidate "
            f"{'/'.join(map(str, tokens))} ETA {eta:.0f}s")


def evolve(space: Space, evaluate: Callable[[Profile, int], float], *, key: str, state_path: Path,
           generations: int, offspring: int, tokens: list[int], survivors: list[int], max_switches: int,
           seed: int, progress: bool = True, note: Callable[[str], None] | None = None,
           prime: Callable[[Profile], None] | None = None, deadline: float | None = None) -> SearchState:
    """Run (or continue) the search; ``evaluate(profile, tokens)`` -> fitness (lower is better);
    ``prime(parent)`` is called before each generation (a scorer's cache of the parent, lost by a resume);
    no generation starts that would end past ``deadline`` (``time.perf_counter()`` seconds, judged by
    the mean generation time so far; at least one runs)."""
    state = SearchState.load(state_path, key)
    if state is None:
        start = space.start
        state = SearchState(key=key, generation=0, parent=list(start), fitness=evaluate(start, tokens[-1]),
                            evaluations=1)
        state.curve.append({"generation": 0, "fitness": state.fitness, "best_offspring": None, "accepted": True})
        state.save(state_path)
    elif state.generation < generations:
        state.resumed_from.append(state.generation)
    started = time.perf_counter()
    first = state.generation
    state.stopped_at_deadline = False
    while state.generation < generations:
        g = state.generation
        done = g - first
        if deadline is not None and done and \
                time.perf_counter() + (time.perf_counter() - started) / done > deadline:
            state.stopped_at_deadline = True
            break
        rng = random.Random(f"hfcompress-search:{seed}:{g}")
        parent: Profile = tuple(state.parent)
        if prime is not None:
            prime(parent)
        cands = space.offspring(parent, rng, offspring, max_switches)
        scores: dict[Profile, float] = {}
        for t, keep in zip(tokens, survivors, strict=True):
            scored = [(evaluate(c, t), i, c) for i, c in enumerate(cands)]
            state.evaluations += len(scored)
            scored.sort(key=lambda s: (s[0], s[1]))
            cands = [c for _, _, c in scored[:keep]]
            scores = {c: f for f, _, c in scored[:keep]}
        best = cands[0] if cands else None
        accepted = best is not None and scores[best] <= state.fitness
        if accepted:
            state.parent, state.fitness = list(best), scores[best]
        state.generation = g + 1
        state.curve.append({"generation": g + 1, "fitness": state.fitness,
                            "best_offspring": scores.get(best) if best is not None else None,
                            "accepted": bool(accepted)})
        state.save(state_path)
        line = _progress_line(g + 1, generations, state.fitness, tokens, started, g + 1 - first)
        if note is not None:
            note(line)
        if progress:
            print(line, file=sys.stderr, flush=True)
    return state

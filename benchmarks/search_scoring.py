"""Candidate scoring in the search, side by side in one process: whole forwards vs runs from the
first changed block (:class:`hfcompress.search.fitness.PrefixScorer`), on SmolLM2-135M-Instruct with
the SparseGPT 60 % level database (built on first use, then cached).

The same generations as a search (8 offspring on 512 tokens, the best 2 on 2,048, the best kept
when no worse) are scored by both scorers, interleaved generation by generation, so machine load
affects both alike; the KLs are compared (equal on 2,048 tokens, to float rounding on 512)::

    .venv/bin/python benchmarks/search_scoring.py [--generations 6]

Writes benchmarks/results/search_scoring.json and .md.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--generations", type=int, default=6)
    a = p.parse_args(argv)
    import torch

    torch.set_num_threads(2)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from search_smollm2 import MODEL, _setup

    import hfcompress
    from hfcompress.calibration import block_index, find_block_stacks
    from hfcompress.prune.engine import arch_info, target_linears
    from hfcompress.search import parse_budget
    from hfcompress.search.database import SparsityDatabase
    from hfcompress.search.fitness import Fitness, PrefixScorer
    from hfcompress.search.run import Installed, _fitness_windows, plan_sparsity

    cal, cfg = _setup("sparsegpt-60", 1, 8, [512, 2048], [2, 1])
    b = hfcompress.load(str(MODEL), dtype="float32")
    budget = parse_budget(cfg.budget)
    lo, hi, step = cfg.grid(budget)
    linears = target_linears(b.model, arch_info(b.model), None, None)
    plan = plan_sparsity(linears, "sparsegpt", budget, lo, hi, step)
    db = SparsityDatabase(b, "sparsegpt", cal, None)
    db.ensure({n: [plan.zeros(n, min(max(k, plan.space.lo[i]), plan.space.hi[i]))
                   for k in range(plan.kmin, plan.kmax + 1)] for i, n in enumerate(plan.names)})
    fitness = Fitness(b.model, _fitness_windows(b, cfg))
    installed = Installed(db, plan)
    stacks = find_block_stacks(b.model)
    prefix = PrefixScorer(fitness, list(stacks[0].blocks), [block_index(n, stacks)[1] for n in plan.names],
                          installed.set, 2048)

    def whole(profile, tokens):
        installed.set(profile)
        return fitness(tokens)

    seconds = {"whole": 0.0, "first changed block": 0.0}
    diffs = {512: 0.0, 2048: 0.0}
    parent, parent_kl = plan.space.start, prefix(plan.space.start, 2048)
    for g in range(a.generations):
        rng = random.Random(f"bench:{g}")
        kids = plan.space.offspring(parent, rng, 8, cfg.max_switches)
        scores = {}
        for tokens, keep in ((512, 2), (2048, 1)):
            got = {}
            for label, score in (("whole", whole), ("first changed block", prefix)):
                t = time.perf_counter()
                got[label] = [score(k, tokens) for k in kids]
                seconds[label] += time.perf_counter() - t
            diffs[tokens] = max([diffs[tokens]] + [abs(x - y) for x, y in zip(*got.values(), strict=True)])
            order = sorted(range(len(kids)), key=lambda i: got["whole"][i])[:keep]
            scores = {kids[i]: got["whole"][i] for i in order}
            kids = [kids[i] for i in order]
        if scores[kids[0]] <= parent_kl:
            parent, parent_kl = kids[0], scores[kids[0]]
        prefix.prime(parent)
        print(f"generation {g + 1}: whole {seconds['whole']:.1f} s, first changed block "
              f"{seconds['first changed block']:.1f} s", flush=True)
    row = {"generations": a.generations, "offspring": 8, "tokens": [512, 2048], "survivors": [2, 1],
           "seconds": {k: round(v, 1) for k, v in seconds.items()},
           "ratio": round(seconds["first changed block"] / seconds["whole"], 3),
           "fraction_of_blocks_run": round(prefix.blocks_run / prefix.blocks_total, 4),
           "max_abs_kl_difference": {str(k): v for k, v in diffs.items()}}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "search_scoring.json").write_text(json.dumps(row, indent=2) + "\n")
    (RESULTS / "search_scoring.md").write_text("\n".join([
        "# Search candidate scoring: whole forwards vs from the first changed block (SmolLM2-135M, SparseGPT 60 %)",
        "",
        f"{a.generations} generations of 8 offspring on 512 tokens and the best 2 on 2,048, both scorers on the "
        "same candidates, interleaved in one process.",
        "",
        "| scorer | seconds | ratio |", "|---|---:|---:|",
        f"| whole forwards | {row['seconds']['whole']} | 1.000 |",
        f"| from the first changed block | {row['seconds']['first changed block']} | {row['ratio']} |",
        "",
        f"Block forwards run: {row['fraction_of_blocks_run']:.1%} of a whole forward's. Largest KL difference: "
        f"{diffs[2048]:.3g} on 2,048 tokens (bit for bit: 0), {diffs[512]:.3g} on 512.", ""]))
    print(json.dumps(row, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

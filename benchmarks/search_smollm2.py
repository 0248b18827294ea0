"""Budget-driven search (issue 18) on SmolLM2-135M-Instruct: searched vs uniform / OWL / angular.

Setup: fp32 model; level database, calibration and search fitness on fixtures/enwiki-sample
(32 x 512 calibration tokens, seed 0; fitness windows seed 1); quality = perplexity on the first
16,384 WikiText-2 test tokens in 512-token windows (never searched on). Each configuration runs
in its own process::

    .venv/bin/python benchmarks/search_smollm2.py sparsegpt-60 --start owl --time-limit 41 --generations 200
    .venv/bin/python benchmarks/search_smollm2.py sparsegpt-60 --baseline uniform   # or owl (own process)
    .venv/bin/python benchmarks/search_smollm2.py sparsegpt-70 --generations 55
    .venv/bin/python benchmarks/search_smollm2.py drop-6
    .venv/bin/python benchmarks/search_smollm2.py gptq-bits-3.5 [--baseline uniform]   # uniform = plain gptq 4-bit
    .venv/bin/python benchmarks/search_smollm2.py gptq-bits-3 [--baseline uniform]   # uniform = sequential GPTQ,
                                                    # every block Linear overridden to 3 bits
    .venv/bin/python benchmarks/search_smollm2.py gptq-bits-4.5 [--baseline uniform]   # vs plain gptq 4-bit
    .venv/bin/python benchmarks/search_smollm2.py gptq-bits-3-seqdb --time-limit 41 --generations 200
                                                    # database on the uniform 3-bit sequential inputs
    .venv/bin/python benchmarks/search_smollm2.py gptq-size-0.11
    .venv/bin/python benchmarks/search_smollm2.py gptq-bits-3-groups --time-limit 41 --generations 200
                                                    # (bits, group size) levels, same bytes as uniform 3-bit
    .venv/bin/python benchmarks/search_smollm2.py gptq-bits-4.5-seqdb --time-limit 41 --generations 400
                                                    # levels 3,4,5,6,8, database on sequential inputs
    .venv/bin/python benchmarks/search_smollm2.py sparsegpt-60 --reproduce   # after the search
    .venv/bin/python benchmarks/search_smollm2.py sparsegpt-60 --reproduce --from-row   # cache gone: the
                                                    # recipe rebuilt from the recorded per-layer levels

``--reproduce`` resumes the finished search from its cache at the generation its row reached (no new
evaluation), writes its recipe to
``benchmarks/results/search-recipes/NAME.yaml``, runs that file through ``hfcompress.compress`` on a
freshly loaded model, saves and reloads the output, and records its perplexity beside the searched one.

Writes benchmarks/results/search.json and .md (rows merged by configuration).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from hfcompress.assets import SMOLLM2, asset_path
from hfcompress.data import local_datasets_dir

ROOT = Path(__file__).resolve().parents[1]
MODEL = asset_path(SMOLLM2)
DATA = str(local_datasets_dir())
RESULTS = ROOT / "benchmarks" / "results"
OUT = Path(os.environ.get("SEARCH_BENCH_OUT", "/tmp/hfcompress-search-bench"))
STARTED = time.perf_counter()

#: dense perplexity, same evaluation (benchmarks/results/prune_unstructured.md)
DENSE_PPL = 28.13

#: name -> search options
CONFIGS = {
    "sparsegpt-60": {"method": "sparsegpt", "budget": "sparsity=0.6", "levels": "0.4:0.8:1/16"},
    "sparsegpt-70": {"method": "sparsegpt", "budget": "sparsity=0.7", "levels": "0.5:0.9:1/16"},
    "drop-6": {"method": "drop", "budget": "blocks=6"},
    "gptq-bits-3.5": {"method": "gptq", "budget": "bits=3.5", "levels": "2,3,4,8"},
    "gptq-bits-3": {"method": "gptq", "budget": "bits=3", "levels": "2,3,4,8"},
    "gptq-bits-3-seqdb": {"method": "gptq", "budget": "bits=3", "levels": "2,3,4,8", "database_inputs": "sequential"},
    "gptq-bits-4.5": {"method": "gptq", "budget": "bits=4.5", "levels": "2,3,4,8"},
    # group-size levels, costed in bytes: bits=3 = the bytes of uniform 3-bit at the default groups
    "gptq-bits-3-groups": {"method": "gptq", "budget": "bits=3", "levels": "2g32,3ch,3,3g64,3g32,4ch,4,4g64",
                           "database_inputs": "sequential"},
    "gptq-size-0.11": {"method": "gptq", "budget": "size=0.11", "levels": "2,3,4,8"},
    # 4.5 bits with levels around it (3..6, 8), database on the start's sequential inputs
    "gptq-bits-4.5-seqdb": {"method": "gptq", "budget": "bits=4.5", "levels": "3,4,5,6,8",
                            "database_inputs": "sequential"},
}

#: the plain (sequential) GPTQ run a bit-width search is compared with, same group size (4.5 bits vs
#: 4-bit, as the issue asks). Plain GPTQ stores 4 or 8 bits only (compressed-tensors pack-quantized),
#: so at bits=3 the uniform point is the GPTQ stage with every block Linear overridden to 3 bits
#: (sequential, what the searched recipe runs with all levels at 3).
UNIFORM_BITS = {"gptq-bits-3.5": 4, "gptq-bits-4.5": 4, "gptq-bits-4.5-seqdb": 4, "gptq-size-0.11": 4}


def _setup(name: str, generations: int, offspring: int, tokens: list[int], survivors: list[int],
           levels: str | None = None, time_limit: float | None = None, start: str | None = None,
           database_inputs: str | None = None):
    import torch

    torch.set_num_threads(2)
    from hfcompress.config import CalibrationConfig
    from hfcompress.search import SearchConfig

    cal = CalibrationConfig(dataset=f"{DATA}/fixtures/enwiki-sample", samples=32, seq_len=512)
    given = {"levels": levels, "start": start, "database_inputs": database_inputs}
    opts = {**CONFIGS[name], **{k: v for k, v in given.items() if v}}
    return cal, SearchConfig(**opts, generations=generations, offspring=offspring, tokens=tokens,
                             survivors=survivors, calibration=cal, baselines=False, time_limit=time_limit)


def _ppl(model, tok) -> float:
    from hfcompress.data import load_texts
    from hfcompress.evaluate.perplexity import perplexity_of_ids, tokenize_corpus

    texts = load_texts(f"{DATA}/Salesforce/wikitext", "wikitext-2-raw-v1", "test")
    ids = tokenize_corpus(tok, texts, max_tokens=16384)
    return round(perplexity_of_ids(model, ids, seq_len=512)["perplexity"], 3)


def _zeros(model) -> int:
    return sum(int((p == 0).sum()) for n, p in model.named_parameters() if ".layers." in n and n.endswith("proj.weight"))


def run_one(name: str, generations: int, offspring: int, tokens: list[int], survivors: list[int],
            levels: str | None = None, time_limit: float | None = None, start: str | None = None,
            database_inputs: str | None = None) -> dict:
    """The search (model assembled from the level database), its perplexity and the uniform
    dense-inputs start's (also from the database)."""
    import hfcompress
    from hfcompress.prune.drop import DropBlocksConfig
    from hfcompress.search import parse_budget, search
    from hfcompress.search.database import SparsityDatabase
    from hfcompress.stage import StageContext, run_stage

    cal, cfg = _setup(name, generations, offspring, tokens, survivors, levels, time_limit, start, database_inputs)
    t = time.perf_counter()
    res = search(str(MODEL), cfg, progress=True)
    rep = res.report
    row = {"name": name, **CONFIGS[name], "levels": cfg.levels, "finalize": cfg.finalize, "generations": rep["search"]["generations"], "offspring": offspring,
           "tokens": tokens, "survivors": survivors, "evaluations": rep["search"]["evaluations"],
           "search_seconds_under_load": round(time.perf_counter() - t), "database": rep["database"],
           "budget_check": rep["budget_check"], "curve": [round(c["fitness"], 5) for c in rep["curve"]],
           "resumed_from": rep["search"]["resumed_from"], "scoring": rep.get("scoring"),
           "time_limit_minutes": time_limit, "stopped_at_time_limit": rep["search"]["stopped_at_time_limit"],
           "generations_asked": generations, "start": cfg.start,
           "database_inputs": cfg.database_inputs}
    # comparison[0] is the output: with finalize=sequential the searched levels recomputed block by block;
    # the database profile the search scored follows it
    points = {"searched": {"kl": rep["comparison"][0]["kl"], "ppl": _ppl(res.bundle.model, res.bundle.tokenizer)}}
    print("searched", points["searched"], flush=True)
    scored = rep["comparison"][1] if rep["comparison"][1]["name"].startswith("searched profile") else None
    start = next(c for c in rep["comparison"] if c["name"].startswith(("uniform (", "OWL-shaped (", "start", "angular")))
    b = hfcompress.load(str(MODEL), dtype="float32")
    if cfg.method == "drop":
        run_stage(b, DropBlocksConfig(blocks=start["dropped"]), StageContext(progress=False))
        row["dropped"] = {"searched": rep["dropped"], "angular": start["dropped"]}
    elif cfg.method == "gptq":  # the near-uniform start, assembled from the level database
        from hfcompress.search.database import BitsDatabase, Width
        from hfcompress.search.run import _gptq_config

        points["searched"]["zeros"] = _bits(rep["comparison"][0])
        db = BitsDatabase(b, _gptq_config(cfg), cfg.cache_dir)
        if cfg.database_inputs == "sequential":
            db.sequential_inputs({r["name"]: Width.parse(r["start_width"]) for r in rep["layers"]})
        if scored is not None:
            for r in rep["layers"]:
                db.install(r["name"], Width.parse(r["width"]))
            points[scored["name"]] = {"kl": scored["kl"], "ppl": _ppl(b.model, b.tokenizer),
                                      "zeros": _bits(scored)}
        for r in rep["layers"]:
            db.install(r["name"], Width.parse(r["start_width"]))
        row["layers"] = [(r["name"].replace("model.layers.", ""), r["width"]) for r in rep["layers"]]
    else:
        points["searched"]["zeros"] = _zeros(res.bundle.model)
        q = cfg.grid(parse_budget(cfg.budget))[2].denominator
        db = SparsityDatabase(b, cfg.method, cal, None, cfg.cache_dir)
        if cfg.database_inputs == "sequential":
            db.sequential_inputs({r["name"]: r["zeros"] - (r["level"] - r["start_level"]) * (r["params"] // q)
                                  for r in rep["layers"]})
        if scored is not None:
            for r in rep["layers"]:
                db.install(r["name"], r["zeros"])
            points[scored["name"]] = {"kl": scored["kl"], "ppl": _ppl(b.model, b.tokenizer), "zeros": _zeros(b.model)}
        for r in rep["layers"]:  # the search's start: level 0 everywhere (uniform) or OWL's levels
            db.install(r["name"], r["zeros"] - (r["level"] - r["start_level"]) * (r["params"] // q))
        row["layers"] = [(r["name"].replace("model.layers.", ""), round(r["sparsity"], 4)) for r in rep["layers"]]
    points[start["name"]] = {"kl": start["kl"], "ppl": _ppl(b.model, b.tokenizer)}
    if cfg.method == "gptq":
        points[start["name"]]["zeros"] = _bits(start)
    elif cfg.method != "drop":
        points[start["name"]]["zeros"] = _zeros(b.model)
    row["points"] = points
    return row


def _bits(point: dict) -> str:
    """A bit-width point's size: average code bits per weight and the packed bytes (codes + scales)."""
    return f"{point['average_bits']:.4f} bits, {point['bytes']:,} bytes"


def run_baseline(name: str, which: str, tokens: list[int]) -> dict:
    """Uniform or OWL (the method's ordinary sequential prune) at the same budget: ppl, KL, zeros."""
    import hfcompress
    from hfcompress.prune import SparseGPTConfig, WandaConfig
    from hfcompress.search.fitness import Fitness
    from hfcompress.search.run import _fitness_windows
    from hfcompress.stage import StageContext, run_stage

    cal, cfg = _setup(name, 0, 1, tokens, [1] * len(tokens))
    if cfg.method == "gptq":  # the reference point: plain `quantize --method gptq --bits N` (sequential)
        from hfcompress.quantize import GPTQConfig

        dense = hfcompress.load(str(MODEL), dtype="float32")
        fitness = Fitness(dense.model, _fitness_windows(dense, cfg))
        b = hfcompress.load(str(MODEL), dtype="float32")
        if name in UNIFORM_BITS:
            bits = UNIFORM_BITS[name]
            stage = GPTQConfig(bits=bits, group_size=cfg.gptq_group_size(), calibration=cal)
        else:  # plain GPTQ stores 4 or 8 bits: every block Linear at the budget's width through `overrides`
            from hfcompress.search.run import _gptq_config

            bits = int(float(cfg.budget.split("=")[1]))
            stage = _gptq_config(cfg, {"model.layers.*": bits}).model_copy(update={"dense_inputs": False})
        run_stage(b, stage, StageContext(progress=False))
        return {"kl": fitness(tokens[-1], b.model), "ppl": _ppl(b.model, b.tokenizer), "zeros": f"{bits} bits",
                "stage": stage.model_dump(mode="json", include={"bits", "group_size", "overrides", "dense_inputs"})}
    s = float(cfg.budget.split("=")[1])
    cls = SparseGPTConfig if cfg.method == "sparsegpt" else WandaConfig
    dense = hfcompress.load(str(MODEL), dtype="float32")
    fitness = Fitness(dense.model, _fitness_windows(dense, cfg))
    b = hfcompress.load(str(MODEL), dtype="float32")
    run_stage(b, cls(sparsity=s, calibration=cal, owl=which == "owl"), StageContext(progress=False))
    return {"kl": fitness(tokens[-1], b.model), "ppl": _ppl(b.model, b.tokenizer), "zeros": _zeros(b.model)}


def _gptq_stage_from_row(cfg, row: dict):
    """The searched GPTQ stage from a bit-width row's per-layer widths (``3g64``, ``3ch``), with the overrides
    the search itself writes (the group size only where it is not the stage's plan); the row's average bits
    are checked."""
    import hfcompress
    from hfcompress.quantize.rtn import prepare
    from hfcompress.search.database import Width
    from hfcompress.search.run import _gptq_config, _overrides

    chosen, _, plan, _ = prepare(hfcompress.load(str(MODEL), dtype="float32"), _gptq_config(cfg))
    widths = {f"model.layers.{short}": Width.parse(text) for short, text in row["layers"]}
    numel = {n: chosen[n].weight.numel() for n in widths}
    average = sum(w.bits * numel[n] for n, w in widths.items()) / sum(numel.values())
    if abs(average - row["budget_check"]["average_bits"]) > 1e-9:
        raise SystemExit(f"rebuilt profile averages {average} bits, the row {row['budget_check']['average_bits']}")
    return _gptq_config(cfg, _overrides(plan, widths)).model_copy(update={"dense_inputs": cfg.finalize == "assembled"})


def recipe_from_row(cfg, row: dict):
    """The recipe a finished search writes, rebuilt from its recorded row (for ``--reproduce --from-row`` when
    the search's cache is gone): sparsity, the same ``plan_sparsity`` zero counts, checked against the row's
    total, as per-layer overrides of the sequential prune stage; bits, the GPTQ stage with per-layer widths;
    drop, the searched blocks."""
    import hfcompress
    from hfcompress.prune.engine import arch_info, target_linears
    from hfcompress.recipes import Recipe
    from hfcompress.search import parse_budget
    from hfcompress.search.run import PRUNE_CONFIGS, plan_sparsity

    budget = parse_budget(cfg.budget)
    name = f"search-{cfg.method}-{str(budget).replace('=', '-')}"
    if cfg.method == "drop":  # the searched set of blocks, as the search's recipe lists it
        from hfcompress.prune.drop import DropBlocksConfig

        return Recipe(name=name, stages=[DropBlocksConfig(blocks=sorted(row["dropped"]["searched"]))])
    if cfg.method == "gptq":
        return Recipe(name=name, stages=[_gptq_stage_from_row(cfg, row)])
    if cfg.method not in PRUNE_CONFIGS:
        raise SystemExit(f"--from-row rebuilds sparsity, bit-width and block-drop recipes, not {cfg.method}")
    lo, hi, step = cfg.grid(budget)
    model = hfcompress.load(str(MODEL), dtype="float32").model
    plan = plan_sparsity(target_linears(model, arch_info(model), None, None), cfg.method, budget, lo, hi, step)
    level = {f"model.layers.{n}": s for n, s in row["layers"]}
    overrides = {}
    for n in plan.names:
        z = plan.zeros(n, round((level[n] - budget.value) * step.denominator))
        if abs(z / plan.numel[n] - level[n]) > 1e-4:
            raise SystemExit(f"{n}: the recorded sparsity {level[n]} is not a level of the grid")
        overrides[n] = z / plan.numel[n]
    zeros = sum(round(overrides[n] * plan.numel[n]) for n in plan.names)
    if zeros != row["budget_check"]["zeros"]:
        raise SystemExit(f"rebuilt profile has {zeros} zeros, the row {row['budget_check']['zeros']}")
    stage = PRUNE_CONFIGS[cfg.method](sparsity=budget.value, dense_inputs=cfg.finalize == "assembled",
                                      overrides=overrides, calibration=cfg.calibration, batch_size=cfg.batch_size)
    return Recipe(name=name, stages=[stage])


def run_reproduce(name: str, generations: int, offspring: int, tokens: list[int], survivors: list[int],
                  levels: str | None = None, start: str | None = None, database_inputs: str | None = None,
                  from_row: dict | None = None) -> dict:
    """The issue's check: the recipe the search writes, run by ``compress`` from its YAML file on a fresh
    model (saved and reloaded as a user would), scores the searched profile's perplexity. ``from_row``:
    rebuild that recipe from the recorded profile instead of resuming the cached search."""
    import tempfile

    import hfcompress
    from hfcompress.recipes import dump_recipe, load_recipe
    from hfcompress.search import search

    _, cfg = _setup(name, generations, offspring, tokens, survivors, levels, None, start, database_inputs)
    if from_row is not None:  # the cache is gone: the recipe of the recorded profile
        recipe = recipe_from_row(cfg, from_row)
    else:
        res = search(str(MODEL), cfg, progress=True)  # resumes the cached run: no generation is evaluated again
        recipe = res.recipe
        del res
    path = RESULTS / "search-recipes" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_recipe(recipe))
    with tempfile.TemporaryDirectory(prefix="search-reproduce-") as tmp:
        hfcompress.compress(str(MODEL), load_recipe(path), output=f"{tmp}/out", overwrite=True, progress=False,
                            load_kwargs={"dtype": "float32"})
        b = hfcompress.load(f"{tmp}/out", dtype="float32")
        ppl = _ppl(b.model, b.tokenizer)
    return {"recipe": str(path.relative_to(ROOT)), "reproduced_ppl": ppl}


def write_results(rows: list[dict]) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "search.json").write_text(json.dumps(rows, indent=2) + "\n")
    lines = ["# Budget-driven search on SmolLM2-135M-Instruct (fp32)", "",
             "Level database, calibration and fitness on fixtures/enwiki-sample (32 x 512 tokens; fitness windows "
             "seed 1); perplexity on the first 16,384 WikiText-2 test tokens (512-token windows). KL = mean "
             "per-token KL(dense || model) on the last selection step's fitness tokens. Timings are quotable "
             "only where a row's note says the machine was quiet.", ""]
    for r in rows:
        lines += [f"## {r['name']}: {r['method']} {r['budget']}" + (f" levels {r['levels']}" if r.get("levels") else ""),
                  "",
                  f"{r['generations']} generations x {r['offspring']} offspring, selection on {r['tokens']} tokens "
                  f"(survivors {r['survivors']}), {r['evaluations']} evaluations; budget check "
                  f"{json.dumps(r['budget_check'])}; search wall time {r['search_seconds_under_load']} s "
                  f"(database included when built in that run)"
                  + (f" (when first run; re-finalized from the cache in {r['finalize_only_seconds']} s)"
                     if r.get("finalize_only_seconds") else "")
                  + (f", plus {r['search_seconds_earlier_parts']} s in the run(s) it resumed (generations "
                     f"{r['resumed_from']})" if r.get("search_seconds_earlier_parts") else "")
                  + (f"; whole process {r['process_wall_s']} s, peak RSS {r['peak_rss_mib']} MiB"
                     if "process_wall_s" in r else "") + ".", "",
                  "| profile | WikiText-2 ppl | KL to dense | zeros / bits |", "|---|---:|---:|---:|"]
        for label, p in r["points"].items():
            lines.append(f"| {label} | {p.get('ppl', '')} | {p['kl']:.4f} | {p.get('zeros', '')} |")
        if "reproduced_ppl" in r:
            same = r["reproduced_ppl"] == r["points"]["searched"]["ppl"]
            lines += ["", f"Reproduced: `{r['recipe']}` (written from {r.get('reproduced_from', 'the cached search')}) run by `hfcompress compress` on a fresh model, saved and "
                          f"reloaded: WikiText-2 ppl {r['reproduced_ppl']} "
                          f"({'identical to' if same else 'DIFFERS from'} the searched {r['points']['searched']['ppl']})."]
        if r.get("dropped"):
            lines += ["", f"dropped blocks: searched {r['dropped']['searched']}, angular {r['dropped']['angular']}"]
        lines += ["", f"search curve (parent KL by generation): {r['curve']}", ""]
        if r.get("note"):
            lines += [f"Note: {r['note']}", ""]
    (RESULTS / "search.md").write_text("\n".join(lines) + "\n")


def record(row: dict) -> None:
    path = RESULTS / "search.json"
    rows = {r["name"]: r for r in (json.loads(path.read_text()) if path.exists() else [])}
    old = rows.get(row["name"], {})
    row["points"] = {**{k: v for k, v in old.get("points", {}).items() if k in ("uniform", "owl", "dense")},
                     **row["points"]}
    if old and old.get("curve") == row["curve"] and old.get("evaluations") == row["evaluations"]:
        # the finished search reloaded from its cache (no generation run): this run only finalized it
        row["finalize_only_seconds"] = row["search_seconds_under_load"]
        row["search_seconds_under_load"] = old["search_seconds_under_load"]
        row.pop("resumed_from", None)
    elif row.get("resumed_from") and old.get("generations", 0) in row["resumed_from"]:
        # a resumed search: the earlier part's wall time (its database and generations) counts too
        row["search_seconds_earlier_parts"] = old.get("search_seconds_earlier_parts", 0) + old["search_seconds_under_load"]
    else:  # a new search: nothing measured on the old one carries over (the baselines above excepted)
        old = {k: v for k, v in old.items() if k not in ("search_seconds_earlier_parts", "finalize_only_seconds",
                                                         "note", "recipe", "reproduced_ppl", "resumed_from")}
    rows[row["name"]] = {**old, **row}
    write_results([rows[n] for n in CONFIGS if n in rows])


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("name", choices=list(CONFIGS))
    p.add_argument("--baseline", choices=["uniform", "owl"], default=None,
                   help="score only this baseline (its own process: run it alongside the search)")
    p.add_argument("--generations", type=int, default=30)
    p.add_argument("--offspring", type=int, default=8)
    p.add_argument("--tokens", type=int, nargs="+", default=[512, 2048])
    p.add_argument("--survivors", type=int, nargs="+", default=[2, 1])
    p.add_argument("--levels", default=None, help="override the configuration's sparsity grid")
    p.add_argument("--start", choices=["uniform", "owl"], default=None, help="the search's first parent")
    p.add_argument("--database-inputs", choices=["dense", "sequential"], default=None,
                   help="calibrate the level database on dense or on the start profile's sequential inputs")
    p.add_argument("--time-limit", type=float, default=None, metavar="MINUTES",
                   help="the search's time limit (loading and database included): as many generations as fit")
    p.add_argument("--reproduce", action="store_true",
                   help="after the search: run its recipe through compress from the YAML file and score it")
    p.add_argument("--from-row", action="store_true",
                   help="with --reproduce: rebuild the recipe from the recorded profile in "
                        "search.json instead of resuming the cached search (when the cache is gone)")
    a = p.parse_args(argv)
    if a.reproduce:
        results = RESULTS / "search.json"
        rows = {r["name"]: r for r in (json.loads(results.read_text()) if results.exists() else [])}
        if a.name not in rows:
            raise SystemExit(f"{a.name}: no search row in {results}; run the search first")
        # resume the cached search at the generation the row reached (a time-limited run stopped early:
        # asking for more would evolve further instead of reproducing)
        rows[a.name].update(run_reproduce(a.name, rows[a.name]["generations"], a.offspring, a.tokens, a.survivors,
                                          a.levels, a.start, a.database_inputs,
                                          from_row=rows[a.name] if a.from_row else None))
        rows[a.name]["reproduced_from"] = "the recorded profile (--from-row)" if a.from_row else "the cached search"
        write_results([rows[n] for n in CONFIGS if n in rows])
        print(json.dumps({k: rows[a.name][k] for k in ("recipe", "reproduced_ppl")}))
        return 0
    if a.baseline:
        point = run_baseline(a.name, a.baseline, a.tokens)
        print(json.dumps(point))
        path = RESULTS / f".search-baseline-{a.name}-{a.baseline}.json"
        path.write_text(json.dumps(point))
        results = RESULTS / "search.json"
        rows = {r["name"]: r for r in (json.loads(results.read_text()) if results.exists() else [])}
        if a.name in rows:  # the search ran first: add the point to its row now
            rows[a.name]["points"][a.baseline] = point
            write_results([rows[n] for n in CONFIGS if n in rows])
        return 0
    row = run_one(a.name, a.generations, a.offspring, a.tokens, a.survivors, a.levels, a.time_limit, a.start,
                  a.database_inputs)
    for which in ("uniform", "owl"):  # baselines scored by --baseline runs
        path = RESULTS / f".search-baseline-{a.name}-{which}.json"
        if path.is_file():
            row["points"][which] = json.loads(path.read_text())
    row["points"]["dense"] = {"kl": 0.0, "ppl": DENSE_PPL}
    import resource  # the whole process: loading, database, search and both perplexities

    row["process_wall_s"] = round(time.perf_counter() - STARTED)
    row["peak_rss_mib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    record(row)
    print(json.dumps({k: v for k, v in row.items() if k not in ("layers", "curve")}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

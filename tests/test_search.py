"""hfcompress search (issue 18) on tiny random models: exact budgets, determinism, resume,
one-line errors, and recipes that reproduce the searched model."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

import hfcompress
from hfcompress.cards import build_card
from hfcompress.errors import UsageError
from hfcompress.recipes import load_recipe
from hfcompress.search import SearchConfig, search
from hfcompress.search.space import Space


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 3-block Llama (hidden 96, FFN 128: layers of 3 sizes) with a character tokenizer, and a text dataset."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from hfcompress.testing.models import tiny_tokenizer

    root = tmp_path_factory.mktemp("search")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=256, hidden_size=96, intermediate_size=128, num_hidden_layers=3,
                      num_attention_heads=6, num_key_value_heads=3, head_dim=16, max_position_embeddings=256,
                      tie_word_embeddings=False)
    cfg.architectures = ["LlamaForCausalLM"]
    model = LlamaForCausalLM(cfg).eval()
    folder = root / "model"
    model.save_pretrained(folder)
    tiny_tokenizer(256).save_pretrained(folder)
    data = root / "text"
    data.mkdir()
    g = random.Random(0)
    words = "the search finds which layers of the network can lose more weights than others".split()
    (data / "train.txt").write_text("\n".join(" ".join(g.choice(words) for _ in range(60)) for _ in range(80)))
    return folder, str(data)


def opts(data: str, cache, **kw):
    base = dict(method="sparsegpt", budget="sparsity=0.5", generations=2, offspring=3, tokens=[32, 64],
                survivors=[2, 1], calibration={"dataset": data, "samples": 4, "seq_len": 32}, cache_dir=str(cache),
                baselines=False)
    base.update(kw)
    return SearchConfig(**base)


def _zeros(state: dict[str, torch.Tensor]) -> int:
    return sum(int((v == 0).sum()) for k, v in state.items() if ".layers." in k and k.endswith("proj.weight"))


def test_space_mutations_keep_the_cost_exact():
    rng = random.Random(1)
    space = Space([f"u{i}" for i in range(12)], [-3] * 12, [3] * 12, [1, 1, 3, 3, 8, 8, 8, 1, 1, 3, 8, 8])
    parent = space.start
    for _ in range(300):
        kid = space.mutate(parent, rng, 3)
        assert space.valid(kid)
        parent = kid
    assert parent != space.start


def test_space_nearest_is_exact_and_close():
    space = Space([f"u{i}" for i in range(12)], [-3] * 12, [3] * 12, [1, 1, 3, 3, 8, 8, 8, 1, 1, 3, 8, 8])
    targets = [2.4, -1.6, 0.7, -2.2, 1.1, 0.2, -0.4, 2.9, -3.5, 1.5, 0.6, -0.8]
    prof = space.nearest(targets)
    assert space.valid(prof) and prof == space.nearest(targets)
    assert all(abs(k - t) <= 2.5 for k, t in zip(prof, targets, strict=True))
    assert space.nearest([0.0] * 12) == space.start
    with pytest.raises(ValueError):
        Space(["a", "b"], [0, -1], [1, 0], [2, 3]).nearest([1.0, -1.0])  # cost -1: no move fits


def test_owl_start_is_exact_and_reported(tiny, tmp_path):
    """--start owl: the first parent carries OWL's per-block sparsities (from the database statistics)
    at exactly the budget's zeros; the report names it and keeps each layer's start level."""
    from hfcompress.prune.engine import arch_info, calibration_ids, target_linears
    from hfcompress.prune.owl import owl_block_sparsities

    folder, data = tiny
    res = search(str(folder), opts(data, tmp_path / "cache", start="owl", generations=1), progress=False)
    rep = res.report
    names = [c["name"] for c in rep["comparison"]]
    assert rep["budget_check"]["exact"] and "OWL-shaped (dense inputs, search start)" in names
    start = [r["start_level"] for r in rep["layers"]]
    assert any(start) and {r["start_level"] for r in rep["layers"] if r["name"].startswith("model.layers.0.")} != \
        {r["start_level"] for r in rep["layers"] if r["name"].startswith("model.layers.2.")}
    # the same block sparsities as OWL's own calibration pass (prune --owl)
    b = hfcompress.load(str(folder), dtype="float32")
    info = arch_info(b.model)
    cal = SearchConfig(method="sparsegpt", budget="sparsity=0.5", calibration={"dataset": data, "samples": 4,
                                                                               "seq_len": 32}).calibration
    owl = owl_block_sparsities(b.model, info, target_linears(b.model, info, None, None), calibration_ids(b, cal),
                               0.5, 0.08, 5.0, None)
    for i, sp in enumerate(owl):  # each block's start levels sit near OWL's sparsity (step 1/16)
        levels = [r["start_level"] for r in rep["layers"] if r["name"].startswith(f"model.layers.{i}.")]
        assert abs(sum(levels) / len(levels) - (sp - 0.5) * 16) <= 1.0
    other = search(str(folder), opts(data, tmp_path / "cache", generations=1), progress=False).report
    assert "uniform (dense inputs, search start)" in [c["name"] for c in other["comparison"]]
    assert other["curve"] != rep["curve"]


@pytest.mark.parametrize("method", ["sparsegpt", "wanda"])
def test_budget_exact_and_recipe_reproduces(tiny, tmp_path, method):
    folder, data = tiny
    res = search(str(folder), opts(data, tmp_path / "cache", method=method, baselines=method == "sparsegpt",
                                   finalize="assembled"), output=tmp_path / "out", progress=False)
    rep = res.report
    assert rep["budget_check"]["zeros"] == rep["budget_check"]["uniform_zeros"]
    assert rep["reproduced"]["exact"] is True
    assert rep["final_kl"] == pytest.approx(rep["comparison"][0]["kl"], rel=1e-6)
    levels = {r["level"] for r in rep["layers"]}
    assert levels != {0}  # the search moved away from uniform
    out = load_file(tmp_path / "out" / "model.safetensors")
    assert _zeros(out) == rep["budget_check"]["uniform_zeros"]
    if method == "sparsegpt":  # the same zeros as `prune --sparsity 0.5` places (the uniform baseline)
        rows = {r["name"]: r for r in rep["comparison"]}
        assert list(rows)[2:] == ["uniform", "owl"]
        assert rows["uniform"]["zeros"] == rows["searched"]["zeros"]
    for f in ("recipe.yaml", "search_report.json", "search_report.md", "search_curve.png", "README.md"):
        assert (tmp_path / "out" / f).is_file()
    assert "Searched compression profile" in (tmp_path / "out" / "README.md").read_text()
    # the section lives in hfcompress.json: a re-render (as push does) keeps it, once
    card = str(build_card(tmp_path / "out", repo_id="me/searched"))
    assert card.count("## Searched compression profile") == 1 and "KL to the dense model" in card
    # the written recipe, run by compress on the source model, gives the same weights bit for bit
    recipe = load_recipe(tmp_path / "out" / "recipe.yaml")
    assert recipe.stages[0].dense_inputs and len(recipe.stages[0].overrides) == 21
    recipe.stages[0].calibration.dataset = data  # published recipes name a local dataset by its folder name only
    again = hfcompress.compress(str(folder), recipe, output=tmp_path / "re", progress=False)
    assert again.output is not None
    re_state = load_file(tmp_path / "re" / "model.safetensors")
    assert set(re_state) == set(out)
    assert all(torch.equal(re_state[k], out[k]) for k in out)


def test_sequential_finalize_keeps_the_zeros_and_reproduces(tiny, tmp_path):
    """The default output recomputes the searched levels block by block (dense_inputs off): the same
    zeros per layer as the searched profile, scored beside the database profile the search kept, and
    reproduced bit for bit by its recipe; in memory too."""
    folder, data = tiny
    res = search(str(folder), opts(data, tmp_path / "cache"), output=tmp_path / "out", progress=False)
    rep = res.report
    first, scored = rep["comparison"][:2]
    assert first["name"].startswith("searched (output") and scored["name"].startswith("searched profile, database")
    assert first["kl"] == rep["final_kl"] and scored["kl"] == rep["curve"][-1]["fitness"]
    assert first["kl"] != scored["kl"] and "reproduced" not in rep and rep["finalize"] == "sequential"
    md = (tmp_path / "out" / "search_report.md").read_text()
    assert "`finalize: sequential`" in md and "run from their first changed block" in md
    sc = rep["scoring"]
    assert sc["from_first_changed_block"] and 0 < sc["blocks_run"] < sc["blocks_whole"]
    out = load_file(tmp_path / "out" / "model.safetensors")
    for r in rep["layers"]:  # each layer has exactly its searched number of zeros
        assert int((out[r["name"] + ".weight"] == 0).sum()) == r["zeros"]
    recipe = load_recipe(tmp_path / "out" / "recipe.yaml")
    assert recipe.stages[0].dense_inputs is False
    recipe.stages[0].calibration.dataset = data
    hfcompress.compress(str(folder), recipe, output=tmp_path / "re", progress=False)
    again = load_file(tmp_path / "re" / "model.safetensors")
    assert all(torch.equal(again[k], out[k]) for k in out)
    mem = search(str(folder), opts(data, tmp_path / "cache"), progress=False)  # resumed, in memory
    assert mem.report["final_kl"] == rep["final_kl"]
    state = mem.bundle.model.state_dict()
    assert all(torch.equal(state[k], out[k]) for k in out)


@pytest.mark.parametrize("method", ["sparsegpt", "wanda"])
def test_sequential_database_inputs_start_at_the_ordinary_prune(tiny, tmp_path, method):
    """--database-inputs sequential: the uniform start's entries are the ordinary sequential prune's, so the
    search starts at exactly its KL and never ends above it; the output keeps the searched zeros."""
    folder, data = tiny
    res = search(str(folder), opts(data, tmp_path / "cache", method=method, baselines=True,
                                   database_inputs="sequential"), output=tmp_path / "out", progress=False)
    rep = res.report
    rows = {r["name"]: r["kl"] for r in rep["comparison"]}
    assert rows["uniform (sequential inputs, search start)"] == rows["uniform"]
    assert rows["searched profile, database weights (as scored)"] <= rows["uniform"]
    out = load_file(tmp_path / "out" / "model.safetensors")
    assert all(int((out[r["name"] + ".weight"] == 0).sum()) == r["zeros"] for r in rep["layers"])
    assert "start profile's inputs" in (tmp_path / "out" / "search_report.md").read_text()


def test_deterministic_per_seed_and_resume(tiny, tmp_path):
    folder, data = tiny
    full = search(str(folder), opts(data, tmp_path / "a", method="wanda", generations=3), progress=False).report
    same = search(str(folder), opts(data, tmp_path / "b", method="wanda", generations=3), progress=False).report
    assert [r["level"] for r in full["layers"]] == [r["level"] for r in same["layers"]]
    assert [c["fitness"] for c in full["curve"]] == [c["fitness"] for c in same["curve"]]
    # interrupted after 1 generation, rerun with 3: continues at generation 1, same result
    part = search(str(folder), opts(data, tmp_path / "c", method="wanda", generations=1), progress=False).report
    assert len(part["curve"]) == 2 and part["search"]["resumed_from"] == []
    cont = search(str(folder), opts(data, tmp_path / "c", method="wanda", generations=3), progress=False).report
    assert cont["search"]["resumed_from"] == [1]
    assert cont["database"]["entries_computed_now"] == 0 and cont["database"]["built_stats_now"] is False
    assert [c["fitness"] for c in cont["curve"]] == [c["fitness"] for c in full["curve"]]
    assert [r["level"] for r in cont["layers"]] == [r["level"] for r in full["layers"]]
    # the database is reused by another budget (no new calibration pass)
    other = search(str(folder), opts(data, tmp_path / "c", method="wanda", budget="sparsity=0.6", generations=1),
                   progress=False).report
    assert other["database"]["built_stats_now"] is False
    assert other["budget_check"]["zeros"] == other["budget_check"]["uniform_zeros"]


def test_drop_blocks_exact_and_reproducible(tiny, tmp_path):
    folder, data = tiny
    res = search(str(folder), opts(data, tmp_path / "cache", method="drop", budget="blocks=1", generations=2,
                                   offspring=2), output=tmp_path / "out", progress=False)
    rep = res.report
    assert len(rep["dropped"]) == 1 and rep["budget_check"]["exact"]
    assert rep["comparison"][0]["kl"] <= rep["comparison"][1]["kl"]
    assert res.bundle.model.config.num_hidden_layers == 2
    assert rep["final_kl"] == pytest.approx(rep["comparison"][0]["kl"], rel=1e-5)
    recipe = load_recipe(tmp_path / "out" / "recipe.yaml")
    assert recipe.stages[0].method == "drop-blocks" and recipe.stages[0].blocks == rep["dropped"]


@pytest.mark.parametrize("kw, match", [
    (dict(budget="sparsity=0.6", levels="0.1:0.3"), "unreachable with levels 0.1..0.3"),
    (dict(method="drop", budget="blocks=1", finalize="assembled"), "--finalize applies to wanda / sparsegpt / gptq"),
    (dict(budget="bits=3.0", method="wanda"), "searches sparsity levels, not bits: .* or --method gptq"),
    (dict(budget="blocks=2", method="wanda"), "searches sparsity levels, not blocks"),
    (dict(budget="sparsity=0.6", method="drop"), "searches blocks levels, not sparsity"),
    (dict(budget="zeros=5"), "write KIND=VALUE"),
    (dict(budget="sparsity=1.2"), "sparsity must be in"),
    (dict(budget="sparsity=0.5", levels="0.2:0.8:0.3"), "must be 1/Q"),
    (dict(method="gptq", budget="bits=3", start="owl"), "--start owl applies to wanda / sparsegpt"),
    (dict(start="owl", database_inputs="sequential"), "--start owl takes OWL's ratios from the dense-input"),
    (dict(method="drop", budget="blocks=1", database_inputs="sequential"), "--database-inputs applies to wanda"),
])
def test_budget_errors_before_any_work(tmp_path, kw, match):
    with pytest.raises(UsageError, match=match) as err:
        search(str(tmp_path / "no-such-model"), opts("unused", tmp_path, **kw), progress=False)
    assert "\n" not in str(err.value)


def test_unreachable_blocks_and_step_errors(tiny, tmp_path):
    folder, data = tiny
    with pytest.raises(UsageError, match="unreachable: the model has 3 blocks"):
        search(str(folder), opts(data, tmp_path, method="drop", budget="blocks=3"), progress=False)
    with pytest.raises(UsageError, match="not a whole number of weights per row"):
        search(str(folder), opts(data, tmp_path, levels="0.2:0.8:1/64"), progress=False)


def test_cli_search_and_one_line_error(tiny, tmp_path):
    folder, data = tiny
    base = [sys.executable, "-m", "hfcompress", "search", str(folder), "--method", "wanda", "--calibration", data,
            "--samples", "4", "--seq-len", "32", "--tokens", "32", "--survivors", "1", "--offspring", "3",
            "--generations", "1", "--cache-dir", str(tmp_path / "cache"), "--no-baselines", "--no-progress"]
    bad = subprocess.run(base + ["--budget", "bits=3", "-o", str(tmp_path / "x")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "searches sparsity levels, not bits" in bad.stderr
    ok = subprocess.run(base + ["--budget", "sparsity=0.5", "-o", str(tmp_path / "out"), "--generations", "5",
                                "--time-limit", "1e-5"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "budget check" in ok.stdout and (tmp_path / "out" / "recipe.yaml").is_file()
    srch = json.loads((tmp_path / "out" / "search_report.json").read_text())["search"]
    assert srch["generations"] == 1 and srch["generations_asked"] == 5 and srch["stopped_at_time_limit"]
    assert "stopped by the 1e-05-minute time limit (5 asked)" in (tmp_path / "out" / "search_report.md").read_text()


def test_time_limit_stops_between_generations_and_a_rerun_resumes(tiny, tmp_path):
    folder, data = tiny
    full = search(str(folder), opts(data, tmp_path / "a", method="wanda", generations=3), progress=False).report
    cut = search(str(folder), opts(data, tmp_path / "b", method="wanda", generations=3, time_limit=1e-5),
                 progress=False).report
    assert cut["search"]["generations"] == 1 and cut["search"]["stopped_at_time_limit"]
    more = search(str(folder), opts(data, tmp_path / "b", method="wanda", generations=3), progress=False).report
    assert more["search"]["resumed_from"] == [1] and not more["search"]["stopped_at_time_limit"]
    assert [c["fitness"] for c in more["curve"]] == [c["fitness"] for c in full["curve"]]


@pytest.mark.parametrize("stage", ["method: drop-blocks", "method: drop-blocks\n    blocks: []"])
def test_drop_blocks_stage_without_blocks_is_refused_in_one_line(stage):
    """An omitted `blocks` is refused like an empty one (found by the recipe fuzzer: the omitted
    default validated, then its dump `blocks: []` did not)."""
    from hfcompress.errors import RecipeError
    from hfcompress.recipes import parse_recipe

    with pytest.raises(RecipeError, match=r"^x\.yaml:3: .*give the blocks to drop"):
        parse_recipe(f"version: 1\nstages:\n- prune:\n    {stage}\n", source="x.yaml")


def test_prefix_scorer_runs_from_the_first_changed_block(tiny):
    """A candidate runs from its first changed block on the kept inputs of a profile sharing the blocks
    before it: the same KL as a whole forward (bit for bit on the capture tokens), fewer blocks run; a
    limit too small for the kept inputs turns it off; a resumed parent is primed."""
    from hfcompress.search.fitness import Fitness, PrefixScorer

    folder, _ = tiny
    model = hfcompress.load(str(folder), dtype="float32").model.eval()
    blocks = list(model.model.layers)
    names = [f"model.layers.{i}.{p}" for i in range(3) for p in ("self_attn.o_proj", "mlp.down_proj")]
    mods = dict(model.named_modules())
    dense = {n: mods[n].weight.detach().clone() for n in names}
    windows = torch.randint(0, 256, (4, 32), generator=torch.Generator().manual_seed(3))
    fitness = Fitness(model, windows)

    def install(profile):
        with torch.no_grad():
            for n, k in zip(names, profile, strict=True):
                mods[n].weight.copy_(dense[n] * (1 - 0.2 * k))

    scorer = PrefixScorer(fitness, blocks, [0, 0, 1, 1, 2, 2], install, capture_tokens=128)
    rng = random.Random(0)
    profiles = [(0,) * 6] + [tuple(rng.randint(0, 2) for _ in range(6)) for _ in range(12)]
    for p in profiles:
        for tokens in (32, 128):
            got = scorer(p, tokens)
            install(p)
            whole = fitness(tokens)
            if tokens == 128:
                assert got == whole
            else:
                assert got == pytest.approx(whole, rel=1e-5, abs=1e-7)
    assert 0 < scorer.blocks_run < scorer.blocks_total and len(scorer.saved) == 3
    parent = (1, 0, 0, 0, 0, 2)
    scorer.prime(parent)
    assert next(reversed(scorer.saved)) == parent
    off = PrefixScorer(fitness, blocks, [0, 0, 1, 1, 2, 2], install, capture_tokens=128, limit_bytes=1000)
    assert off(profiles[1], 128) == scorer(profiles[1], 128) and not off.enabled and not off.saved

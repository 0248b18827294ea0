"""hfcompress search --method gptq (issue 18): mixed bit widths on a tiny random Llama. Exact bits= budgets,
size= accounting equal to the bytes on disk, determinism and resume, one-line errors, a recipe that
reproduces the searched weights bit for bit, and a plain-transformers reload of the mixed-bit output."""

from __future__ import annotations

import json
import random
import shutil
import subprocess
import sys

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file

import hfcompress
from hfcompress.errors import UsageError
from hfcompress.quantize import GPTQConfig
from hfcompress.recipes import Recipe, load_recipe
from hfcompress.search import SearchConfig, search
from hfcompress.search.space import Space

IDS = [[1, 40, 50, 60, 70, 80, 90, 41, 42, 43, 44, 45]]
PLAIN = """
import json, sys, torch
import transformers
model = transformers.AutoModelForCausalLM.from_pretrained(sys.argv[1])
with torch.no_grad():
    out = model(input_ids=torch.tensor(json.loads(sys.argv[2]))).logits
print("RESULT" + json.dumps({"logits": out.tolist(), "hfcompress": "hfcompress" in sys.modules}))
"""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 3-block Llama (hidden 96, FFN 128: group sizes 32 and 128 under --group-size 128), character tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from hfcompress.testing.models import tiny_tokenizer

    root = tmp_path_factory.mktemp("search-bits")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=256, hidden_size=96, intermediate_size=128, num_hidden_layers=3,
                      num_attention_heads=6, num_key_value_heads=3, head_dim=16, max_position_embeddings=256,
                      tie_word_embeddings=False)
    cfg.architectures = ["LlamaForCausalLM"]
    folder = root / "model"
    LlamaForCausalLM(cfg).eval().save_pretrained(folder)
    tiny_tokenizer(256).save_pretrained(folder)
    data = root / "text"
    data.mkdir()
    g = random.Random(0)
    words = "some layers of the network keep more bits than others when the budget is tight".split()
    (data / "train.txt").write_text("\n".join(" ".join(g.choice(words) for _ in range(60)) for _ in range(80)))
    return folder, str(data)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    """One level database cache for the module (built once, reused as a search of a later budget would)."""
    return tmp_path_factory.mktemp("search-bits-cache")


def opts(data: str, cache, **kw) -> SearchConfig:
    base = dict(method="gptq", budget="bits=3.5", generations=2, offspring=3, tokens=[32, 64], survivors=[2, 1],
                calibration={"dataset": data, "samples": 4, "seq_len": 32}, cache_dir=str(cache), baselines=False)
    base.update(kw)
    return SearchConfig(**base)


def _plain_reload(out) -> dict:
    """Logits of ``IDS`` from ``out`` reloaded by plain transformers in a fresh process, and whether hfcompress got imported."""
    proc = subprocess.run([sys.executable, "-c", PLAIN, str(out), json.dumps(IDS)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT"))[6:])


def _quantized_bytes(path) -> int:
    with safe_open(str(path), "pt") as f:
        return sum(f.get_tensor(k).nbytes for k in f.keys() if ".layers." in k and k.endswith(("weight_packed", "weight_scale", "weight_zero_point")))


def test_space_with_level_costs_keeps_the_total():
    rng = random.Random(3)
    costs = [[2 * w, 3 * w, 4 * w, 8 * w] for w in (1, 1, 3, 3, 8, 8, 8, 1, 3, 8)]
    space = Space([f"u{i}" for i in range(10)], [0] * 10, [3] * 10, [1] * 10, costs=costs,
                  origin=(1, 2, 1, 2, 1, 2, 2, 1, 2, 1))
    parent, moved = space.start, 0
    for _ in range(300):
        kid = space.mutate(parent, rng, 3)
        assert space.valid(kid) and space.cost(kid) == space.total
        moved += kid != parent
        parent = kid
    assert moved > 100


def test_bits_budget_recipe_and_plain_reload(tiny, cache, tmp_path):
    folder, data = tiny
    out = tmp_path / "out"
    res = search(str(folder), opts(data, cache, finalize="assembled"), output=out, progress=False)
    rep = res.report
    check = rep["budget_check"]
    assert check["exact"] is True and check["average_bits"] == 3.5
    assert rep["reproduced"]["exact"] is True
    assert rep["final_kl"] == pytest.approx(rep["comparison"][0]["kl"], rel=1e-6)
    bits = {r["name"]: r["bits"] for r in rep["layers"]}
    assert len(set(bits.values())) > 1  # a mixed-bit checkpoint
    # one config group per (bits, group size), targets by module name
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    kinds = {(g["weights"]["num_bits"], g["weights"]["group_size"]) for g in qc["config_groups"].values()}
    assert len(kinds) == len(qc["config_groups"]) > 2 and {b for b, _ in kinds} == set(bits.values())
    # size= accounting: the packed codes + scales of the targeted layers, as on disk
    assert rep["accounting"]["bytes"] == _quantized_bytes(out / "model.safetensors")
    for f in ("recipe.yaml", "search_report.json", "search_report.md", "search_levels.png", "README.md"):
        assert (out / f).is_file()
    assert "Searched compression profile" in (out / "README.md").read_text()
    # plain transformers (compressed-tensors installed, no hfcompress) reloads the in-memory logits
    with torch.no_grad():
        want = res.bundle.model(input_ids=torch.tensor(IDS)).logits.float()
    got = _plain_reload(out)
    assert got["hfcompress"] is False and torch.equal(torch.tensor(got["logits"]), want)
    # the recipe, run by compress on the source model, gives the same checkpoint bit for bit
    recipe = load_recipe(out / "recipe.yaml")
    stage = recipe.stages[0]
    assert stage.method == "gptq" and stage.dense_inputs and stage.overrides == bits
    stage.calibration.dataset = data  # published recipes name a local dataset by its folder name only
    hfcompress.compress(str(folder), recipe, output=tmp_path / "re", progress=False)
    a, b = load_file(out / "model.safetensors"), load_file(tmp_path / "re" / "model.safetensors")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_group_size_levels_same_bytes_as_uniform_and_plain_reload(tiny, cache, tmp_path):
    """Levels with their own group sizes (3ch, 3g32, ...) are costed in bytes: bits=3 means the bytes of
    uniform 3-bit at the stage's groups, met exactly; the recipe carries per-layer group sizes and
    reproduces the searched checkpoint bit for bit; plain transformers reloads it."""
    folder, data = tiny
    out = tmp_path / "out"
    cfg = opts(data, cache, budget="bits=3", levels="2,3ch,3,3g32,4ch,4", finalize="assembled", generations=4,
               offspring=4, seed=1)
    res = search(str(folder), cfg, output=out, progress=False)
    rep = res.report
    check = rep["budget_check"]
    assert rep["grid"]["costed_in"] == "bytes" and check["exact"] is True and check["bytes"] == check["budget_bytes"]
    uniform3 = search(str(folder), opts(data, cache, budget="bits=3", levels="2,3,4", generations=0, finalize="assembled"),
                      progress=False)
    assert uniform3.report["accounting"]["bytes"] == check["budget_bytes"]  # the bytes of uniform 3-bit
    assert rep["comparison"][1]["name"] == "start (uniform, dense inputs)"
    assert rep["comparison"][1]["kl"] == pytest.approx(uniform3.report["comparison"][0]["kl"], rel=1e-6)
    widths = {r["name"]: (r["bits"], r["group_size"]) for r in rep["layers"]}
    assert any(g != (32 if "mlp.down_proj" not in n else 128) for n, (_, g) in widths.items())  # moved off the stage's groups
    assert rep["accounting"]["bytes"] == _quantized_bytes(out / "model.safetensors")
    with safe_open(str(out / "model.safetensors"), "pt") as f:
        for n, (_, g) in widths.items():
            inputs = 128 if n.endswith("down_proj") else 96
            assert f.get_slice(f"{n}.weight_scale").get_shape()[1] == (1 if g == "channel" else inputs // g)
    qc = json.loads((out / "config.json").read_text())["quantization_config"]
    kinds = {(g["weights"]["num_bits"], g["weights"]["group_size"]) for g in qc["config_groups"].values()}
    assert kinds == {(b, None if g == "channel" else g) for b, g in widths.values()}
    recipe = load_recipe(out / "recipe.yaml")
    stage = recipe.stages[0]
    for n, (b, g) in widths.items():
        o = stage.overrides[n]
        default = 128 if n.endswith("down_proj") else 32
        assert (o == b) if g == default else (o.bits == b and o.group_size == (-1 if g == "channel" else g))
    stage.calibration.dataset = data
    hfcompress.compress(str(folder), recipe, output=tmp_path / "re", progress=False)
    a, b = load_file(out / "model.safetensors"), load_file(tmp_path / "re" / "model.safetensors")
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
    with torch.no_grad():
        want = res.bundle.model(input_ids=torch.tensor(IDS)).logits.float()
    assert torch.equal(torch.tensor(_plain_reload(out)["logits"]), want)


def test_deterministic_resume_and_size_budget(tiny, cache, tmp_path):
    folder, data = tiny
    full = search(str(folder), opts(data, cache, generations=3, seed=7), progress=False).report
    assert full["budget_check"]["exact"] and full["budget_check"]["average_bits"] == 3.5
    shutil.rmtree(cache / full["database"]["key"] / "runs")  # the same search again, from scratch
    part = search(str(folder), opts(data, cache, generations=1, seed=7), progress=False).report
    cont = search(str(folder), opts(data, cache, generations=3, seed=7), progress=False).report
    assert cont["search"]["resumed_from"] == [1] and cont["database"]["entries_computed_now"] == 0
    assert len(part["curve"]) == 2
    assert [c["fitness"] for c in cont["curve"]] == [c["fitness"] for c in full["curve"]]
    assert [r["bits"] for r in cont["layers"]] == [r["bits"] for r in full["layers"]]
    # a size= budget on the same database: no new calibration pass nor entries; never above the budget
    res = search(str(folder), opts(data, cache, budget="size=0.12", generations=2), progress=False)
    sized = res.report
    assert sized["database"]["built_stats_now"] is False and sized["database"]["entries_computed_now"] == 0
    check = sized["budget_check"]
    assert check["bytes"] <= check["budget_bytes"] and check["bytes"] == sized["accounting"]["bytes"]
    assert check["fraction_of_source"] == pytest.approx(check["bytes"] / check["source_bytes"])
    # bits=4: the start is uniform 4-bit, scored against plain `quantize --method gptq --bits 4` too
    four = search(str(folder), opts(data, cache, budget="bits=4", generations=0, baselines=True),
                  progress=False).report
    assert {r["bits"] for r in four["layers"]} == {4} and four["database"]["entries_computed_now"] == 0
    assert [r["name"] for r in four["comparison"]][:4] == [
        "searched (output: levels recomputed sequentially)", "searched profile, database weights (as scored)",
        "start (uniform, dense inputs)", "uniform 4-bit (quantize --method gptq)"]
    # the sequential output at uniform 4-bit is plain `quantize --method gptq --bits 4`: the same KL
    assert four["comparison"][0]["kl"] == four["comparison"][3]["kl"]
    # the in-memory result carries the compressed-tensors saver with the searched widths
    assert res.bundle.meta["compressed_tensors"]["bits_of"] == {r["name"]: r["bits"] for r in sized["layers"]}


def test_sequential_database_inputs_start_at_plain_gptq(tiny, tmp_path):
    """--database-inputs sequential: the entries are calibrated on the inputs of the start profile computed
    block by block, so the start (uniform 4-bit) scores exactly plain `quantize --method gptq --bits 4`;
    its own database (another key), the model dense again before the search."""
    folder, data = tiny
    four = search(str(folder), opts(data, tmp_path / "c", budget="bits=4", generations=1, baselines=True,
                                    database_inputs="sequential"), progress=False).report
    rows = {r["name"]: r["kl"] for r in four["comparison"]}
    assert rows["start (uniform, sequential inputs)"] == rows["uniform 4-bit (quantize --method gptq)"]
    assert four["database"]["inputs"] == "sequential" and four["budget_check"]["exact"]
    dense = search(str(folder), opts(data, tmp_path / "c", budget="bits=4", generations=0), progress=False).report
    assert dense["database"]["key"] != four["database"]["key"] and dense["database"]["built_stats_now"]
    assert dense["comparison"][2]["kl"] != rows["start (uniform, sequential inputs)"]


@pytest.mark.parametrize("kw, match", [
    (dict(budget="bits=3", database_inputs="sequential", finalize="assembled"),
     "--finalize assembled reproduces dense-input database weights"),
    (dict(budget="bits=1.5"), r"unreachable with bit widths 2,3,4,8: the average lies in \[2, 8\]"),
    (dict(budget="bits=3", levels="4,8"), "unreachable with bit widths 4,8"),
    (dict(budget="bits=3", levels="2,9"), "two or more bit widths in 2..8"),
    (dict(budget="bits=3", levels="two,four"), "gptq levels are bit widths"),
    (dict(budget="sparsity=0.5"), "searches bits levels, not sparsity"),
    (dict(budget="size=1"), "size is a fraction"),
    (dict(method="wanda", budget="sparsity=0.5", group_size=64), "--group-size applies to --method gptq"),
])
def test_errors_before_any_work(tmp_path, kw, match):
    with pytest.raises(UsageError, match=match) as err:
        search(str(tmp_path / "no-such-model"), opts("unused", tmp_path, **kw), progress=False)
    assert "\n" not in str(err.value)


def test_size_budget_outside_the_levels(tiny, tmp_path):
    folder, data = tiny
    for budget in ("size=0.01", "size=5e8"):
        with pytest.raises(UsageError, match="unreachable with levels 2,3,4,8: the bytes lie between") as err:
            search(str(folder), opts(data, tmp_path / "c", budget=budget), progress=False)
        assert "\n" not in str(err.value)
    assert not (tmp_path / "c").exists()  # refused before any calibration


def test_gptq_override_naming_no_module_is_refused(tiny, tmp_path):
    folder, data = tiny
    cfg = GPTQConfig(overrides={"model.layers.9.mlp.down_proj": 2}, calibration={"dataset": data, "samples": 2,
                                                                                 "seq_len": 32})
    with pytest.raises(UsageError, match="overrides name no quantized module: model.layers.9") as err:
        hfcompress.compress(str(folder), Recipe(stages=[cfg]), output=tmp_path / "o",
                            progress=False)
    assert "\n" not in str(err.value) and not (tmp_path / "o").exists()


def test_gptq_overrides_validation_and_defaults():
    plain = GPTQConfig()
    assert plain.act_order and plain.clip_search and not plain.dense_inputs and plain.overrides == {}
    cfg = GPTQConfig(overrides={"model.layers.0.mlp.down_proj": 2, "*.q_proj": 3})
    assert cfg.bits_for("model.layers.0.mlp.down_proj") == 2 and cfg.bits_for("model.layers.2.self_attn.q_proj") == 3
    assert cfg.bits_for("model.layers.1.mlp.down_proj") == 4
    with pytest.raises(ValueError, match="2..8"):
        GPTQConfig(overrides={"x": 9})
    with pytest.raises(ValueError, match="need symmetric weights"):
        GPTQConfig(symmetric=False, overrides={"x": 2})
    grouped = GPTQConfig(overrides={"*.down_proj": {"bits": 3, "group_size": 32}, "*.q_proj": {"bits": 2}})
    assert grouped.bits_for("model.layers.0.mlp.down_proj") == 3 and grouped.group_for("model.layers.0.mlp.down_proj") == 32
    assert grouped.overrides["*.q_proj"] == 2 and grouped.group_for("model.layers.0.self_attn.q_proj") is None
    with pytest.raises(ValueError, match="need symmetric weights"):
        GPTQConfig(symmetric=False, overrides={"x": {"bits": 4, "group_size": 32}})
    with pytest.raises(ValueError):
        GPTQConfig(overrides={"x": {"bits": 3, "group_size": 0}})


def test_cli_gptq_search(tiny, tmp_path):
    folder, data = tiny
    base = [sys.executable, "-m", "hfcompress", "search", str(folder), "--method", "gptq", "--calibration", data,
            "--samples", "4", "--seq-len", "32", "--tokens", "32", "--survivors", "1", "--offspring", "2",
            "--generations", "1", "--cache-dir", str(tmp_path / "cache"), "--no-baselines", "--no-progress",
            "--group-size", "32"]
    bad = subprocess.run(base + ["--budget", "bits=9", "-o", str(tmp_path / "x")], capture_output=True, text=True)
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "unreachable" in bad.stderr
    ok = subprocess.run(base + ["--budget", "bits=3", "--levels", "2,4", "-o", str(tmp_path / "out")],
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr[-2000:]
    assert "budget check" in ok.stdout and "'average_bits': 3.0" in ok.stdout
    recipe = load_recipe(tmp_path / "out" / "recipe.yaml")
    assert recipe.stages[0].group_size == 32 and set(recipe.stages[0].overrides.values()) <= {2, 4}


@pytest.mark.parametrize("budget", ["bits=3.3", "bits=5.1", "size=0.3", "size=0.47", "size=1500"])
def test_start_is_the_largest_reachable_total_not_above_the_budget(budget):
    """plan_bits against brute force over every profile of five small layers."""
    import itertools
    from types import SimpleNamespace

    from hfcompress.search.budget import Level, parse_budget
    from hfcompress.search.database import Width
    from hfcompress.search.run import plan_bits

    shapes = {"a": (8, 32), "b": (4, 32), "c": (12, 64), "d": (8, 96), "e": (4, 64)}
    db = SimpleNamespace(linears=shapes, shape=shapes.__getitem__, plan=dict.fromkeys(shapes, 32),
                         dense={n: torch.zeros(s, dtype=torch.bfloat16) for n, s in shapes.items()},
                         config=SimpleNamespace(symmetric=True), width=lambda n, b, g=None: Width(b, 32))
    levels = tuple(Level(b) for b in (2, 3, 4, 8))
    b = parse_budget(budget)
    plan = plan_bits(db, b, levels)
    numel = sum(r * c for r, c in shapes.values())
    best = None
    for prof in itertools.product(range(4), repeat=5):
        t = plan.totals(prof)
        value = t["total_bits"] if b.kind == "bits" else t["bytes"]
        limit = b.value * numel if b.kind == "bits" else b.value * (2 * numel if b.value < 1 else 1)
        if value <= limit + 1e-9 and (best is None or value > best):
            best = value
    start = plan.totals(plan.space.start)
    assert (start["total_bits"] if b.kind == "bits" else start["bytes"]) == best
    assert plan.space.valid(plan.space.start)

"""Models larger than memory (issue 19 item 3): weights offloaded with ``max_memory`` far below the
model's size, pruned block by block, written shard by shard — bit-identical to the in-memory run."""

from __future__ import annotations

import gc
import hashlib
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import hfcompress
from hfcompress.cli import main
from hfcompress.config import CalibrationConfig
from hfcompress.errors import UnsupportedError, UsageError
from hfcompress.loading import offload
from hfcompress.loading.offload import is_offloaded, parse_max_memory
from hfcompress.prune import MagnitudeConfig, SparseGPTConfig, TaylorConfig, ThresholdConfig, WandaConfig
from hfcompress.recipes import Recipe

#: far below the tiny llama's 429 KB of weights: almost every module is offloaded to disk
BUDGET = {"cpu": "20KB"}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    from hfcompress.testing.models import save_tiny

    return save_tiny("llama", tmp_path_factory.mktemp("offload") / "tiny-llama")


@pytest.fixture(scope="module")
def cal_dataset(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("caltext")
    words = "offloaded blocks are pruned one at a time while the rest of the model waits on disk".split()
    g = torch.Generator().manual_seed(0)
    lines = [" ".join(words[int(i)] for i in torch.randint(0, len(words), (40,), generator=g)) for _ in range(60)]
    (folder / "train.txt").write_text("\n".join(lines) + "\n")
    return str(folder)


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    for f in sorted(folder.glob("*.safetensors")):
        out.update(load_file(f))
    return out


def _configs(ds: str) -> dict[str, object]:
    cal = CalibrationConfig(dataset=ds, samples=4, seq_len=32)
    return {"wanda": WandaConfig(sparsity=0.5, calibration=cal, batch_size=2),  # lock-step chunks
            "magnitude": MagnitudeConfig(sparsity=0.5),
            "sparsegpt": SparseGPTConfig(pattern="2:4", calibration=cal),
            "threshold": ThresholdConfig(threshold=0.02)}


@pytest.mark.parametrize("method", ["wanda", "magnitude", "sparsegpt", "threshold"])
def test_offloaded_run_is_identical_to_the_in_memory_run(tiny, cal_dataset, tmp_path, monkeypatch, method):
    cfg = _configs(cal_dataset)[method]
    source = _digest(tiny)
    hfcompress.compress(str(tiny), Recipe(stages=[cfg]), output=tmp_path / "mem", progress=False)
    monkeypatch.setattr(offload, "MIN_SHARD_BYTES", 100_000)  # several shards + an index for the tiny model
    off = tmp_path / "offload-dir"
    result = hfcompress.compress(str(tiny), Recipe(stages=[cfg]), output=tmp_path / "off", progress=False,
                                 load_kwargs={"max_memory": BUDGET, "offload_folder": str(off)})
    model = result.bundle.model
    assert is_offloaded(model)
    assert sum(p.device.type == "meta" for p in model.parameters()) > len(list(model.parameters())) // 2
    mem, out = _weights(tmp_path / "mem"), _weights(tmp_path / "off")
    assert sorted(mem) == sorted(out)
    for k in mem:
        assert mem[k].dtype == out[k].dtype and torch.equal(mem[k], out[k]), k
    assert len(list((tmp_path / "off").glob("*.safetensors"))) > 1
    assert (tmp_path / "off" / "model.safetensors.index.json").is_file()
    assert _digest(tiny) == source  # the source folder was only read
    a = json.loads((tmp_path / "mem" / "hfcompress.json").read_text())
    b = json.loads((tmp_path / "off" / "hfcompress.json").read_text())
    for when in ("before", "after"):  # weight_bytes differ by the shard headers
        assert {k: v for k, v in a["size"][when].items() if k != "weight_bytes"} == \
            {k: v for k, v in b["size"][when].items() if k != "weight_bytes"}
    assert a["stages"][0]["summary"] == b["stages"][0]["summary"]
    if method != "threshold":
        assert b["stages"][0]["summary"]["target_sparsity_actual"] == pytest.approx(0.5)

    # the output is a plain checkpoint: transformers loads it without hfcompress
    from transformers import AutoModelForCausalLM

    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "off")
    for name, p in plain.named_parameters():
        assert torch.equal(p, mem[name]) if name in mem else name == "lm_head.weight"

    # the changed weights lived in a private folder inside the offload folder: gone with the model
    del result, model
    gc.collect()
    assert not list(off.glob("hfcompress-changed-*"))


def test_offloaded_blocks_come_back_to_meta_and_keep_their_pruned_values(tiny, cal_dataset):
    bundle = hfcompress.load(str(tiny), max_memory=BUDGET)
    assert bundle.saver is offload.save_offloaded
    hfcompress.prune(bundle, MagnitudeConfig(sparsity=0.5))
    q = bundle.model.model.layers[1].self_attn.q_proj
    assert q.weight.device.type == "meta"  # nothing stays in memory after its block
    with offload.onloaded(q, root=bundle.model, writeback=False):
        assert q.weight.device.type == "cpu"
        assert float((q.weight == 0).float().mean()) == pytest.approx(0.5)
    assert hfcompress.sizes.count_parameters(bundle.model)["nonzero_parameters"] < \
        hfcompress.sizes.count_parameters(bundle.model)["parameters"]


@pytest.mark.parametrize("spec,fragment", [
    ("cpu", "is not DEVICE=SIZE"),
    ("cpu=lots", "is not a size"),
    ("cpu=-3MB", "is not a size"),
    ("gpu=1GB", "unknown device 'gpu'"),
    ("cpu=1MB,cpu=2MB", "given twice"),
    (",", "is empty"),
])
def test_bad_max_memory_is_one_line(spec, fragment):
    with pytest.raises(UsageError, match=fragment):
        parse_max_memory(spec, "--max-memory")


def test_max_memory_spellings():
    assert parse_max_memory("cpu=300MB") == {"cpu": 300_000_000}
    assert parse_max_memory(["cpu=1GiB"]) == {"cpu": 1 << 30}
    assert parse_max_memory({"cpu": "2K"}) == {"cpu": 2000}
    if not torch.cuda.is_available():
        with pytest.raises(UsageError, match="GPU 0 is not available"):
            parse_max_memory("0=1GB,cpu=1GB")


def test_cli_bad_values_and_refusals_are_one_line(tiny, tmp_path, capsys):
    base = ["prune", str(tiny), "--method", "magnitude", "--sparsity", "0.5", "--no-progress"]
    assert main([*base, "-o", str(tmp_path / "a"), "--max-memory", "cpu=ten"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: --max-memory: 'ten' is not a size: write it like 300MB, 2GiB or 1500000000"]
    (tmp_path / "file").write_text("x")
    assert main([*base, "-o", str(tmp_path / "b"), "--max-memory", "cpu=1MB",
                 "--offload-folder", str(tmp_path / "file")]) == 2
    assert "is a file: give a folder" in capsys.readouterr().err
    assert main([*base, "-o", str(tmp_path / "c"), "--max-memory", "cpu=10KB", "--scope", "global"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "use --scope layer or row" in err[0]
    assert not (tmp_path / "c").exists()
    # and the happy path through the CLI
    assert main([*base, "-o", str(tmp_path / "d"), "--max-memory", "cpu=10KB"]) == 0
    assert (tmp_path / "d" / "model.safetensors").is_file()


@pytest.mark.parametrize("cfg", [TaylorConfig(sparsity=0.5), MagnitudeConfig(sparsity=0.5, structured="ffn"),
                                 MagnitudeConfig(sparsity=0.5, format="hfcompress-sparse")])
def test_stages_that_cannot_run_offloaded_refuse_before_any_work(tiny, tmp_path, cfg):
    with pytest.raises(UnsupportedError, match="cannot run on a model offloaded"):
        hfcompress.compress(str(tiny), Recipe(stages=[cfg]), output=tmp_path / "o", progress=False,
                            load_kwargs={"max_memory": BUDGET})
    assert not (tmp_path / "o").exists()


def test_threshold_from_sparsity_needs_the_model_in_memory(tiny, tmp_path):
    with pytest.raises(UsageError, match="give --threshold"):
        hfcompress.compress(str(tiny), Recipe(stages=[ThresholdConfig(sparsity=0.5)]), output=tmp_path / "o",
                            progress=False, load_kwargs={"max_memory": BUDGET})


def test_a_budget_the_model_fits_in_loads_it_normally(tiny):
    bundle = hfcompress.load(str(tiny), max_memory={"cpu": "1GB"})
    assert not is_offloaded(bundle.model) and bundle.saver is None


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_offloaded_on_cuda_matches_in_memory_on_cuda(tiny, cal_dataset, tmp_path):
    """GPU 0 computes; the weights stay on CPU / disk and come to the GPU one block at a time."""
    cfg = _configs(cal_dataset)["wanda"]
    hfcompress.compress(str(tiny), Recipe(stages=[cfg]), output=tmp_path / "mem", progress=False,
                        load_kwargs={"device_map": "cuda"})
    result = hfcompress.compress(str(tiny), Recipe(stages=[cfg]), output=tmp_path / "off", progress=False,
                                 load_kwargs={"max_memory": {0: "60KB", "cpu": "60KB"}})
    assert is_offloaded(result.bundle.model)
    mem, out = _weights(tmp_path / "mem"), _weights(tmp_path / "off")
    for k in mem:
        assert torch.equal(mem[k], out[k]), k

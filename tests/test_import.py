"""``import hfcompress`` is light (no torch, no transformers) and our checkpoint formats still
load through ``from_pretrained`` after it (issue 19 item 8). Timing lives in
benchmarks/import_time.py, not here."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest


def _fresh(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_import_loads_neither_torch_nor_transformers():
    got = json.loads(_fresh(
        "import sys, json, hfcompress\n"
        "print(json.dumps({m: m in sys.modules for m in ('torch', 'transformers', 'huggingface_hub',"
        " 'hfcompress.prune.sparse_format', 'hfcompress.quantize.quanto_format')}))"))
    assert got == {m: False for m in got}, got


def test_formats_register_before_from_pretrained(tmp_path):
    """A sparse-format checkpoint saved here reloads in a fresh process that only ran ``import hfcompress``."""
    torch = pytest.importorskip("torch")
    from hfcompress.distill._tiny import tiny_llama
    from hfcompress.loading import ModelBundle
    from hfcompress.prune import MagnitudeConfig
    from hfcompress.stage import StageContext, run_stage, save_bundle

    bundle = ModelBundle(model=tiny_llama(64, hidden=32, layers=2), tokenizer=None, task="text-generation")
    run_stage(bundle, MagnitudeConfig(sparsity=0.5, sparse_format=True), StageContext(progress=False))
    save_bundle(bundle, tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["quantization_config"]["quant_method"] == \
        "hfcompress-sparse"
    torch.save(bundle.model.state_dict(), tmp_path.parent / "ref.pt")
    out = _fresh(
        "import sys, torch, hfcompress\n"
        "from transformers import AutoModelForCausalLM\n"
        "from transformers.quantizers.auto import AUTO_QUANTIZER_MAPPING as M\n"
        "assert 'hfcompress.prune.sparse_format' not in sys.modules\n"
        "assert 'first use' in repr(M['hfcompress-sparse'])  # still the stand-in\n"
        f"m = AutoModelForCausalLM.from_pretrained({str(tmp_path)!r})\n"
        f"ref = torch.load({str(tmp_path.parent / 'ref.pt')!r})\n"
        "got = m.state_dict()\n"
        "assert all(torch.equal(ref[k], got[k]) for k in ref), 'weights differ'\n"
        "print('hfcompress.prune.sparse_format' in sys.modules)\n")
    assert out.strip() == "True"


def test_stand_ins_when_registry_already_imported():
    """transformers' registry imported first (then hfcompress): the stand-ins go in at once."""
    out = _fresh(
        "import transformers.quantizers.auto as a\n"
        "import hfcompress\n"
        "print(sorted(k for k in a.AUTO_QUANTIZER_MAPPING if k.startswith('hfcompress')))\n")
    assert out.strip() == "['hfcompress-quanto', 'hfcompress-sparse']"

"""Smoke test on the real SmolLM2-135M: a 15-layer student trains two KD steps (≤ 1 min)."""

from __future__ import annotations

import os

import pytest
import torch

from hfcompress.data import local_datasets_dir

SMOL = os.path.expanduser("~/.cache/hfcompress/assets/HuggingFaceTB/SmolLM2-135M-Instruct")
ENWIKI = str(local_datasets_dir() / "fixtures/enwiki-sample")

pytestmark = pytest.mark.real


@pytest.mark.skipif(not os.path.isdir(SMOL), reason="SmolLM2 asset not built (hfcompress assets)")
def test_smollm2_half_depth_student_two_kd_steps():
    torch.set_num_threads(2)
    import hfcompress
    from hfcompress.distill import KDConfig

    teacher = hfcompress.load(SMOL, dtype="float32")
    student = hfcompress.distill(teacher, KDConfig(
        student_layers=15, temperature=1.0, data={"dataset": ENWIKI, "seq_len": 32, "max_samples": 8},
        training={"max_steps": 2, "per_device_train_batch_size": 1, "logging_steps": 1, "disable_tqdm": True}))
    assert student.model.config.num_hidden_layers == 15
    assert [m.self_attn.layer_idx for m in student.model.model.layers] == list(range(15))
    ids = student.tokenizer("The capital of France is", return_tensors="pt").input_ids
    out = student.model.generate(ids, max_new_tokens=2, do_sample=False)
    assert out.shape[1] == ids.shape[1] + 2

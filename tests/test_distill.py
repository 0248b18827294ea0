"""Distillation: loss terms, DistillationTrainer, student construction, stage, resumption (tiny models)."""

from __future__ import annotations

import math

import pytest
import torch

from hfcompress.distill import KDConfig, distill
from hfcompress.distill._tiny import text_dataset, tiny_bert_classifier, tiny_llama, tiny_tokenizer
from hfcompress.distill.losses import attention_loss, causal_shift, hard_loss, hidden_loss, kd_loss
from hfcompress.errors import UsageError

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def tok():
    return tiny_tokenizer()


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return text_dataset(tmp_path_factory.mktemp("distill-ds") / "ds")


def _args(tmp_path, **kw):
    from transformers import TrainingArguments

    base = dict(output_dir=str(tmp_path / "ckpt"), max_steps=4, per_device_train_batch_size=2, logging_steps=1,
                report_to="none", save_strategy="no", disable_tqdm=True, learning_rate=1e-3, seed=0)
    base.update(kw)
    return TrainingArguments(**base)


# -- losses -----------------------------------------------------------------------------------------
def _softmax(xs):
    m = max(xs)
    e = [math.exp(x - m) for x in xs]
    return [v / sum(e) for v in e]


def test_kd_loss_matches_hand_computation():
    s = [[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]]
    t = [[2.0, 1.0, 0.0], [1.0, 1.0, 1.0]]
    for temp in (1.0, 2.0, 4.0):
        expected = 0.0
        for srow, trow in zip(s, t, strict=True):
            ps = _softmax([x / temp for x in srow])
            pt = _softmax([x / temp for x in trow])
            expected += sum(a * (math.log(a) - math.log(b)) for a, b in zip(pt, ps, strict=True))
        expected = expected / len(s) * temp**2
        got = kd_loss(torch.tensor(s), torch.tensor(t), temp)
        assert float(got) == pytest.approx(expected, rel=1e-5)


def test_kd_loss_t_squared_scaling():
    torch.manual_seed(0)
    s, t = torch.randn(5, 7), torch.randn(5, 7)
    temp = 3.0
    kl = torch.nn.functional.kl_div(torch.log_softmax(s / temp, -1), torch.log_softmax(t / temp, -1),
                                    log_target=True, reduction="batchmean")
    assert float(kd_loss(s, t, temp)) == pytest.approx(float(kl) * temp**2, rel=1e-5)
    # identical logits: zero loss at any temperature
    assert float(kd_loss(s, s, temp)) == pytest.approx(0.0, abs=1e-6)


def test_kd_loss_mask_ignores_masked_positions():
    torch.manual_seed(0)
    s, t = torch.randn(2, 4, 6), torch.randn(2, 4, 6)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]], dtype=torch.bool)
    s2 = s.clone()
    s2[~mask] = 100.0  # garbage where masked
    assert float(kd_loss(s, t, 2.0, mask)) == pytest.approx(float(kd_loss(s2, t, 2.0, mask)), rel=1e-6)
    assert float(kd_loss(s, t, 2.0, mask)) == pytest.approx(float(kd_loss(s[mask], t[mask], 2.0)), rel=1e-6)


def test_causal_shift_uses_labels_then_attention():
    logits = torch.zeros(1, 4, 3)
    labels = torch.tensor([[5, 6, -100, -100]])
    _, mask = causal_shift(logits, labels, None)
    assert mask.tolist() == [[True, False, False]]
    _, mask = causal_shift(logits, None, torch.tensor([[1, 1, 1, 0]]))
    assert mask.tolist() == [[True, True, False]]


def test_hard_hidden_attention_losses():
    logits = torch.tensor([[[10.0, -10.0], [0.0, 0.0], [0.0, 0.0]]])
    assert float(hard_loss(logits, torch.tensor([[1, 0, -100]]), causal=True)) == pytest.approx(0.0, abs=1e-6)
    h = torch.randn(1, 3, 4)
    assert float(hidden_loss(h, h, "mse")) == 0.0
    assert float(hidden_loss(h, 2 * h, "cosine")) == pytest.approx(0.0, abs=1e-6)
    a = torch.softmax(torch.randn(1, 2, 3, 3), -1)
    assert float(attention_loss(a, a)) == pytest.approx(0.0, abs=1e-6)
    assert float(attention_loss(a, torch.softmax(torch.randn(1, 4, 3, 3), -1))) > 0  # head counts differ


# -- trainer ----------------------------------------------------------------------------------------
def _batch(tok, texts, pad_to=None):
    enc = tok(texts, return_tensors="pt", padding="max_length" if pad_to else True, max_length=pad_to)
    labels = enc.input_ids.masked_fill(enc.attention_mask == 0, -100)
    return {"input_ids": enc.input_ids, "attention_mask": enc.attention_mask, "labels": labels}


def test_trainer_padding_is_masked(tmp_path, tok):
    from hfcompress.distill import DistillationTrainer

    teacher, student = tiny_llama(len(tok), seed=1), tiny_llama(len(tok), layers=2, seed=2)
    tr = DistillationTrainer(model=student, teacher=teacher, args=_args(tmp_path), processing_class=tok,
                             alpha=0.7, temperature=2.0)
    batch = _batch(tok, ["hello world", "hi"])
    loss = tr.compute_loss(student, dict(batch))
    garbage = {k: v.clone() for k, v in batch.items()}
    garbage["input_ids"][garbage["attention_mask"] == 0] = 7  # other tokens under the padding
    assert float(tr.compute_loss(student, garbage)) == pytest.approx(float(loss), rel=1e-5)
    # the short row alone gives the same per-token average as its share in the padded batch
    padded_more = _batch(tok, ["hello world", "hi"], pad_to=20)
    assert float(tr.compute_loss(student, padded_more)) == pytest.approx(float(loss), rel=1e-5)


def test_trainer_loss_is_alpha_mix_and_logged(tmp_path, tok, ds):
    from hfcompress.distill import DistillationTrainer
    from hfcompress.distill.data import TrainDataConfig, build_dataset

    teacher, student = tiny_llama(len(tok), seed=1), tiny_llama(len(tok), layers=2, seed=2)
    data, collator = build_dataset(tok, TrainDataConfig(dataset=str(ds), seq_len=32), task="causal-lm")
    tr = DistillationTrainer(model=student, teacher=teacher, args=_args(tmp_path), processing_class=tok,
                             train_dataset=data, data_collator=collator, alpha=0.25, temperature=3.0)
    batch = collator([data[0], data[1]])
    student.eval()
    total = tr.compute_loss(student, dict(batch))
    with torch.no_grad():
        s, t = student(**batch).logits, teacher(**batch).logits
    sl, mask = causal_shift(s, batch["labels"], None)
    tl, _ = causal_shift(t, batch["labels"], None)
    expected = 0.25 * kd_loss(sl, tl, 3.0, mask) + 0.75 * hard_loss(s, batch["labels"], causal=True)
    assert float(total) == pytest.approx(float(expected), rel=1e-5)
    tr.train()
    logs = [e for e in tr.state.log_history if "loss" in e]
    assert len(logs) == 4 and all("kd_loss" in e and "hard_loss" in e for e in logs)


def test_hidden_projection_learns(tmp_path, tok, ds):
    from hfcompress.distill import DistillationTrainer
    from hfcompress.distill.data import TrainDataConfig, build_dataset
    from hfcompress.distill.trainer import detach_projector

    teacher = tiny_llama(len(tok), hidden=48, layers=4, seed=1)
    student = tiny_llama(len(tok), hidden=32, layers=2, seed=2)
    data, collator = build_dataset(tok, TrainDataConfig(dataset=str(ds), seq_len=32), task="causal-lm")
    tr = DistillationTrainer(model=student, teacher=teacher, args=_args(tmp_path, max_steps=25, learning_rate=3e-3,
                                                                        lr_scheduler_type="constant"),
                             processing_class=tok, train_dataset=data, data_collator=collator, alpha=1.0,
                             hidden_weight=10.0, hidden_loss="mse")
    proj = student.distill_projector.proj[0]
    assert isinstance(proj, torch.nn.Linear) and proj.weight.shape == (48, 32)
    before = proj.weight.detach().clone()
    assert any(p is proj.weight for g in tr.create_optimizer().param_groups for p in g["params"])
    tr.train()
    assert not torch.allclose(before, proj.weight.detach())
    hidden = [e["hidden_loss"] for e in tr.state.log_history if "hidden_loss" in e]
    assert sum(hidden[-5:]) / 5 < 0.8 * sum(hidden[:5]) / 5
    assert detach_projector(student) is not None and not hasattr(student, "distill_projector")


def test_attention_loss_term(tmp_path, tok):
    from hfcompress.distill import DistillationTrainer

    teacher, student = tiny_llama(len(tok), seed=1), tiny_llama(len(tok), layers=2, seed=2)
    tr = DistillationTrainer(model=student, teacher=teacher, args=_args(tmp_path), processing_class=tok,
                             alpha=0.5, attention_weight=1.0)
    student.train()
    tr.compute_loss(student, _batch(tok, ["hello world", "hi"]))
    assert tr._terms["attention_loss"] > 0


def test_tokenizer_mismatch_is_a_clear_error(tmp_path, tok):
    from hfcompress.distill import DistillationTrainer

    other = tiny_tokenizer(chars="abcdefghij ")
    teacher, student = tiny_llama(len(tok), seed=1), tiny_llama(len(tok), layers=2, seed=2)
    with pytest.raises(UsageError, match="tokenizers differ"):
        DistillationTrainer(model=student, teacher=teacher, args=_args(tmp_path), processing_class=other,
                            teacher_tokenizer=tok)


def test_classifier_kd_over_class_logits(tmp_path, tok):
    from hfcompress.distill import DistillationTrainer

    teacher = tiny_bert_classifier(len(tok), layers=4, labels=3, seed=1)
    student = tiny_bert_classifier(len(tok), layers=2, labels=3, seed=2)
    tr = DistillationTrainer(model=student, teacher=teacher, args=_args(tmp_path), processing_class=tok,
                             alpha=1.0, temperature=2.0)
    batch = _batch(tok, ["good film", "bad"])
    batch["labels"] = torch.tensor([0, 2])
    student.eval()
    with torch.no_grad():
        expected = kd_loss(student(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits,
                           teacher(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits, 2.0)
    assert float(tr.compute_loss(student, batch)) == pytest.approx(float(expected), rel=1e-5)


# -- students ---------------------------------------------------------------------------------------
def test_student_from_layers(tok):
    from hfcompress.distill.student import select_layers, student_from_config, student_from_layers

    assert select_layers(30, 15) == list(range(0, 30, 2))
    assert select_layers(6, 3) == [0, 2, 4]
    assert select_layers(5, 3) == [0, 2, 4]
    teacher = tiny_llama(len(tok), layers=4)
    teacher.config.layer_types = ["full_attention"] * 4
    same, kept = student_from_layers(teacher, 4)
    ids = tok(["hello"], return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(same(ids).logits, teacher(ids).logits)
    student, kept = student_from_layers(teacher, 2)
    assert kept == [0, 2] and student.config.num_hidden_layers == 2 and len(student.model.layers) == 2
    assert student.config.layer_types == ["full_attention"] * 2
    assert [layer.self_attn.layer_idx for layer in student.model.layers] == [0, 1]
    assert teacher.config.num_hidden_layers == 4 and len(teacher.model.layers) == 4
    assert torch.equal(student.model.embed_tokens.weight, teacher.model.embed_tokens.weight)
    assert torch.equal(student.model.layers[1].mlp.up_proj.weight, teacher.model.layers[2].mlp.up_proj.weight)
    out = student.generate(ids, max_new_tokens=3, do_sample=False)  # KV cache indexing works
    assert out.shape[1] == ids.shape[1] + 3
    small = student_from_config(teacher, num_hidden_layers=1, hidden_size=16, intermediate_size=32)
    assert small.config.hidden_size == 16 and small.config.num_hidden_layers == 1
    with pytest.raises(UsageError):
        student_from_layers(teacher, 9)


def test_config_validation():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="exactly one"):
        KDConfig()
    with pytest.raises(ValidationError, match="max_steps"):
        KDConfig(student_layers=2, training={"max_step": 1})
    with pytest.raises(ValidationError):
        KDConfig(student_layers=2, alpha=1.5)


# -- stage / API ------------------------------------------------------------------------------------
def test_distill_api_and_recipe_stage(tmp_path, tok, ds):
    import hfcompress
    from hfcompress.distill._tiny import save_model
    from hfcompress.recipes import parse_recipe

    teacher = tiny_llama(len(tok), layers=4, seed=1)
    student = distill(teacher, KDConfig(student_layers=2, data={"dataset": str(ds), "seq_len": 32},
                                        training={"max_steps": 2, "disable_tqdm": True}), tokenizer=tok)
    assert student.config.num_hidden_layers == 2 and not hasattr(student, "distill_projector")

    src = save_model(teacher, tok, tmp_path / "teacher")
    recipe = parse_recipe(f"""
version: 1
stages:
  - distill:
      method: kd
      student_layers: 2
      hidden_weight: 0.5
      data: {{dataset: {ds}, seq_len: 32}}
      training: {{max_steps: 3, logging_steps: 1}}
""")
    result = hfcompress.compress(str(src), recipe, output=tmp_path / "out", progress=False)
    summary = result.report["stages"][0]["summary"]
    assert summary["steps"] == 3 and summary["student"]["kept_layers"] == [0, 2]
    assert summary["layer_map"] == [[1, 1], [2, 4]]  # last <-> last: both after the final norm
    assert {"kd_loss", "hard_loss", "hidden_loss"} <= set(summary["last_log"])
    reloaded = hfcompress.load(str(tmp_path / "out"))
    assert reloaded.model.config.num_hidden_layers == 2
    assert result.report["size"]["after"]["parameters"] < result.report["size"]["before"]["parameters"]


def test_resume_after_interruption_continues_the_run(tmp_path, tok, ds):
    """Stop after a checkpoint (like a kill), resume: same final step, same loss curve as one run."""
    from transformers import TrainerCallback

    from hfcompress.distill import DistillationTrainer
    from hfcompress.distill.data import TrainDataConfig, build_dataset

    data, collator = build_dataset(tok, TrainDataConfig(dataset=str(ds), seq_len=32), task="causal-lm")

    class StopAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 5:
                control.should_training_stop = True

    def trainer(folder, callbacks=()):
        teacher, student = tiny_llama(len(tok), seed=1), tiny_llama(len(tok), layers=2, seed=2)
        return DistillationTrainer(model=student, teacher=teacher, processing_class=tok, train_dataset=data,
                                   data_collator=collator, callbacks=list(callbacks), alpha=0.5,
                                   args=_args(tmp_path, output_dir=str(folder), max_steps=8, save_strategy="steps",
                                              save_steps=4))

    full = trainer(tmp_path / "full")
    full.train()
    first = trainer(tmp_path / "run", [StopAt()])
    first.train()
    assert first.state.global_step == 5 and (tmp_path / "run" / "checkpoint-4").is_dir()
    resumed = trainer(tmp_path / "run")
    resumed.train(resume_from_checkpoint=True)
    assert resumed.state.global_step == 8
    logs = [e for e in resumed.state.log_history if "loss" in e]
    steps = [e["step"] for e in logs]
    assert steps == list(range(1, 9))  # earlier steps kept, monotone, no gap
    ref = {e["step"]: e["loss"] for e in full.state.log_history if "loss" in e}
    for e in logs:
        assert e["loss"] == pytest.approx(ref[e["step"]], rel=1e-3), e["step"]
    assert all("kd_loss" in e for e in logs if e["step"] > 4)


def test_prune_then_distill_current_student_input_teacher(tmp_path, tok, ds):
    """Minitron flow: the bundle's (pruned, narrower) model is the student, the input model the teacher."""
    import hfcompress
    from hfcompress.distill._tiny import save_model
    from hfcompress.distill.student import student_from_config
    from hfcompress.pipeline import StageContext, run_stage

    teacher = tiny_llama(len(tok), layers=2, seed=1)
    folder = save_model(teacher, tok, tmp_path / "teacher")
    bundle = hfcompress.load(str(folder))
    bundle.model = student_from_config(bundle.model, intermediate_size=16)  # stands in for a structured prune
    save_model(bundle.model, tok, tmp_path / "pruned")
    cfg = KDConfig(teacher="@input", student="@current", hidden_weight=1.0,
                   data={"dataset": str(ds), "seq_len": 32}, training={"max_steps": 2, "disable_tqdm": True})
    s = run_stage(bundle, cfg, StageContext(progress=False))["summary"]
    assert s["student"] == {"from": "current-model"} and s["steps"] == 2
    assert bundle.model.config.intermediate_size == 16
    # and a pruned folder as --student / student: works the same way
    cfg2 = KDConfig(student=str(tmp_path / "pruned"), data={"dataset": str(ds), "seq_len": 32},
                    training={"max_steps": 1, "disable_tqdm": True})
    bundle2 = hfcompress.load(str(folder))
    s2 = run_stage(bundle2, cfg2, StageContext(progress=False))["summary"]
    assert s2["student_parameters"] < s2["teacher_parameters"]


def test_distill_recipes_validate():
    from pathlib import Path

    from hfcompress.recipes import load_recipe

    files = sorted(Path(__file__).resolve().parents[1].glob("recipes/distill-*.yaml"))
    assert files
    for f in files:
        assert any(s.family in ("distill", "finetune") for s in load_recipe(f).stages)

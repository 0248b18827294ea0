"""Calibration and distillation data in the model's own modality (issue 14 items 2-3): pixel values
for ViT, log-mel features + transcript decoder inputs for Whisper, through the model's own
processor; the calibrated methods, Taylor and KD on both; one-line errors before any work.
Tiny random models and tiny synthetic datasets (hfcompress.testing.media): plumbing, not quality.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from hfcompress.calibration import calibration_windows, describe_batch
from hfcompress.calibration.modality import media_inputs
from hfcompress.config import CalibrationConfig
from hfcompress.errors import UsageError
from hfcompress.loading import ModelBundle, detect_task
from hfcompress.stage import StageContext, run_stage
from hfcompress.testing.media import tiny_processor, write_audio_dataset, write_image_dataset
from hfcompress.testing.models import ARCHITECTURES, matrix_model


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("media")
    return {"image": write_image_dataset(root / "image"),
            "unlabelled": write_image_dataset(root / "unlabelled", label_column=None),
            "audio": write_audio_dataset(root / "audio"),
            "audio-no-text": write_audio_dataset(root / "audio-no-text", text_column="sentence"),
            "text": _text_dataset(root / "text")}


def _text_dataset(folder: Path) -> Path:
    folder.mkdir()
    (folder / "train.txt").write_text("\n".join(f"sentence number {i} of a small text corpus" for i in range(40)))
    return folder


def _bundle(arch: str, processor: bool = True) -> ModelBundle:
    model = matrix_model(arch)
    return ModelBundle(model, tiny_processor(arch, model.config) if processor else None, detect_task(model.config))


def _save(arch: str, folder: Path) -> Path:
    b = _bundle(arch)
    b.model.save_pretrained(folder)
    b.tokenizer.save_pretrained(folder)
    return folder


def _cal(dataset: Path, **kw) -> CalibrationConfig:
    return CalibrationConfig(dataset=str(dataset), samples=kw.pop("samples", 4), seq_len=16, **kw)


# -- calibration inputs -----------------------------------------------------------------------

def test_image_inputs_are_seeded_cached_and_labelled(data):
    b = _bundle("vit")
    batch = calibration_windows(b.tokenizer, b.model, _cal(data["image"]))
    assert batch["pixel_values"].shape == (4, 3, 32, 32) and batch["pixel_values"].dtype == torch.float32
    assert batch["labels"].tolist() == [int(x) for x in batch["labels"]] and batch["labels"].max() < 3
    assert calibration_windows(b.tokenizer, b.model, _cal(data["image"])) is batch  # cached
    again = media_inputs(tiny_processor("vit", b.model.config), b.model, _cal(data["image"]))  # recomputed
    assert again is not batch
    assert torch.equal(again["pixel_values"], batch["pixel_values"])
    other = media_inputs(b.tokenizer, b.model, _cal(data["image"], seed=1))
    assert not torch.equal(other["pixel_values"], batch["pixel_values"])
    assert describe_batch(batch) == {"samples": 4, "inputs": {"pixel_values": [3, 32, 32]}}
    assert "labels" not in media_inputs(b.tokenizer, b.model, _cal(data["unlabelled"]))


def test_audio_inputs_carry_the_transcripts_as_decoder_inputs(data):
    b = _bundle("whisper")
    batch = calibration_windows(b.tokenizer, b.model, _cal(data["audio"], samples=6))
    frames = 2 * ARCHITECTURES["whisper"][2]["max_source_positions"]
    assert batch["input_features"].shape == (6, 16, frames)
    dec, mask = batch["decoder_input_ids"], batch["decoder_attention_mask"]
    start = b.model.config.decoder_start_token_id
    assert bool((dec[:, 0] == start).all()) and dec.shape == mask.shape
    tok = b.tokenizer.tokenizer
    texts = {"".join(tok.convert_ids_to_tokens(row[1:int(m.sum())].tolist())) for row, m in zip(dec, mask, strict=True)}
    assert texts <= {"a low tone", "a mid tone", "a high tone"} and len(texts) > 1
    assert bool((dec[mask == 0] == b.model.config.pad_token_id).all())


@pytest.mark.parametrize("case, match", [
    ("text-for-image", r"has no image column \(a text dataset \(column 'text'\)\), and ViTForImageClassification "
                       r"reads `pixel_values`: pass an image dataset with --calibration DATASET, or name its image "
                       r"column with --image-column"),
    ("no-processor", r"ViTForImageClassification needs its image processor \(preprocessor_config.json\)"),
    ("no-transcripts", r"needs transcripts, and calibration dataset .* has no column 'text' .*--text-column"),
    ("too-few-rows", r"has only 12 rows, fewer than --samples 20: lower --samples"),
    ("wrong-column", r"has no column 'picture': available columns are image, label; fix --image-column"),
])
def test_one_line_errors_before_any_work(data, case, match):
    from hfcompress.prune import WandaConfig

    arch, dataset, kw, processor = {
        "text-for-image": ("vit", "text", {}, True),
        "no-processor": ("vit", "image", {}, False),
        "no-transcripts": ("whisper", "audio-no-text", {}, True),
        "too-few-rows": ("vit", "image", {"samples": 20}, True),
        "wrong-column": ("vit", "image", {"image_column": "picture"}, True),
    }[case]
    b = _bundle(arch, processor)
    before = {k: v.clone() for k, v in b.model.state_dict().items()}
    with pytest.raises(UsageError, match=match) as exc:
        run_stage(b, WandaConfig(sparsity=0.5, calibration=_cal(data[dataset], **kw)), StageContext(progress=False))
    assert "\n" not in str(exc.value)
    assert all(torch.equal(v, before[k]) for k, v in b.model.state_dict().items())


@pytest.mark.parametrize("arch, dataset, loss", [
    ("vit", "image", "cross-entropy on the dataset's labels"),
    ("vit", "unlabelled", "cross-entropy on the model's own predictions (the dataset has no label column)"),
    ("whisper", "audio", "next-token cross-entropy on the transcripts"),
])
def test_taylor_on_media_says_which_loss(data, arch, dataset, loss):
    from hfcompress.prune import TaylorConfig

    b = _bundle(arch)
    s = run_stage(b, TaylorConfig(sparsity=0.5, calibration=_cal(data[dataset])), StageContext(progress=False))
    assert s["summary"]["taylor_loss"] == loss
    assert abs(s["summary"]["target_sparsity_actual"] - 0.5) < 1e-3


def test_structured_layers_rank_by_media_calibration(data, tmp_path):
    """Block removal ranks by angular distance on the model's own inputs; the result reloads."""
    import transformers

    from hfcompress.prune import MagnitudeConfig
    from hfcompress.testing.models import matrix_inputs

    b = _bundle("whisper")
    s = run_stage(b, MagnitudeConfig(structured="layers", sparsity=0.5, calibration=_cal(data["audio"])),
                  StageContext(progress=False))["summary"]
    assert set(s["removed_layers"]) == {"model.encoder.layers", "model.decoder.layers"}
    assert s["calibration_samples"] == 4 and len(s["angular_distance"]) == 4
    b.model.save_pretrained(tmp_path)
    re = transformers.WhisperForConditionalGeneration.from_pretrained(tmp_path).eval()
    x = matrix_inputs("whisper")
    with torch.no_grad():
        assert torch.equal(b.model(**x).logits, re(**x).logits)


# -- CLI through the local Hub ----------------------------------------------------------------

def _push_dataset(hub, folder: Path, name: str) -> str:
    api = hub.api()
    repo = f"{hub.user}/{name}"
    api.create_repo(repo, repo_type="dataset", exist_ok=True)
    api.upload_folder(folder_path=str(folder), repo_id=repo, repo_type="dataset")
    return repo


def test_cli_prune_vit_and_whisper_with_hub_datasets(hub_env, data, tmp_path, capsys):
    """`hfcompress prune --calibration <Hub dataset>`: images for ViT (Wanda 2:4), audio for Whisper
    (SparseGPT, OWL); both reload with plain from_pretrained; a text dataset given to ViT is refused."""
    import transformers

    from hfcompress.cli import main
    from hfcompress.prune.engine import arch_info, target_linears

    images = _push_dataset(hub_env, data["image"], "shapes")
    audio = _push_dataset(hub_env, data["audio"], "tones")
    vit = _save("vit", tmp_path / "vit")
    assert main(["prune", str(vit), "--method", "wanda", "--pattern", "2:4", "--calibration", images,
                 "--samples", "4", "-o", str(tmp_path / "vit-24"), "--no-progress"]) == 0
    model = transformers.ViTForImageClassification.from_pretrained(tmp_path / "vit-24")
    linears = target_linears(model, arch_info(model), None, None)
    assert len(linears) == 12
    for lin in linears.values():
        assert bool(((lin.weight.reshape(lin.weight.shape[0], -1, 4) != 0).sum(-1) <= 2).all())
    report = json.loads((tmp_path / "vit-24" / "hfcompress.json").read_text())
    assert report["stages"][0]["summary"]["inputs"] == {"pixel_values": [3, 32, 32]}
    assert (tmp_path / "vit-24" / "preprocessor_config.json").is_file()

    whisper = _save("whisper", tmp_path / "whisper")
    assert main(["prune", str(whisper), "--method", "sparsegpt", "--sparsity", "0.5", "--owl",
                 "--calibration", audio, "--audio-column", "audio", "--samples", "4", "-o",
                 str(tmp_path / "whisper-50"), "--no-progress"]) == 0
    s = json.loads((tmp_path / "whisper-50" / "hfcompress.json").read_text())["stages"][0]["summary"]
    assert set(s["inputs"]) == {"input_features", "decoder_input_ids", "decoder_attention_mask"}
    assert abs(s["target_sparsity_actual"] - 0.5) < 0.02 and len(s["owl_block_sparsity"]) == 4
    transformers.WhisperForConditionalGeneration.from_pretrained(tmp_path / "whisper-50")

    capsys.readouterr()
    assert main(["prune", str(vit), "--method", "wanda", "--sparsity", "0.5", "--calibration", str(data["text"]),
                 "--samples", "4",
                 "-o", str(tmp_path / "refused"), "--no-progress"]) == 2
    errors = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "no image column (a text dataset (column 'text'))" in errors[0]
    assert not (tmp_path / "refused").exists()


# -- distillation -----------------------------------------------------------------------------

def test_cli_distill_vit_with_kd_and_hidden_states(data, tmp_path):
    import transformers

    from hfcompress.cli import main

    vit = _save("vit", tmp_path / "vit")
    out = tmp_path / "student"
    assert main(["distill", "--teacher", str(vit), "--student-layers", "1", "--dataset", str(data["image"]),
                 "--hidden-weight", "1", "--output", str(out), "--no-progress", "--max_steps", "2",
                 "--per_device_train_batch_size", "4", "--logging_steps", "1"]) == 0
    s = json.loads((out / "hfcompress.json").read_text())["stages"][0]["summary"]
    assert s["loss"] == "kd" and s["student_layers"] == 1 and s["steps"] == 2
    assert {"kd_loss", "hard_loss", "hidden_loss"} <= set(s["last_log"])
    student = transformers.ViTForImageClassification.from_pretrained(out)
    assert student.config.num_hidden_layers == 1
    assert transformers.AutoImageProcessor.from_pretrained(out).size == {"height": 32, "width": 32}


def test_distill_whisper_half_decoder_kd_and_labels_only(data, tmp_path):
    """Whisper: the whole encoder and half the decoder; KD (+ decoder hidden states) and the labels-only
    baseline train through the same stage; the student reloads with the same logits."""
    import transformers

    from hfcompress.distill import KDConfig
    from hfcompress.testing.models import matrix_inputs

    logs = {}
    for alpha, hidden in ((0.5, 1.0), (0.0, 0.0)):
        b = _bundle("whisper")
        cfg = KDConfig(student_layers=1, student_stacks="decoder", alpha=alpha, hidden_weight=hidden,
                       data={"dataset": str(data["audio"]), "seq_len": 16},
                       training={"max_steps": 2, "per_device_train_batch_size": 4, "logging_steps": 1})
        s = run_stage(b, cfg, StageContext(progress=False, work_dir=tmp_path / str(alpha)))["summary"]
        assert (b.model.config.encoder_layers, b.model.config.decoder_layers) == (2, 1)
        logs[s["loss"]] = s["last_log"]
    assert {"kd_loss", "hidden_loss", "hard_loss"} <= set(logs["kd"]) and "kd_loss" not in logs["labels-only"]
    b.model.save_pretrained(tmp_path / "student")
    re = transformers.WhisperForConditionalGeneration.from_pretrained(tmp_path / "student").eval()
    x = matrix_inputs("whisper")
    with torch.no_grad():
        assert torch.equal(b.model.eval()(**x).logits, re(**x).logits)


def test_distill_whisper_frozen_encoder_is_shared_and_exact(data, tmp_path):
    """freeze: [encoder] on a student cut from the teacher's decoder: the encoder stays bit-identical
    to the teacher's, runs once per batch for both models, and the loss equals the unshared one."""
    from transformers import TrainingArguments

    from hfcompress.distill import KDConfig
    from hfcompress.distill.student import student_from_layers
    from hfcompress.distill.trainer import DistillationTrainer

    b = _bundle("whisper")
    teacher = b.model  # the stage replaces b.model with the student
    enc0 = {k: v.clone() for k, v in teacher.get_encoder().state_dict().items()}
    dec0 = {k: v.clone() for k, v in teacher.get_decoder().layers[0].state_dict().items()}
    cfg = KDConfig(student_layers=1, student_stacks="decoder", freeze=["encoder"], alpha=0.5, hidden_weight=1.0,
                   data={"dataset": str(data["audio"]), "seq_len": 16},
                   training={"max_steps": 2, "per_device_train_batch_size": 4, "logging_steps": 1,
                             "learning_rate": 1e-2})
    s = run_stage(b, cfg, StageContext(progress=False, work_dir=tmp_path))["summary"]
    assert s["shared_encoder"] is True and s["frozen"] == ["encoder"]
    assert 0 < s["trainable_parameters"] < s["student_parameters"]
    student = b.model
    for k, v in student.get_encoder().state_dict().items():
        assert torch.equal(v, enc0[k]), k  # frozen: not one weight moved
    assert any(not torch.equal(v, dec0[k]) for k, v in student.get_decoder().layers[0].state_dict().items())

    # one batch, shared vs each model running its own encoder: the same loss, bit for bit
    fresh, _ = student_from_layers(teacher, 1, stacks="decoder")
    trainer = DistillationTrainer(model=fresh, teacher=teacher, alpha=0.5, hidden_weight=1.0, freeze=["encoder"],
                                  args=TrainingArguments(output_dir=str(tmp_path / "t"), report_to="none", use_cpu=True))
    assert trainer.shared_encoder is teacher.get_encoder()
    x = {"input_features": torch.randn(2, teacher.config.num_mel_bins, 2 * teacher.config.max_source_positions),
         "decoder_input_ids": torch.tensor([[1, 5, 7, 9], [1, 4, 4, 2]]), "labels": torch.tensor([[5, 7, 9, 2], [4, 4, 2, -100]])}
    fresh.eval()
    shared = trainer.compute_loss(fresh, dict(x))
    trainer.shared_encoder = None
    assert torch.equal(shared, trainer.compute_loss(fresh, dict(x)))


def test_distill_freeze_unknown_module_is_one_line(data):
    from hfcompress.distill import KDConfig

    b = _bundle("whisper")
    cfg = KDConfig(student_layers=1, student_stacks="decoder", freeze=["model.encodr"],
                   data={"dataset": str(data["audio"])}, training={"max_steps": 1})
    with pytest.raises(UsageError, match=r"freeze: 'model.encodr' is not a submodule .* did you mean 'model.encoder'"):
        run_stage(b, cfg, StageContext(progress=False))
    cfg = KDConfig(student_layers=1, student_stacks="decoder", freeze=["model"], data={"dataset": str(data["audio"])})
    with pytest.raises(UsageError, match="covers every parameter"):
        run_stage(b, cfg, StageContext(progress=False))


@pytest.mark.parametrize("arch, dataset, match", [
    ("vit", "unlabelled", r"has no label column 'label': available columns are image \(set --label-column\)"),
    ("whisper", "audio-no-text", r"has no transcript column 'text': available columns are audio, sentence"),
    ("vit", "text", r"has no image column .* --dataset DATASET"),
    ("t5", "text", r"needs target texts: set target_column \(--target-column\)"),
])
def test_distill_data_errors_are_one_line(data, arch, dataset, match):
    from hfcompress.distill import KDConfig
    from hfcompress.testing.matrix import matrix_tokenizer

    model = matrix_model(arch)
    b = ModelBundle(model, matrix_tokenizer(arch), detect_task(model.config))
    cfg = KDConfig(student_layers=1, data={"dataset": str(data[dataset])}, training={"max_steps": 1})
    with pytest.raises(UsageError, match=match) as exc:
        run_stage(b, cfg, StageContext(progress=False))
    assert "\n" not in str(exc.value)


def test_distill_text_seq2seq_with_target_column(tmp_path):
    """T5: inputs from text_column, labels from target_column (no misleading 'label' column error);
    the hidden-state term compares the decoder's hidden states."""
    from hfcompress.distill import KDConfig
    from hfcompress.testing.matrix import matrix_tokenizer

    (tmp_path / "ds").mkdir()
    (tmp_path / "ds" / "train.jsonl").write_text("\n".join(
        json.dumps({"text": f"count {i} apples", "target": f"{i} pommes"}) for i in range(8)))
    model = matrix_model("t5")
    b = ModelBundle(model, matrix_tokenizer("t5"), detect_task(model.config))
    cfg = KDConfig(student_layers=1, hidden_weight=1.0,
                   data={"dataset": str(tmp_path / "ds"), "target_column": "target", "seq_len": 16},
                   training={"max_steps": 2, "per_device_train_batch_size": 4, "logging_steps": 1})
    s = run_stage(b, cfg, StageContext(progress=False, work_dir=tmp_path / "w"))["summary"]
    assert {"kd_loss", "hard_loss", "hidden_loss"} <= set(s["last_log"]) and s["steps"] == 2
    assert (b.model.config.num_layers, b.model.config.num_decoder_layers) == (1, 1)

"""``hfcompress distill`` / ``finetune`` CLI: TrainingArguments pass-through, resume, errors, accelerate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hfcompress.cli import main
from hfcompress.distill._tiny import save_model, text_dataset, tiny_llama, tiny_tokenizer

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("distill-cli")
    tok = tiny_tokenizer()
    teacher = save_model(tiny_llama(len(tok), layers=4, seed=1), tok, base / "teacher")
    ds = text_dataset(base / "ds")
    return base, teacher, ds


def _report(folder: Path) -> dict:
    return json.loads((folder / "hfcompress.json").read_text())


def test_cli_training_args_and_resume(setup, tmp_path, capsys):
    _, teacher, ds = setup
    out = tmp_path / "student"
    common = ["distill", "--teacher", str(teacher), "--student-layers", "2", "--dataset", str(ds),
              "--seq-len", "32", "--output", str(out), "--no-progress",
              "--per_device_train_batch_size", "2", "--learning-rate", "1e-3", "--logging_steps", "1",
              "--save_steps", "2", "--lr_scheduler_type", "constant", "--checkpoints", str(tmp_path / "ckpts")]
    assert main([*common, "--max_steps", "4"]) == 0
    ckpts = tmp_path / "ckpts"
    assert (ckpts / "checkpoint-4").is_dir()
    first = _report(out)["stages"][0]
    assert first["params"]["training"]["per_device_train_batch_size"] == 2
    assert first["params"]["training"]["lr_scheduler_type"] == "constant"
    assert first["summary"]["steps"] == 4
    # resume with a larger budget: continues from checkpoint-4 to step 7
    assert main([*common, "--max_steps", "7", "--resume-from-checkpoint", "--overwrite"]) == 0
    s = _report(out)["stages"][0]["summary"]
    assert s["steps"] == 7 and s["resumed_from"].endswith("checkpoint-4")
    state = json.loads((ckpts / "checkpoint-6" / "trainer_state.json").read_text())
    steps = [e["step"] for e in state["log_history"] if "loss" in e]
    assert steps == list(range(1, 7))  # history from before the restart is kept, monotone
    assert all("kd_loss" in e and "hard_loss" in e for e in state["log_history"] if "loss" in e)
    assert (out / "model.safetensors").is_file() and (out / "recipe.yaml").is_file()
    assert "distill/kd" in capsys.readouterr().out


def test_checkpoints_kept_only_when_asked(setup, tmp_path, capsys):
    """Without --checkpoints nothing is left beside the output (issue 19 item 11)."""
    _, teacher, ds = setup
    out = tmp_path / "student"
    assert main(["distill", "--teacher", str(teacher), "--student-layers", "2", "--dataset", str(ds), "--seq-len", "32",
                 "--output", str(out), "--no-progress", "--max_steps", "2", "--save_steps", "1"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["student"]
    assert not any(p.name.startswith("checkpoint") for p in out.rglob("*"))
    assert _report(out)["stages"][0]["summary"]["checkpoints"] is None
    code = main(["distill", "--teacher", str(teacher), "--student-layers", "2", "--dataset", str(ds),
                 "--output", str(tmp_path / "o2"), "--resume-from-checkpoint"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code != 0 and "--checkpoints DIR" in err[-1]


def test_cli_unknown_flag_is_one_line_error(setup, tmp_path, capsys):
    _, teacher, ds = setup
    code = main(["distill", "--teacher", str(teacher), "--student-layers", "2", "--dataset", str(ds),
                 "--output", str(tmp_path / "o"), "--max_stepz", "3"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "--max_stepz" in err and len(err.splitlines()) == 1


def test_cli_tokenizer_mismatch(setup, tmp_path, capsys):
    _, teacher, ds = setup
    other_tok = tiny_tokenizer(chars="abcdefghijklmnopqrstuvwxyz .")
    student = save_model(tiny_llama(len(other_tok), layers=1, seed=2), other_tok, tmp_path / "other")
    code = main(["distill", "--teacher", str(teacher), "--student", str(student), "--dataset", str(ds),
                 "--output", str(tmp_path / "o"), "--max_steps", "1"])
    assert code == 2 and "tokenizers differ" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_cli_finetune_lora(setup, tmp_path):
    _, teacher, ds = setup
    out = tmp_path / "recovered"
    assert main(["finetune", str(teacher), "--r", "2", "--loss", "kd", "--teacher", str(teacher),
                 "--dataset", str(ds), "--seq-len", "32", "--output", str(out), "--no-progress",
                 "--max_steps", "2", "--save_strategy", "no"]) == 0
    s = _report(out)["stages"][0]["summary"]
    assert s["merged"] is True and s["loss"] == "kd" and s["steps"] == 2


ACCELERATE = Path(sys.executable).parent / "accelerate"


@pytest.mark.slow  # two subprocesses that import torch/transformers/accelerate: ~70 s on a busy box
@pytest.mark.skipif(not ACCELERATE.is_file(), reason="accelerate CLI not installed")
def test_accelerate_launch_two_cpu_processes_split_the_data(setup, tmp_path):
    """The documented launcher runs two gloo CPU processes: each trains on half the rows, one output."""
    _, teacher, ds = setup
    out = tmp_path / "acc"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "",
           "MASTER_PORT": str(29500 + os.getpid() % 1000)}
    env.pop("WORLD_SIZE", None)
    cmd = [str(ACCELERATE), "launch", "--config_file", str(ROOT / "configs/accelerate/cpu.yaml"),
           "--num_processes", "2", "--main_process_port", env["MASTER_PORT"],
           "-m", "hfcompress.cli.distill", "--teacher", str(teacher), "--student-layers", "2", "--dataset", str(ds),
           "--seq-len", "32", "--output", str(out), "--no-progress", "--num_train_epochs", "1",
           "--per_device_train_batch_size", "2", "--save_strategy", "no"]
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = _report(out)["stages"][0]["summary"]
    rows = summary["train_samples"]
    parallel = summary["data_parallel"]
    assert rows % 4 == 0 and parallel["world_size"] == 2
    assert parallel["rows_per_process"] == [rows // 2, rows // 2], parallel  # one epoch: half each
    # the halves are different rows (a few packed windows of the tiny corpus repeat verbatim)
    assert parallel["distinct_rows"] >= 0.95 * rows, parallel
    assert _report(out)["stages"][0]["params"]["training"]["use_cpu"] is True
    assert sorted(p.name for p in tmp_path.iterdir()) == ["acc"], "exactly one output, no checkpoints beside it"
    assert proc.stdout.count("wrote ") == 1, "only rank 0 writes and reports"


def test_accelerate_cpu_flag_with_many_processes_is_refused(monkeypatch, capsys):
    """``accelerate launch --cpu --num_processes 2`` starts one process (no MPI): a one-line error, no lone run."""
    from hfcompress.cli import distill as cli_distill

    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_PORT", "29500")
    for k in ("WORLD_SIZE", "LOCAL_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    assert cli_distill.main(["--teacher", "x", "--output", "y"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "configs/accelerate/cpu.yaml" in err[0]

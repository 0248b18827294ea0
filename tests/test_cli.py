"""CLI: `compress` end to end on tiny models, exit codes, one-line errors, atomic outputs."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import stage_fixtures  # noqa: F401 - registers prune/test-zero-rows
from hfcompress.cli import main

RECIPE = "stages:\n  - prune:\n      method: test-zero-rows\n      rows: 2\n"


def _tree_digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(folder).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "hfcompress", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_compress_writes_loadable_folder(tiny_models, tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    src = tiny_models["llama"]
    before = _tree_digest(src)
    out = tmp_path / "out"
    assert main(["compress", str(src), "--recipe", str(recipe), "--output", str(out)]) == 0
    assert "prune/test-zero-rows" in capsys.readouterr().out
    assert _tree_digest(src) == before, "the source model must never be modified"

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(out)
    tok = AutoTokenizer.from_pretrained(out)
    gen = model.generate(**tok("hello", return_tensors="pt"), max_new_tokens=4, do_sample=False)
    assert gen.shape[1] == len("hello") + 4
    assert torch.all(model.model.layers[0].mlp.up_proj.weight[:2] == 0)

    report = json.loads((out / "hfcompress.json").read_text())
    assert report["schema_version"] == 1
    assert report["stages"][0]["method"] == "test-zero-rows"
    assert report["stages"][0]["params"]["rows"] == 2
    assert report["source"] == {"local_name": "llama"}
    assert report["size"]["after"]["nonzero_parameters"] < report["size"]["before"]["nonzero_parameters"]
    assert report["size"]["after"]["weight_bytes"] > 0
    assert "transformers" in report["libraries"]
    assert (out / "recipe.yaml").read_text().startswith("version: 1")
    assert str(tmp_path) not in (out / "hfcompress.json").read_text(), "no local paths in the report"
    assert not list(tmp_path.glob(".out.tmp-*")), "no temporary folder left behind"


def test_compress_encoder(tiny_models, tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    out = tmp_path / "enc"
    assert main(["compress", str(tiny_models["bert"]), "-r", str(recipe), "-o", str(out)]) == 0
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(out)
    assert model(input_ids=torch.tensor([[1, 7, 9]])).logits.shape == (1, 2)


def test_existing_output_needs_overwrite(tiny_models, tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("old")
    args = ["compress", str(tiny_models["llama"]), "-r", str(recipe), "-o", str(out)]
    assert main(args) == 1
    assert "already exists: pass --overwrite" in capsys.readouterr().err
    assert (out / "keep.txt").read_text() == "old"
    assert main([*args, "--overwrite"]) == 0
    assert not (out / "keep.txt").exists() and (out / "config.json").exists()


@pytest.mark.parametrize(
    "args, code, fragment",
    [
        (["--help"], 0, None),
        ([], 2, None),
        (["frobnicate"], 2, "invalid choice"),
        (["compress", "MODEL"], 2, "required"),
        (["compress", "/no/such/model", "-r", "{recipe}", "-o", "{out}"], 1, "does not exist"),
        (["compress", "{model}", "-r", "{bad_recipe}", "-o", "{out}"], 2, "unknown stage 'polish'"),
        (["compress", "{model}", "-r", "{tmp}/missing.yaml", "-o", "{out}"], 2, "recipe file"),
        (["compress", "{model}", "-r", "{recipe}", "-o", "{model}"], 1, "is the input model folder"),
        (["compress", "{model}", "-r", "{recipe}", "-o", "{model}/sub"], 1, "inside it"),
        (["compress", "{model}", "-r", "{recipe}", "-o", "{out}", "--dtype", "int3"], 2, "invalid choice"),
    ],
)
def test_exit_codes_and_one_line_errors(tiny_models, tmp_path, capsys, args, code, fragment):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    bad = tmp_path / "bad.yaml"
    bad.write_text("stages:\n  - polish: {method: x}\n")
    subs = {"recipe": recipe, "bad_recipe": bad, "out": tmp_path / "out", "model": tiny_models["llama"],
            "tmp": tmp_path}
    argv = [a.format(**subs) for a in args]
    src_digest = _tree_digest(tiny_models["llama"])
    try:
        returncode = main(argv)
    except SystemExit as exc:  # argparse usage errors and --help
        returncode = exc.code
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    if code is None:
        return
    assert returncode == code, stderr
    if fragment:
        err_lines = [ln for ln in stderr.splitlines() if ln.startswith("error:")]
        assert len(err_lines) == 1 and fragment in err_lines[0], stderr
    assert not (tmp_path / "out").exists(), "nothing may be written on error"
    assert _tree_digest(tiny_models["llama"]) == src_digest


def test_debug_shows_traceback(tmp_path):
    proc = _cli("--debug", "compress", "/no/such/model", "-r", str(tmp_path / "x.yaml"), "-o", str(tmp_path / "o"))
    assert proc.returncode == 2 and "Traceback" in proc.stderr


def test_help_lists_commands():
    proc = _cli("--help")
    for command in ("compress", "prune", "quantize", "distill", "evaluate", "push", "pull", "card"):
        assert command in proc.stdout

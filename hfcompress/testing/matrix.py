"""The architecture support matrix: every method on every tiny model of
:data:`hfcompress.testing.models.ARCHITECTURES`, one cell at a time.

``tests/test_architectures.py`` runs each cell with :func:`run_cell`; with
``HFCOMPRESS_MATRIX_OUT=<file.jsonl>`` it also records every cell's result there. This module's
command runs that test and renders the results as the Markdown table included by
docs/ARCHITECTURES.md::

    python -m hfcompress.testing.matrix   # -> benchmarks/results/architectures.md + docs/ARCHITECTURES.md
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch

from .media import cached_dataset, tiny_processor
from .models import ARCHITECTURES, matrix_inputs, matrix_model, tiny_tokenizer

#: matrix columns: name -> what the cell checks
CELLS: dict[str, str] = {
    "magnitude": "unstructured magnitude 50 %: exact sparsity",
    "wanda": "unstructured Wanda 50 %: exact sparsity",
    "sparsegpt": "unstructured SparseGPT 50 %: exact sparsity",
    "taylor": "unstructured Taylor 50 %: exact sparsity",
    "2:4": "Wanda 2:4: every group of 4 inputs keeps 2",
    "bnb-int8": "bitsandbytes int8: save -> reload -> same outputs",
    "bnb-nf4": "bitsandbytes NF4: save -> reload -> same outputs",
    "quanto-int8": "quanto int8: save -> reload -> same outputs",
    "quanto-int4": "quanto int4: save -> reload -> same outputs",
    "calibrated-nf4": "calibrated (GPTQ-style) NF4: save -> reload -> same outputs",
    "ffn": "structured FFN channels 50 %: from_pretrained reload, same logits",
    "heads": "structured attention heads 50 %: from_pretrained reload, same logits",
    "layers": "structured blocks 50 %: from_pretrained reload, same logits",
    "student": "distillation student (half the blocks): from_pretrained reload, same logits",
}

DOC_START, DOC_END = "<!-- matrix:start -->", "<!-- matrix:end -->"

#: the error of the pruning engine's allow-list of model types (removed by the calibration work):
#: a cell failing with it is expected to pass once that work is merged
ALLOW_LIST_ERROR = "supported architectures:"

#: cells that must be refused, with the capability the one-line error names (regex)
EXPECTED_REFUSALS: dict[tuple[str, str], str] = {
    **{(a, "heads"): "config that can state the head size"
       for a in ("gpt2", "gpt_neox", "opt", "falcon", "bert", "roberta", "distilbert", "bart", "whisper")},
    # transformers' bitsandbytes integration replaces exact nn.Linear / Conv1D only (FalconLinear subclasses it)
    **{("falcon", c): "converts exact nn.Linear and Conv1D layers only" for c in ("bnb-int8", "bnb-nf4",
                                                                                 "calibrated-nf4")},
}


def matrix_tokenizer(name: str) -> Any:
    """The tokenizer of a text architecture (character level, ``<mask>`` for masked LMs), or the
    processor of a vision / speech one (:func:`hfcompress.testing.media.tiny_processor`)."""
    family = ARCHITECTURES[name][3]
    if family in ("vision", "speech"):
        return tiny_processor(name, matrix_model(name).config)
    return tiny_tokenizer(256, mask_token=family == "encoder")


def matrix_dataset(name: str, text_dataset: str) -> str:
    """Calibration dataset of a matrix architecture: the text one, or a synthetic image / audio one."""
    family = ARCHITECTURES[name][3]
    if family in ("vision", "speech"):
        return cached_dataset("image" if family == "vision" else "audio")
    return text_dataset


def calibration_folder(folder: Path, source: Path, chars: int = 20_000) -> Path:
    """A small local dataset (``train.txt``) cut from the first articles of a Hub-layout dataset folder."""
    import datasets

    folder.mkdir(parents=True, exist_ok=True)
    texts, n = [], 0
    for t in datasets.load_dataset(str(source), split="train")["text"]:
        texts.append(" ".join(t.split()))
        n += len(texts[-1])
        if n >= chars:
            break
    (folder / "train.txt").write_text("\n".join(texts) + "\n")
    return folder


def _outputs(model: Any, name: str) -> torch.Tensor:
    with torch.no_grad():
        out = model(**matrix_inputs(name))
    return out.logits


def _reload(model: Any, folder: Path) -> Any:
    from ..quantize.bnb import harden_bnb4

    new = type(model).from_pretrained(folder).eval()
    harden_bnb4(new)
    return new


def _config(cell: str, dataset: str) -> Any:
    from ..config import CalibrationConfig
    from ..prune import MagnitudeConfig, SparseGPTConfig, TaylorConfig, WandaConfig
    from ..quantize import (
        BnbInt8Config,
        BnbNF4Config,
        CalibratedNF4Config,
        QuantoInt4Config,
        QuantoInt8Config,
    )

    cal = CalibrationConfig(dataset=dataset, samples=2, seq_len=16)
    return {
        "magnitude": lambda: MagnitudeConfig(sparsity=0.5),
        "wanda": lambda: WandaConfig(sparsity=0.5, calibration=cal),
        "sparsegpt": lambda: SparseGPTConfig(sparsity=0.5, calibration=cal),
        "taylor": lambda: TaylorConfig(sparsity=0.5, calibration=cal),
        "2:4": lambda: WandaConfig(pattern="2:4", calibration=cal),
        "bnb-int8": BnbInt8Config,
        "bnb-nf4": BnbNF4Config,
        "quanto-int8": QuantoInt8Config,
        "quanto-int4": lambda: QuantoInt4Config(group_size=32),
        # act-order and the clip search only change which grid point each weight gets: off, for speed
        "calibrated-nf4": lambda: CalibratedNF4Config(calibration=cal, act_order=False, clip_search=False),
        "ffn": lambda: MagnitudeConfig(structured="ffn", sparsity=0.5),
        "heads": lambda: MagnitudeConfig(structured="heads", sparsity=0.5),
        "layers": lambda: MagnitudeConfig(structured="layers", sparsity=0.5, calibration=cal),
    }[cell]()


def _check_sparsity(summary: dict[str, Any], cell: str, model: Any) -> None:
    if cell == "2:4":
        from ..prune.engine import arch_info, target_linears

        for name, lin in target_linears(model, arch_info(model), None, None).items():
            groups = (lin.weight.reshape(lin.weight.shape[0], -1, 4) != 0).sum(-1)
            assert bool((groups <= 2).all()), f"{name} breaks 2:4"
        return
    got = summary["target_sparsity_actual"]
    assert abs(got - 0.5) < 1e-3, f"sparsity {got} instead of 0.5"


def run_cell(name: str, cell: str, dataset: str, workdir: Path) -> None:
    """Run one cell; returns on success, raises (the method's own error, or AssertionError)."""
    from ..loading import ModelBundle
    from ..loading.load import detect_task
    from ..stage import StageContext, run_stage, save_bundle

    model = matrix_model(name)
    bundle = ModelBundle(model, matrix_tokenizer(name), detect_task(model.config))
    if cell == "student":
        from ..calibration.blocks import find_block_stacks
        from ..distill.student import student_from_layers

        total = min(len(s) for s in find_block_stacks(model))
        student, _ = student_from_layers(model, max(1, total // 2))
        student.save_pretrained(workdir / "student")
        assert torch.equal(_outputs(student, name), _outputs(_reload(student, workdir / "student"), name))
        return
    cfg = _config(cell, matrix_dataset(name, dataset))
    ref = _outputs(copy.deepcopy(model), name)
    summary = run_stage(bundle, cfg, StageContext(work_dir=workdir, progress=False))["summary"]
    if cell in ("magnitude", "wanda", "sparsegpt", "taylor", "2:4"):
        _check_sparsity(summary, cell, bundle.model)
        return
    before = _outputs(bundle.model, name)
    if cell not in ("ffn", "heads", "layers"):
        assert not torch.equal(before, ref), "the outputs did not change: nothing was quantized"
    save_bundle(bundle, workdir / "out")
    after = _outputs(_reload(bundle.model, workdir / "out"), name)
    assert torch.equal(before, after), f"reloaded outputs differ (max {float((before - after).abs().max()):.3g})"


def outcome(name: str, cell: str, dataset: str, workdir: Path) -> tuple[str, str]:
    """``("ok" | "refused" | "pending" | "failed", one-line message)`` of one cell."""
    import re

    try:
        run_cell(name, cell, dataset, workdir)
    except Exception as exc:  # noqa: BLE001 - every failure is a matrix entry
        msg = " ".join(str(exc).split()) or type(exc).__name__
        if ALLOW_LIST_ERROR in msg:
            return "pending", msg
        want = EXPECTED_REFUSALS.get((name, cell))
        from ..errors import HFCompressError

        if want and isinstance(exc, HFCompressError) and re.search(want, msg):
            return "refused", msg
        return "failed", f"{type(exc).__name__}: {msg}"
    return "ok", ""


def record(path: str | None, name: str, cell: str, status: str, message: str) -> None:
    if path:
        with open(path, "a") as f:
            f.write(json.dumps({"arch": name, "cell": cell, "status": status, "message": message}) + "\n")


def _note(status: str, message: str) -> str:
    """One footnote per kind of reason: model and config class names folded, so the same
    capability reads once."""
    import re

    if status == "pending":
        return "pending: the pruning engine's allow-list of model types (`pruning is not supported for <type> " \
               "(supported architectures: ...)`); the calibration work removes it"
    msg = re.sub(r"\b[A-Z]\w*Config\b", "its config", message[:300])
    msg = re.sub(r"\b[A-Z]\w*For[A-Z]\w*\b", "the model", msg)
    return f"{status}: {msg}"


def render(rows: list[dict[str, Any]]) -> str:
    """The Markdown matrix: ✅, or a footnote number whose line gives the one-line reason."""
    by = {(r["arch"], r["cell"]): r for r in rows}
    notes: dict[str, int] = {}
    lines = ["| architecture | " + " | ".join(CELLS) + " |", "|---" * (len(CELLS) + 1) + "|"]
    for arch in ARCHITECTURES:
        cells = []
        for cell in CELLS:
            r = by.get((arch, cell))
            if r is None:
                cells.append("–")
            elif r["status"] == "ok":
                cells.append("✅")
            else:
                key = _note(r["status"], r["message"])
                n = notes.setdefault(key, len(notes) + 1)
                cells.append({"refused": "⛔", "pending": "⏳", "failed": "❌"}[r["status"]] + f"[{n}]")
        lines.append(f"| {arch} | " + " | ".join(cells) + " |")
    def ok(a: str, c: str) -> bool:
        return by.get((a, c), {}).get("status") == "ok"

    counts = {c: sum(1 for a in ARCHITECTURES if ok(a, c)) for c in CELLS}
    lines.append(f"| **✅ of {len(ARCHITECTURES)}** | " + " | ".join(str(counts[c]) for c in CELLS) + " |")
    structured = [a for a in ARCHITECTURES if all(ok(a, c) for c in ("ffn", "heads", "layers"))]
    lines += ["", f"All three structured modes: {len(structured)} of {len(ARCHITECTURES)} ({', '.join(structured)})."]
    lines += ["", "✅ works · ⛔ refused before any work with a one-line error naming the missing capability · "
              "⏳ refused by the engine's old allow-list of model types (pending the calibration work) · "
              "❌ fails", ""]
    lines += [f"{n}. {key}" for key, n in notes.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", default="benchmarks/results/architectures.md")
    parser.add_argument("--doc", default="docs/ARCHITECTURES.md", help="document whose matrix block is rewritten")
    parser.add_argument("-k", default=None, help="pytest -k selection (a partial matrix; the doc is left alone)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "matrix.jsonl"
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_architectures.py",
               "-k", args.k or "matrix"]
        subprocess.run(cmd, env={**os.environ, "HFCOMPRESS_MATRIX_OUT": str(out)}, check=False)
        rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    if not rows:
        print("no matrix results were recorded", file=sys.stderr)
        return 1
    text = ("<!-- generated by `python -m hfcompress.testing.matrix` from tests/test_architectures.py -->\n"
            + render(rows))
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(text)
    print(f"wrote {args.output} ({len(rows)} cells)")
    doc = Path(args.doc)
    if doc.is_file() and not args.k:
        body = doc.read_text()
        if DOC_START in body and DOC_END in body:
            block = f"{DOC_START}\n{text}\n<sub>from `{args.output}`</sub>\n{DOC_END}"
            doc.write_text(body[: body.index(DOC_START)] + block + body[body.index(DOC_END) + len(DOC_END):])
            print(f"updated {doc}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark: calibration and distillation in the model's own modality, on real weights (issue 14).

Whisper tiny.en on fixtures/espeak-sentences (calibration / training: split ``train``; word error
rate: split ``test``, other voices):

* Wanda and SparseGPT at 30 % and 50 %, calibrated on audio + transcripts, next to magnitude at the
  same sparsity (the calibrated methods must beat magnitude);
* a student with the whole encoder (frozen: shared with the teacher) and half the decoder, trained
  the same number of steps with KD (logits at temperature 2; ``--hidden-weight`` adds the decoder
  hidden states) and on the labels only (alpha = 0).

The ViT digits teacher (fixtures/vit-digits) on fixtures/digits (split ``test`` for accuracy):

* structured FFN -30 % (activation importance on calibration images): reload with plain
  ``from_pretrained``, accuracy;
* a KD student with half the blocks: accuracy, and its share of the teacher's.

The models and datasets are the speech / vision assets (``make assets``), found under
``$HFCOMPRESS_ASSETS`` (default ``~/.cache/hfcompress/assets``) or given by flag::

    python benchmarks/modality_quality.py --clips 60 --steps 150

Writes benchmarks/results/modality_quality.{json,md}. WER is word-level edit distance over the
whole test set after lower-casing and dropping punctuation (the usual Whisper-style normalisation
for English, without number spelling).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
ASSETS = Path(os.environ.get("HFCOMPRESS_ASSETS", "~/.cache/hfcompress/assets")).expanduser()


def normalize(text: str) -> list[str]:
    return re.sub(r"[^a-z0-9' ]+", " ", text.lower()).split()


def edit_distance(a: list[str], b: list[str]) -> int:
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def wer(refs: list[str], hyps: list[str]) -> float:
    errors = sum(edit_distance(normalize(r), normalize(h)) for r, h in zip(refs, hyps, strict=True))
    return 100.0 * errors / max(1, sum(len(normalize(r)) for r in refs))


def _split(folder: Path, split: str, limit: int | None = None) -> Any:
    from hfcompress.data import load_split

    ds = load_split(str(folder), None, split)
    return ds.select(range(min(limit, len(ds)))) if limit else ds


@torch.no_grad()
def transcribe(model: Any, processor: Any, clips: Any, batch: int = 8, max_new_tokens: int = 64) -> list[str]:
    import datasets

    from hfcompress.calibration.modality import decode_audio

    fe = processor.feature_extractor
    clips = clips.cast_column("audio", datasets.Audio(decode=False))
    out: list[str] = []
    model.eval()
    for i in range(0, len(clips), batch):
        rows = clips.select(range(i, min(i + batch, len(clips))))
        waves = [decode_audio(a, fe.sampling_rate) for a in rows["audio"]]
        feats = fe(waves, sampling_rate=fe.sampling_rate, return_tensors="pt").input_features.to(model.dtype)
        ids = model.generate(input_features=feats,
                             max_new_tokens=min(max_new_tokens, model.config.max_target_positions - 8))
        out += processor.batch_decode(ids, skip_special_tokens=True)
    return out


def whisper_rows(args: argparse.Namespace, tmp: Path, save: Any) -> dict[str, Any]:
    """The Whisper rows of ``args.parts`` (fp32 always); ``save(section)`` after every row, so an
    interrupted run keeps what it measured."""
    from hfcompress.config import CalibrationConfig
    from hfcompress.distill import KDConfig
    from hfcompress.loading import load
    from hfcompress.prune import MagnitudeConfig, SparseGPTConfig, WandaConfig
    from hfcompress.stage import StageContext, run_stage

    test = _split(args.speech_data, "test", args.clips)
    refs = list(test["text"])
    cal = CalibrationConfig(dataset=str(args.speech_data), split="train", samples=args.samples, seq_len=128)
    rows: dict[str, Any] = {}
    section = {"model": str(args.whisper), "dataset": str(args.speech_data), "test_clips": len(refs),
               "calibration_samples": args.samples, "rows": rows}

    def score(name: str, bundle: Any, extra: dict[str, Any] | None = None) -> None:
        t = time.time()
        hyps = transcribe(bundle.model, bundle.tokenizer, test, max_new_tokens=args.max_new_tokens)
        rows[name] = {"wer": round(wer(refs, hyps), 2), "eval_s_under_load": round(time.time() - t, 1),
                      **(extra or {}), "example": hyps[0]}
        print(name, rows[name], flush=True)
        save(section)

    fp32 = load(str(args.whisper), dtype="float32")
    score("fp32", fp32)
    if "students" in args.parts and "cut" in args.students:  # the students' starting point, untrained
        from hfcompress.distill.student import student_from_layers

        cut, _ = student_from_layers(fp32.model, fp32.model.config.decoder_layers // 2, stacks="decoder")
        score("student cut, untrained", type(fp32)(cut, fp32.tokenizer, fp32.task),
              {"decoder_layers": cut.config.decoder_layers, "steps": 0})
    for s in args.sparsities if "prune" in args.parts else []:
        for name, cfg in (("magnitude", MagnitudeConfig(sparsity=s)), ("wanda", WandaConfig(sparsity=s, calibration=cal)),
                          ("sparsegpt", SparseGPTConfig(sparsity=s, calibration=cal))):
            b = load(str(args.whisper), dtype="float32")
            summary = run_stage(b, cfg, StageContext(progress=False))["summary"]
            score(f"{name} {int(s * 100)}%", b, {"sparsity": summary["target_sparsity_actual"]})
    kinds = {"kd": (f"student KD (alpha 0.5, T 2, hidden {args.hidden_weight:g})", 0.5, args.hidden_weight),
             "labels": ("student labels only (alpha 0)", 0.0, 0.0)}
    for label, alpha, hidden in [kinds[k] for k in args.students if k in kinds] if "students" in args.parts else ():
        b = load(str(args.whisper), dtype="float32")
        half = b.model.config.decoder_layers // 2
        cfg = KDConfig(student_layers=half, student_stacks="decoder", freeze=["encoder"], alpha=alpha,
                       temperature=2.0, hidden_weight=hidden,
                       data={"dataset": str(args.speech_data), "split": "train", "seq_len": 128},
                       training={"max_steps": args.steps, "per_device_train_batch_size": 8,
                                 "learning_rate": args.lr, "logging_steps": 25, "seed": 0})
        summary = run_stage(b, cfg, StageContext(progress=False, work_dir=tmp / f"kd-{alpha}"))["summary"]
        score(label, b, {"decoder_layers": b.model.config.decoder_layers, "steps": summary["steps"],
                         "learning_rate": args.lr, "encoder": "frozen" + (" (shared)" if summary["shared_encoder"] else ""),
                         "parameters": summary["student_parameters"], "trained": summary["trainable_parameters"],
                         "train_s_under_load": summary["train_runtime_s"], "last_log": summary["last_log"]})
    return section


@torch.no_grad()
def accuracy(model: Any, processor: Any, ds: Any, batch: int = 64) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(ds), batch):
        rows = ds.select(range(i, min(i + batch, len(ds))))
        px = processor(images=[im.convert("RGB") for im in rows["image"]], return_tensors="pt").pixel_values
        pred = model(pixel_values=px.to(model.dtype)).logits.argmax(-1)
        correct += int((pred == torch.tensor(rows["label"])).sum())
    return 100.0 * correct / len(ds)


def vit_rows(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    import transformers

    from hfcompress.config import CalibrationConfig
    from hfcompress.distill import KDConfig
    from hfcompress.loading import load
    from hfcompress.prune import WandaConfig
    from hfcompress.stage import StageContext, run_stage, save_bundle

    test = _split(args.digits, "test")
    rows: dict[str, Any] = {}
    teacher = load(str(args.vit), dtype="float32")
    base = accuracy(teacher.model, teacher.tokenizer, test)
    rows["teacher"] = {"accuracy": round(base, 2), "parameters": teacher.model.num_parameters()}
    b = load(str(args.vit), dtype="float32")
    cal = CalibrationConfig(dataset=str(args.digits), split="train", samples=args.samples)
    summary = run_stage(b, WandaConfig(structured="ffn", sparsity=0.3, calibration=cal),
                        StageContext(progress=False))["summary"]
    save_bundle(b, tmp / "vit-ffn30")
    reloaded = transformers.AutoModelForImageClassification.from_pretrained(tmp / "vit-ffn30")
    rows["structured FFN -30% (wanda activations), reloaded"] = {
        "accuracy": round(accuracy(reloaded, teacher.tokenizer, test), 2),
        "intermediate_size": summary["intermediate_size"], "parameters": reloaded.num_parameters()}
    b = load(str(args.vit), dtype="float32")
    half = max(1, b.model.config.num_hidden_layers // 2)
    cfg = KDConfig(student_layers=half, alpha=0.7, temperature=2.0, hidden_weight=0.5,
                   data={"dataset": str(args.digits), "split": "train"},
                   training={"max_steps": args.steps, "per_device_train_batch_size": 32, "learning_rate": 5e-4,
                             "logging_steps": 25, "seed": 0})
    summary = run_stage(b, cfg, StageContext(progress=False, work_dir=tmp / "vit-kd"))["summary"]
    acc = accuracy(b.model, b.tokenizer, test)
    rows[f"KD student ({half} of {teacher.model.config.num_hidden_layers} blocks)"] = {
        "accuracy": round(acc, 2), "share_of_teacher": round(acc / base, 4), "steps": summary["steps"],
        "parameters": summary["student_parameters"]}
    for k, v in rows.items():
        print(k, v, flush=True)
    return {"model": str(args.vit), "dataset": str(args.digits), "test_images": len(test), "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    lines = ["# Calibration and distillation in the model's own modality (real weights, CPU)", ""]
    if "whisper" in result:
        w = result["whisper"]
        lines += [f"Whisper: `{w['model']}`, WER on {w['test_clips']} clips of the `test` split of `{w['dataset']}`; "
                  f"calibration: {w['calibration_samples']} clips of `train`.", "",
                  "| variant | WER % | notes |", "|---|---|---|"]
        for k, v in w["rows"].items():
            notes = ", ".join(f"{n}: {v[n]}" for n in ("sparsity", "decoder_layers", "encoder", "steps", "learning_rate",
                                                       "parameters", "trained") if n in v)
            lines.append(f"| {k} | {v['wer']} | {notes} |")
        lines.append("")
    if "vit" in result:
        v = result["vit"]
        lines += [f"ViT: `{v['model']}`, accuracy on {v['test_images']} images of the `test` split of `{v['dataset']}`.",
                  "", "| variant | accuracy % | notes |", "|---|---|---|"]
        for k, r in v["rows"].items():
            notes = ", ".join(f"{n}: {r[n]}" for n in ("share_of_teacher", "intermediate_size", "steps", "parameters")
                              if n in r)
            lines.append(f"| {k} | {r['accuracy']} | {notes} |")
        lines.append("")
    lines.append("Timings were measured on a shared machine (under load) and are not quotable.")
    return "\n".join(lines).replace(str(Path.home()), "~") + "\n"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--whisper", type=Path, default=ASSETS / "openai" / "whisper-tiny.en")
    p.add_argument("--speech-data", type=Path, default=ASSETS / "datasets" / "fixtures" / "espeak-sentences")
    p.add_argument("--vit", type=Path, default=ASSETS / "fixtures" / "vit-digits")
    p.add_argument("--digits", type=Path, default=ASSETS / "datasets" / "fixtures" / "digits")
    p.add_argument("--clips", type=int, default=60, help="test clips for WER")
    p.add_argument("--samples", type=int, default=32, help="calibration samples")
    p.add_argument("--max-new-tokens", type=int, default=64, help="greedy decoding limit per clip (test "
                                                                  "sentences have at most 16 words)")
    p.add_argument("--steps", type=int, default=150, help="distillation steps (both students)")
    p.add_argument("--students", nargs="+", choices=["cut", "kd", "labels"], default=["cut", "kd", "labels"],
                   help="Whisper students: cut = untrained; kd / labels = trained (same steps and learning rate)")
    p.add_argument("--hidden-weight", type=float, default=0.0,
                   help="KD student: weight of the decoder hidden-state MSE (1.0 measured worse: docs/SPEECH_VISION.md)")
    p.add_argument("--lr", type=float, default=5e-4, help="Whisper students' learning rate (both; encoder frozen)")
    p.add_argument("--sparsities", type=float, nargs="+", default=[0.3, 0.5])
    p.add_argument("--only", choices=["whisper", "vit"], default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--parts", nargs="+", choices=["prune", "students"], default=["prune", "students"],
                   help="Whisper rows to measure (fp32 always); the others are kept from the last run on the "
                        "same test clips")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    result: dict[str, Any] = {}
    out = ROOT / "benchmarks" / "results" / "modality_quality"
    previous = json.loads(out.with_suffix(".json").read_text()) if out.with_suffix(".json").is_file() else {}

    def save(part: str, section: dict[str, Any]) -> None:
        """Write ``section`` now: rows of the last run on the same data and clips are kept unless remeasured."""
        old = previous.get(part, {})
        if part == "whisper" and {k: old.get(k) for k in ("model", "dataset", "test_clips")} == \
                {k: section[k] for k in ("model", "dataset", "test_clips")}:
            section = {**section, "rows": {**old.get("rows", {}), **section["rows"]}}
        result[part] = section
        merged = {**previous, **result}
        out.with_suffix(".json").write_text(json.dumps(merged, indent=2) + "\n")
        out.with_suffix(".md").write_text(markdown(merged))

    with tempfile.TemporaryDirectory() as tmp:
        if args.only in (None, "whisper"):
            missing = [str(x) for x in (args.whisper, args.speech_data) if not x.is_dir()]
            if missing:
                print(f"skipping Whisper: {', '.join(missing)} not found (make assets)")
            else:
                save("whisper", whisper_rows(args, Path(tmp), lambda sec: save("whisper", sec)))
        if args.only in (None, "vit"):
            missing = [str(x) for x in (args.vit, args.digits) if not x.is_dir()]
            if missing:
                print(f"skipping ViT: {', '.join(missing)} not found (make assets)")
            else:
                save("vit", vit_rows(args, Path(tmp)))
    if not result:
        return 1
    print(markdown({**previous, **result}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

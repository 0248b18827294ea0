"""Benchmark: fine-tuned MiniLM-L6 teacher -> 3-layer student by KD on movie-review-snippets.

The teacher (all-MiniLM-L6-v2 + a classification head, fine-tuned with Trainer) is
built once and cached in ~/.cache/hfcompress/teachers/ (outside git). The student keeps
layers 0, 2, 4 of the teacher (DistilBERT-style init) and is trained with KD over the
class logits plus the hard labels. Accuracy on the validation split.

    python benchmarks/distill_classifier.py --teacher-epochs 1 --student-epochs 1

Writes benchmarks/results/distill_classifier.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from hfcompress.assets import MINILM, asset_path
from hfcompress.data import local_datasets_dir

ROOT = Path(__file__).resolve().parents[1]
BASE = str(asset_path(MINILM))
DATA = str(local_datasets_dir() / "fixtures/movie-review-snippets")
CACHE = Path(os.path.expanduser("~/.cache/hfcompress/teachers/minilm-l6-movie-review-snippets"))


@torch.no_grad()
def accuracy(model, tok, texts, labels, batch=128) -> float:
    model.eval()
    correct = 0
    for i in range(0, len(texts), batch):
        enc = tok(texts[i: i + batch], padding=True, truncation=True, max_length=128, return_tensors="pt")
        pred = model(**enc).logits.argmax(-1)
        correct += int((pred == torch.tensor(labels[i: i + batch])).sum())
    return correct / len(texts)


def build_teacher(epochs: float, tmp: Path, samples: int | None) -> float:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, Trainer, TrainingArguments

    from hfcompress.distill.data import TrainDataConfig, build_dataset

    tok = AutoTokenizer.from_pretrained(BASE)
    model = AutoModelForSequenceClassification.from_pretrained(BASE, num_labels=2)
    ds, collator = build_dataset(tok, TrainDataConfig(dataset=DATA, text_column="sentence", seq_len=128,
                                                      max_samples=samples),
                                 task="sequence-classification")
    args = TrainingArguments(output_dir=str(tmp / "teacher-ckpt"), num_train_epochs=epochs,
                             per_device_train_batch_size=32, learning_rate=5e-5, warmup_steps=0.06,
                             logging_steps=50, save_strategy="no", report_to="none", seed=0, disable_tqdm=True)
    t = time.time()
    Trainer(model=model, args=args, train_dataset=ds, data_collator=collator, processing_class=tok).train()
    CACHE.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(CACHE)
    tok.save_pretrained(CACHE)
    (CACHE / "built.json").write_text(json.dumps({"epochs": epochs, "train_samples": len(ds),
                                                  "seconds": round(time.time() - t, 1)}))
    return time.time() - t


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--teacher-epochs", type=float, default=2.0,
                   help="the cached teacher is rebuilt when its epochs / samples differ")
    p.add_argument("--student-epochs", type=float, default=1.0)
    p.add_argument("--student-layers", type=int, default=3)
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--temperature", type=float, default=2.0)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--train-samples", type=int, default=None, help="use the first N training examples")
    args = p.parse_args()
    torch.set_num_threads(2)
    import tempfile

    import hfcompress
    from hfcompress.data import load_split
    from hfcompress.distill import KDConfig, distill

    teacher_s = None
    built = json.loads((CACHE / "built.json").read_text()) if (CACHE / "built.json").is_file() else {}
    wanted = (float(args.teacher_epochs), args.train_samples or 8066)
    if not (CACHE / "model.safetensors").is_file() or \
            (float(built.get("epochs", -1)), built.get("train_samples")) != wanted:
        teacher_s = build_teacher(args.teacher_epochs, Path(tempfile.mkdtemp()), args.train_samples)
    built = json.loads((CACHE / "built.json").read_text())
    teacher = hfcompress.load(str(CACHE), task="sequence-classification", dtype="float32")
    val = load_split(DATA, None, "validation")
    texts, labels = list(val["sentence"]), list(val["label"])
    t_acc = accuracy(teacher.model, teacher.tokenizer, texts, labels)
    print("teacher acc", t_acc, flush=True)
    teacher_params = sum(x.numel() for x in teacher.model.parameters())  # distill() replaces bundle.model
    t = time.time()
    student = distill(teacher, KDConfig(
        student_layers=args.student_layers, alpha=args.alpha, temperature=args.temperature,
        data={"dataset": DATA, "text_column": "sentence", "seq_len": 128, "max_samples": args.train_samples},
        training={"num_train_epochs": args.student_epochs, "per_device_train_batch_size": 32,
                  "learning_rate": args.lr, "logging_steps": 50, "disable_tqdm": True, "warmup_steps": 0.06}))
    distill_s = time.time() - t
    s_acc = accuracy(student.model, student.tokenizer, texts, labels)
    n_params = lambda m: sum(x.numel() for x in m.parameters())  # noqa: E731
    result = {
        "config": vars(args),
        "teacher": {"layers": 6, "parameters": teacher_params, "val_accuracy": round(t_acc, 4),
                    "fine_tune_epochs": built["epochs"], "fine_tune_seconds": built["seconds"],
                    "fine_tune_samples": built.get("train_samples"),
                    "built_this_run": teacher_s is not None},
        "student": {"layers": student.model.config.num_hidden_layers, "parameters": n_params(student.model),
                    "val_accuracy": round(s_acc, 4), "distill_seconds": round(distill_s, 1)},
        "retained": round(s_acc / t_acc, 4),
    }
    print(json.dumps(result, indent=2))
    res = ROOT / "benchmarks" / "results"
    res.mkdir(parents=True, exist_ok=True)
    (res / "distill_classifier.json").write_text(json.dumps(result, indent=2) + "\n")
    md = [
        "# MiniLM-L6 sentiment teacher -> 3-layer student (KD)",
        "",
        f"movie-review-snippets (validation 1,012). Teacher: all-MiniLM-L6-v2 + head fine-tuned "
        f"{built['epochs']} epoch(s) on {built.get('train_samples')} training examples. Student: layers 0,2,4 of the teacher, KD alpha={args.alpha} "
        f"T={args.temperature}, {args.student_epochs} epoch(s) on {args.train_samples or 8066} examples, batch 32, lr {args.lr}. CPU.",
        "",
        "| model | layers | params | val accuracy |",
        "|---|---:|---:|---:|",
        f"| teacher | 6 | {result['teacher']['parameters'] / 1e6:.1f}M | {t_acc:.4f} |",
        f"| student (KD) | {result['student']['layers']} | {result['student']['parameters'] / 1e6:.1f}M | "
        f"{s_acc:.4f} |",
        "",
        f"Student keeps {100 * result['retained']:.1f}% of the teacher's accuracy.",
        "",
    ]
    (res / "distill_classifier.md").write_text("\n".join(md))


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Distill SmolLM2-135M into a half-depth (15-layer) student, end to end.

The student keeps every other layer of the teacher (DistilBERT-style init) and is
trained on enwiki text with KD (``--loss kd``) or the plain LM loss (``--loss lm``), then
written to ``--output`` with its tokenizer, ``recipe.yaml`` and ``hfcompress.json``::

    python scripts/distill_smollm2.py --output out/smol-15l --steps 200 --batch 4 --seq-len 256
    accelerate launch --num_processes 1 --cpu scripts/distill_smollm2.py --output out/smol-15l --steps 2

Extra ``--flag value`` pairs go to ``transformers.TrainingArguments`` (through
``hfcompress distill``), e.g. ``--gradient_accumulation_steps 4`` or ``--bf16``.
Re-running with ``--resume`` continues from the last checkpoint.
"""

from __future__ import annotations

import argparse
import os
import sys

from hfcompress.assets import SMOLLM2, asset_path
from hfcompress.data import local_datasets_dir

DEFAULT_TEACHER = str(asset_path(SMOLLM2))
DEFAULT_DATA = str(local_datasets_dir() / "fixtures/enwiki-sample")


def build_argv(args: argparse.Namespace, extra: list[str]) -> list[str]:
    teacher = args.teacher if os.path.isdir(args.teacher) or "/" in args.teacher else DEFAULT_TEACHER
    argv = ["distill", "--teacher", teacher, "--student-layers", str(args.student_layers),
            "--dataset", args.dataset, "--seq-len", str(args.seq_len), "--output", args.output,
            "--loss", args.loss, "--alpha", str(args.alpha), "--temperature", str(args.temperature),
            "--max_steps", str(args.steps), "--per_device_train_batch_size", str(args.batch),
            "--learning_rate", str(args.lr), "--logging_steps", str(args.logging_steps),
            "--save_steps", str(args.save_steps), "--seed", str(args.seed)]
    if args.overwrite:
        argv.append("--overwrite")
    if args.no_progress:
        argv.append("--no-progress")
    if args.resume:
        argv.append("--resume-from-checkpoint")
    return argv + extra


def parse(argv: list[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default=DEFAULT_TEACHER, help="teacher folder or Hub id")
    p.add_argument("--dataset", default=DEFAULT_DATA)
    p.add_argument("--output", required=True)
    p.add_argument("--student-layers", type=int, default=15)
    p.add_argument("--loss", choices=["kd", "lm"], default="kd")
    p.add_argument("--alpha", type=float, default=0.5)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--steps", type=int, default=200)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=256)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--logging-steps", type=int, default=10)
    p.add_argument("--save-steps", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_known_args(argv)


def main(argv: list[str] | None = None) -> int:
    args, extra = parse(argv)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    from hfcompress.cli import main as cli_main

    return cli_main(build_argv(args, extra))


if __name__ == "__main__":
    sys.exit(main())

"""CLI: ``hfcompress distill`` (knowledge distillation) and ``hfcompress finetune`` (LoRA / QLoRA recovery).

Both accept any ``transformers.TrainingArguments`` flag besides their own; see
:mod:`hfcompress.distill.run` and ``docs/DISTILLATION.md``.
"""

from __future__ import annotations


def _distill(args) -> int:
    from ..distill.run import run_distill

    return run_distill(args)


def _finetune(args) -> int:
    from ..distill.run import run_finetune

    return run_finetune(args)


def register(sub) -> None:
    from ..distill.run import add_distill_args, add_finetune_args, make_tolerant

    p = make_tolerant(sub.add_parser(
        "distill", help="distill a teacher into a smaller student (Trainer; any TrainingArguments flag)",
        description="Knowledge distillation: train a student (cut from the teacher with --student-layers, or "
                    "loaded with --student) against the teacher's outputs. Unknown --flags are "
                    "transformers.TrainingArguments fields."))
    add_distill_args(p)
    p.set_defaults(func=_distill)
    p = make_tolerant(sub.add_parser(
        "finetune", help="recovery fine-tuning with LoRA / QLoRA, merged back (sparsity kept)",
        description="LoRA (or QLoRA on 4-bit NF4) recovery fine-tuning of a compressed model; adapters are "
                    "merged back and zero masks re-applied. Unknown --flags are TrainingArguments fields."))
    add_finetune_args(p)
    p.set_defaults(func=_finetune)

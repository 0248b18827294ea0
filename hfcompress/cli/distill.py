"""CLI: ``hfcompress distill`` (knowledge distillation) and ``hfcompress finetune`` (LoRA / QLoRA recovery).

``hfcompress distill`` and ``python -m hfcompress.cli.distill`` take the same flags; the
module form works under ``accelerate launch``::

    hfcompress distill --teacher HuggingFaceTB/SmolLM2-135M-Instruct --student-layers 15 \\
        --dataset fixtures/enwiki-sample --seq-len 256 --output out/smol-15l \\
        --max_steps 200 --per_device_train_batch_size 4 --learning_rate 1e-4

    accelerate launch --config_file configs/accelerate/cpu.yaml --num_processes 2 \
        -m hfcompress.cli.distill --teacher ... --output ...

Every flag that is not an hfcompress flag is a ``transformers.TrainingArguments`` field
(``--max_steps 200``, ``--learning-rate 1e-4``, ``--gradient_accumulation_steps 4``,
``--bf16``, ...), parsed with ``HfArgumentParser``. Checkpoints are kept only in
``--checkpoints DIR`` (or TrainingArguments' ``output_dir``); without it they live in the
run's temporary folder and are deleted with it. ``--resume-from-checkpoint`` (no value:
the latest one in ``--checkpoints``) continues a run. The
final model is written to ``--output`` atomically, with ``recipe.yaml`` and
``hfcompress.json``; under several processes only rank 0 writes it. See ``docs/DISTILLATION.md``.
"""

from __future__ import annotations

import argparse
import enum
import os
import sys
from typing import Any

from ..config import build_config
from ..distill.kd import KDConfig
from ..distill.recovery import LoraFinetuneConfig, QLoraFinetuneConfig
from ..errors import UsageError
from ..hub.transfer import push
from ..pipeline import compress
from ..recipes import Recipe
from . import main as cli_main
from .common import HelpFormatter, add_output_args, check_push_args, load_kwargs, print_summary


class _TolerantParser(argparse.ArgumentParser):
    """Keeps unknown ``--flag value`` pairs (TrainingArguments flags) in ``args.training_argv``."""

    def parse_known_args(self, args=None, namespace=None):  # noqa: D401 - argparse API
        ns, extra = super().parse_known_args(args, namespace)
        ns.training_argv = list(getattr(ns, "training_argv", None) or []) + list(extra)
        return ns, []


def _layers(value: str) -> int | list[int]:
    try:
        if "," in value:
            return [int(v) for v in value.split(",") if v.strip()]
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of layers or a comma list of indices, got {value!r}") \
            from None


def _common_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("training data")
    g.add_argument("--dataset", required=True, help="training text: Hub dataset id or local dataset folder")
    g.add_argument("--config", default=None, help="dataset config name (default: none)")
    g.add_argument("--split", default="train", help="dataset split")
    g.add_argument("--text-column", default="text", help="text column")
    g.add_argument("--label-column", default="label", help="label column (classifiers)")
    g.add_argument("--image-column", default=None, help="image column (image classifiers; default: found by type)")
    g.add_argument("--audio-column", default=None,
                   help="audio column (speech models; default: found by type); transcripts: --text-column")
    g.add_argument("--target-column", default=None,
                   help="output text column of a text seq2seq model (T5, BART; default: none)")
    g.add_argument("--seq-len", type=int, default=512, help="tokens per training sequence")
    g.add_argument("--max-samples", type=int, default=None, help="use at most this many sequences (default: all)")
    g.add_argument("--no-packing", action="store_true",
                   help="one (truncated, padded) row per text instead of packed blocks")
    g = p.add_argument_group("loading")
    g.add_argument("--revision", default=None, help="Hub revision of the model (default: main)")
    g.add_argument("--dtype", default="float32", choices=["auto", "float32", "float16", "bfloat16"],
                   help="dtype to load the weights in")
    g.add_argument("--task", default=None, help="task / Auto class (default: detected)")
    g.add_argument("--trust-remote-code", action="store_true", help="run code from the model repo (off by default)")
    g.add_argument("--allow-pickle", action="store_true", help="accept pytorch_model.bin checkpoints (pickle)")
    g = p.add_argument_group("checkpoints")
    g.add_argument("--checkpoints", default=None,
                   help="keep Trainer checkpoints in this folder (default: none kept; they live in the "
                        "run's temporary folder and are deleted with it)")
    g.add_argument("--resume-from-checkpoint", nargs="?", const="latest", default=None, metavar="CHECKPOINT",
                   help="resume from this checkpoint-N folder (no value: the latest in --checkpoints; default: start afresh)")
    add_output_args(p)
    p.epilog = ("Any other --flag VALUE is passed to transformers.TrainingArguments "
                "(e.g. --max_steps 200 --per_device_train_batch_size 4 --learning_rate 1e-4).")


def add_distill_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--teacher", required=True, help="teacher: Hub repo id or local model folder")
    s = p.add_mutually_exclusive_group(required=True)
    s.add_argument("--student", help="student: Hub repo id or folder (e.g. a structurally pruned model; no default: give it or --student-layers)")
    s.add_argument("--student-layers", type=_layers, metavar="N|I,J,...",
                   help="cut the student from the teacher: keep N evenly spaced layers (or these indices; no default: "
                        "give it or --student)")
    p.add_argument("--student-stacks", choices=["all", "decoder"], default="all",
                   help="with --student-layers: cut every block stack, or only the decoder (keep the whole encoder)")
    p.add_argument("--freeze", default=None, metavar="MODULE[,MODULE]",
                   help="student modules not to train, e.g. encoder (a frozen encoder equal to the teacher's runs "
                        "once per batch for both; default: train everything)")
    g = p.add_argument_group("loss")
    g.add_argument("--alpha", type=float, default=0.5, help="weight of the KD term (1-alpha: labels)")
    g.add_argument("--temperature", type=float, default=2.0, help="softmax temperature of the KD term")
    g.add_argument("--loss", choices=["kd", "lm"], default="kd", help="lm: labels only (alpha=0), no teacher")
    g.add_argument("--hidden-weight", type=float, default=0.0, help="weight of the hidden-state loss")
    g.add_argument("--hidden-loss", choices=["mse", "cosine"], default="mse", help="distance of the hidden-state loss")
    g.add_argument("--attention-weight", type=float, default=0.0, help="weight of the attention-map loss")
    g.add_argument("--teacher-dtype", choices=["float32", "float16", "bfloat16"], default=None,
                   help="dtype of the teacher (default: the student's)")
    g.add_argument("--teacher-device", default=None, help="device of the teacher (default: training device)")
    _common_args(p)


def add_finetune_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", help="model to recover (Hub repo id or folder, e.g. a pruned model)")
    p.add_argument("--method", choices=["lora", "qlora"], default="lora",
                   help="lora; qlora: LoRA on the 4-bit NF4 model, re-quantized after the merge")
    p.add_argument("--r", type=int, default=16, help="LoRA rank")
    p.add_argument("--lora-alpha", type=float, default=32.0, help="LoRA scaling (alpha / r)")
    p.add_argument("--lora-dropout", type=float, default=0.05, help="dropout on the LoRA path")
    p.add_argument("--target-modules", default="all-linear", help="comma list or all-linear")
    p.add_argument("--loss", choices=["lm", "kd"], default="lm",
                   help="lm: labels only; kd: also match --teacher's outputs")
    p.add_argument("--teacher", default=None, help="teacher for --loss kd: the uncompressed model (default: none)")
    p.add_argument("--alpha", type=float, default=0.5, help="--loss kd: weight of the KD term (1-alpha: labels)")
    p.add_argument("--temperature", type=float, default=2.0, help="--loss kd: softmax temperature of the KD term")
    p.add_argument("--no-merge", action="store_true", help="keep the adapters unmerged")
    _common_args(p)


def parse_training_argv(argv: list[str]) -> dict[str, Any]:
    """Only the TrainingArguments fields given in ``argv``, type-converted."""
    if not argv:
        return {}
    from transformers import HfArgumentParser, TrainingArguments

    parser = HfArgumentParser(TrainingArguments)
    for action in parser._actions:
        action.default = argparse.SUPPRESS
        action.required = False
    try:
        ns, rest = parser.parse_known_args(argv)
    except SystemExit:
        raise UsageError(f"invalid TrainingArguments flags: {' '.join(argv)}") from None
    if rest:
        raise UsageError(f"unrecognized arguments: {' '.join(rest)} (neither an hfcompress flag nor a "
                         "transformers.TrainingArguments field; see --help)")
    out = {}
    for key, value in vars(ns).items():
        out[key] = value.value if isinstance(value, enum.Enum) else value
    return out


def _data(args: argparse.Namespace) -> dict[str, Any]:
    return {"dataset": args.dataset, "config": args.config, "split": args.split,
            "text_column": args.text_column, "label_column": args.label_column, "seq_len": args.seq_len,
            "image_column": args.image_column, "audio_column": args.audio_column, "target_column": args.target_column,
            "max_samples": args.max_samples, "packing": not args.no_packing}


def _training(args: argparse.Namespace) -> tuple[dict[str, Any], str | None, Any]:
    training = parse_training_argv([a for a in getattr(args, "training_argv", []) if a != "--debug"])
    # Checkpoints are kept only in a folder the user names; otherwise they live in the run's
    # temporary work folder and go with it.
    checkpoints = training.pop("output_dir", None) or args.checkpoints
    resume = training.pop("resume_from_checkpoint", None) or args.resume_from_checkpoint
    if resume == "latest" and not checkpoints:
        raise UsageError("--resume-from-checkpoint without a CHECKPOINT needs --checkpoints DIR (the folder of "
                         "the earlier run's checkpoints): checkpoints are kept only where --checkpoints says")
    if args.no_progress:
        training.setdefault("disable_tqdm", True)
    _distributed_training_defaults(training)
    return training, checkpoints, resume


#: The accelerate config that runs this entry point as several CPU processes (see docs/DISTILLATION.md).
ACCELERATE_CPU_CONFIG = "configs/accelerate/cpu.yaml"


def _world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1") or 1)


def check_launch() -> None:
    """Refuse ``accelerate launch --cpu --num_processes N>1``: accelerate then starts ONE process
    (its CPU launcher needs MPI), which would silently train alone on all the data."""
    from accelerate.utils import str_to_bool

    launched_for_many = "MASTER_PORT" in os.environ and str_to_bool(os.environ.get("ACCELERATE_USE_CPU", "false"))
    spread = any(k in os.environ for k in ("WORLD_SIZE", "LOCAL_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE"))
    if launched_for_many and not spread:
        raise UsageError("`accelerate launch --cpu --num_processes N` starts a single process without MPI: use "
                         f"`accelerate launch --config_file {ACCELERATE_CPU_CONFIG} --num_processes N -m "
                         "hfcompress.cli.distill ...` (or torchrun --nproc_per_node N)")


def _distributed_training_defaults(training: dict[str, Any]) -> None:
    """Several processes and no CUDA: train on CPU (gloo), not each process alone."""
    if _world_size() > 1 and "use_cpu" not in training:
        import torch

        if not torch.cuda.is_available():
            training["use_cpu"] = True


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", "0")) or 0) == 0


def _run(args: argparse.Namespace, stage: Any, name: str) -> int:
    check_push_args(args)
    recipe = Recipe(name=name, stages=[stage])
    output = args.output if _is_main_process() else None
    kwargs = load_kwargs(args)
    result = compress(args.model, recipe, output=output, overwrite=args.overwrite,
                      progress=not args.no_progress, load_kwargs=kwargs, repo_id=args.push_to_hub)
    if output is None:
        return 0
    print_summary(result)
    if getattr(args, "push_to_hub", None):
        print(f"pushed to {push(result.output, args.push_to_hub, private=args.private)}")
    return 0


def run_distill(args: argparse.Namespace) -> int:
    training, checkpoints, resume = _training(args)
    student = {"student": args.student} if args.student else {"student_layers": args.student_layers,
                                                              "student_stacks": args.student_stacks}
    alpha = 0.0 if args.loss == "lm" else args.alpha
    freeze = [m.strip() for m in args.freeze.split(",") if m.strip()] if args.freeze else []
    stage = build_config(KDConfig, dict(
        **student, freeze=freeze, alpha=alpha, temperature=args.temperature, hidden_weight=args.hidden_weight,
        hidden_loss=args.hidden_loss, attention_weight=args.attention_weight, teacher_dtype=args.teacher_dtype,
        teacher_device=args.teacher_device, data=_data(args), training=training, checkpoint_dir=checkpoints,
        resume_from_checkpoint=resume))
    args.model = args.teacher
    args.device_map = None
    if checkpoints:
        print(f"checkpoints: {checkpoints}", file=sys.stderr)
    return _run(args, stage, "distill")


def run_finetune(args: argparse.Namespace) -> int:
    training, checkpoints, resume = _training(args)
    cls = QLoraFinetuneConfig if args.method == "qlora" else LoraFinetuneConfig
    targets = args.target_modules if args.target_modules == "all-linear" else args.target_modules.split(",")
    stage = build_config(cls, dict(
        r=args.r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout, target_modules=targets,
        loss=args.loss, teacher=args.teacher, alpha=args.alpha, temperature=args.temperature,
        merge=not args.no_merge, data=_data(args), training=training, checkpoint_dir=checkpoints,
        resume_from_checkpoint=resume))
    if args.loss == "kd" and not args.teacher:
        raise UsageError("--loss kd needs --teacher: the uncompressed model this one was made from")
    args.device_map = None
    if checkpoints:
        print(f"checkpoints: {checkpoints}", file=sys.stderr)
    return _run(args, stage, f"finetune-{args.method}")


def make_tolerant(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Let ``p`` keep unknown flags for TrainingArguments (subparsers are built by the caller)."""
    p.__class__ = type("TolerantParser", (_TolerantParser, type(p)), {})
    p.allow_abbrev = False
    return p


def _distill(args: argparse.Namespace) -> int:
    return run_distill(args)


def _finetune(args: argparse.Namespace) -> int:
    return run_finetune(args)


def register(sub) -> None:
    p = make_tolerant(sub.add_parser(
        "distill", help="distill a teacher into a smaller student (Trainer; any TrainingArguments flag)",
        description="Knowledge distillation: train a student (cut from the teacher with --student-layers, or "
                    "loaded with --student) against the teacher's outputs. Unknown --flags are "
                    "transformers.TrainingArguments fields.", formatter_class=HelpFormatter))
    add_distill_args(p)
    p.set_defaults(func=_distill)
    p = make_tolerant(sub.add_parser(
        "finetune", help="recovery fine-tuning with LoRA / QLoRA, merged back (sparsity kept)",
        description="LoRA (or QLoRA on 4-bit NF4) recovery fine-tuning of a compressed model; adapters are "
                    "merged back and zero masks re-applied. Unknown --flags are TrainingArguments fields.",
        formatter_class=HelpFormatter))
    add_finetune_args(p)
    p.set_defaults(func=_finetune)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m hfcompress.cli.distill`` (and ``accelerate launch -m ...``)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        check_launch()
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    debug = ["--debug"] if "--debug" in argv else []
    return cli_main([*debug, "distill", *[a for a in argv if a != "--debug"]])


if __name__ == "__main__":
    sys.exit(main())

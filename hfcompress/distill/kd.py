"""The ``distill`` stage (method ``kd``): train a student against the bundle's model.

In a recipe the model being compressed is the **teacher** (unless ``teacher:`` names
another); the stage builds or loads the student, trains it with
:class:`~hfcompress.distill.trainer.DistillationTrainer` and replaces ``bundle.model``
with it::

    stages:
      - distill:
          method: kd
          student_layers: 15            # or student: ORG/NAME | folder | "@current"; or student_config: {...}
          freeze: []                    # student modules not to train, e.g. [encoder]
          alpha: 0.5
          temperature: 2.0
          data: {dataset: fixtures/enwiki-sample, seq_len: 256}
          training: {max_steps: 200, per_device_train_batch_size: 4, learning_rate: 1.0e-4}
          checkpoint_dir: out/smol-distill-checkpoints   # keep checkpoints to resume

``teacher: "@input"`` reloads the recipe's input model as teacher and ``student:
"@current"`` takes the bundle's current model as student — prune → distill (Minitron)::

      - prune: {method: ..., ...}
      - distill: {method: kd, teacher: "@input", student: "@current"}

``alpha: 0`` trains on the labels only (the "no distillation" baseline).

Image classifiers (ViT) train on an image dataset (``data: {dataset, image_column, label_column}``),
speech encoder–decoders (Whisper) on an audio dataset with transcripts (``data: {dataset,
audio_column, text_column}``; ``student_stacks: decoder`` keeps the whole encoder and cuts only
the decoder); see :mod:`hfcompress.distill.data`. The KD term is over the class logits (images)
or the vocabulary at every transcript position (speech); the hidden-state term compares the
decoder's hidden states of encoder–decoders.
"""

from __future__ import annotations

import difflib
import os
import tempfile
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, field_validator, model_validator

from ..config import StageConfig
from ..errors import UsageError
from ..loading import ModelBundle, load
from ..registry import register
from ..stage import StageContext
from .base import DistillConfig
from .data import TrainDataConfig, build_dataset
from .freeze import resolve_modules
from .student import student_from_config, student_from_layers

INPUT = "@input"
CURRENT = "@current"

#: TrainingArguments defaults used unless ``training`` sets them.
TRAINING_DEFAULTS: dict[str, Any] = {
    "per_device_train_batch_size": 4,
    "learning_rate": 1e-4,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.05,
    "weight_decay": 0.0,
    "logging_steps": 10,
    "save_steps": 100,
    "save_total_limit": 2,
    "report_to": "none",
    "seed": 0,
}
DEFAULT_MAX_STEPS = 200


def training_fields() -> set[str]:
    import dataclasses

    from transformers import TrainingArguments

    return {f.name for f in dataclasses.fields(TrainingArguments) if f.init}


def check_training_keys(training: dict[str, Any]) -> dict[str, Any]:
    fields = training_fields()
    for key in training:
        if key not in fields:
            close = difflib.get_close_matches(key, sorted(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"training: {key!r} is not a TrainingArguments field{hint}")
        if key == "output_dir":
            raise ValueError("training: set checkpoint_dir instead of output_dir")
    return training


class TrainingOptions(StageConfig):
    """Shared fields of the training stages (``distill`` and ``finetune``; not registered itself)."""

    method: str = "base"
    data: TrainDataConfig = Field(default_factory=TrainDataConfig)
    training: dict[str, Any] = Field(default_factory=dict)
    checkpoint_dir: str | None = None
    resume_from_checkpoint: str | bool | None = None

    @field_validator("training")
    @classmethod
    def _check_training(cls, value: dict[str, Any]) -> dict[str, Any]:
        return check_training_keys(value)


class KDConfig(TrainingOptions, DistillConfig):
    """Knowledge distillation of the bundle's model (teacher) into a smaller student."""

    family: ClassVar[str] = "distill"
    method: Literal["kd"] = "kd"
    teacher: str | None = None
    student: str | None = None
    student_layers: int | list[int] | None = None
    student_stacks: Literal["all", "decoder"] = Field(
        "all", description="with student_layers: cut every block stack, or only the decoder (e.g. Whisper with "
                           "its whole encoder and half its decoder)")
    student_config: dict[str, Any] | None = None
    freeze: list[str] = Field(
        default_factory=list, description="student modules not to train (e.g. ['encoder']); a frozen encoder "
                                          "equal to the teacher's runs once per batch for both models")
    alpha: float = Field(0.5, ge=0.0, le=1.0)
    temperature: float = Field(2.0, gt=0.0, le=100.0)
    hidden_weight: float = Field(0.0, ge=0.0)
    hidden_loss: Literal["mse", "cosine"] = "mse"
    layer_map: list[tuple[int, int]] | None = None
    attention_weight: float = Field(0.0, ge=0.0)
    teacher_dtype: Literal["float32", "float16", "bfloat16"] | None = None
    teacher_device: str | None = None

    @model_validator(mode="after")
    def _one_student(self) -> KDConfig:
        given = [n for n in ("student", "student_layers", "student_config") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of student (a model id / folder / '@current'), student_layers "
                             f"(keep N of the teacher's layers) or student_config (random init); got {given or 'none'}")
        if self.student == CURRENT and self.teacher is None:
            raise ValueError("student '@current' needs a teacher: set teacher: '@input' (the recipe's input "
                             "model) or a model id")
        return self


# -- shared helpers --------------------------------------------------------------------------------
def make_training_args(opts: TrainingOptions, output_dir: str | os.PathLike, *, progress: bool = True,
                       save: bool = True) -> Any:
    """``TrainingArguments`` from our defaults + ``opts.training``."""
    from transformers import TrainingArguments

    kwargs = dict(TRAINING_DEFAULTS)
    if not save:
        kwargs["save_strategy"] = "no"
    kwargs["disable_tqdm"] = not progress
    kwargs.update(opts.training)
    if "max_steps" not in opts.training and "num_train_epochs" not in opts.training:
        kwargs["max_steps"] = DEFAULT_MAX_STEPS
    try:
        return TrainingArguments(output_dir=str(output_dir), **kwargs)
    except (ValueError, TypeError) as exc:
        raise UsageError(f"invalid training arguments: {' '.join(str(exc).split())[:300]}") from None


def checkpoint_folder(opts: TrainingOptions, ctx: StageContext) -> tuple[Path, bool]:
    """(folder for Trainer checkpoints, whether they persist after the run)."""
    if opts.checkpoint_dir:
        return Path(opts.checkpoint_dir).expanduser(), True
    base = ctx.work_dir or Path(tempfile.mkdtemp(prefix="hfcompress-train-"))
    return Path(base) / "checkpoints", False


def resolve_resume(opts: TrainingOptions, folder: Path) -> str | bool | None:
    """``resume_from_checkpoint`` (field or training arg); ``True``/"latest" -> last checkpoint if any."""
    value = opts.resume_from_checkpoint
    if value is None:
        value = opts.training.get("resume_from_checkpoint")
    if value in (True, "true", "latest", "auto"):
        from transformers.trainer_utils import get_last_checkpoint

        last = get_last_checkpoint(str(folder)) if folder.is_dir() else None
        if last is None:
            if value == "auto":
                return None
            raise UsageError(f"no checkpoint to resume from in {folder}: run without --resume-from-checkpoint "
                             "first, or pass the checkpoint folder")
        return last
    if value in (False, "false", "", None):
        return None
    if not Path(str(value)).is_dir():
        raise UsageError(f"checkpoint {value} does not exist: pass a checkpoint-N folder or 'latest'")
    return str(value)


def load_model_like(name: str, bundle: Any, **kwargs: Any) -> Any:
    return load(name, task=bundle.task, **kwargs)


def resolve_teacher(spec: str | None, bundle: Any) -> tuple[Any, Any]:
    """(teacher model, teacher tokenizer) for a stage's ``teacher`` field."""
    if spec is None:
        return bundle.model, bundle.tokenizer
    if spec == INPUT:
        if bundle.path is None:
            raise UsageError("teacher '@input' needs the input model's folder, and this model was passed in "
                             "memory: give teacher as a model id or folder")
        tb = load_model_like(str(bundle.path), bundle, dtype="float32")
        return tb.model, tb.tokenizer
    tb = load_model_like(spec, bundle, dtype="float32")
    return tb.model, tb.tokenizer


def last_log(trainer: Any) -> dict[str, float]:
    """The last training log entry (loss terms), rounded."""
    for entry in reversed(trainer.state.log_history):
        if "loss" in entry:
            return {k: round(float(v), 5) for k, v in entry.items()
                    if k in ("loss", "kd_loss", "hard_loss", "hidden_loss", "attention_loss", "step")}
    return {}


def first_log(trainer: Any) -> dict[str, float]:
    for entry in trainer.state.log_history:
        if "loss" in entry:
            return {k: round(float(v), 5) for k, v in entry.items()
                    if k in ("loss", "kd_loss", "hard_loss", "hidden_loss", "attention_loss", "step")}
    return {}


def _param_count(model: Any) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


# -- the stage ---------------------------------------------------------------------------------------
def build_student(config: KDConfig, bundle: Any, teacher: Any, teacher_tokenizer: Any) -> tuple[Any, Any, dict]:
    """(student model, its tokenizer, description) for ``config``."""
    if config.student_layers is not None:
        student, kept = student_from_layers(teacher, config.student_layers, stacks=config.student_stacks)
        return student, teacher_tokenizer, {"from": "teacher-layers", "kept_layers": kept}
    if config.student_config is not None:
        student = student_from_config(teacher, **config.student_config)
        return student, teacher_tokenizer, {"from": "config", "overrides": config.student_config}
    if config.student == CURRENT:
        return bundle.model, bundle.tokenizer, {"from": "current-model"}
    sb = load_model_like(config.student, bundle, dtype="float32")
    return sb.model, sb.tokenizer, {"from": config.student}


@register(KDConfig)
def apply_kd(bundle: ModelBundle, config: KDConfig, ctx: StageContext, *, student_model: Any = None) -> dict[str, Any]:
    from .trainer import (  # deferred: transformers.Trainer
        DistillationTrainer,
        check_tokenizers,
        data_parallel_figures,
        detach_projector,
        stack_depth,
    )

    teacher, teacher_tok = resolve_teacher(config.teacher, bundle)
    if student_model is not None:
        student, student_tok, desc = student_model, teacher_tok, {"from": "given"}
    else:
        student, student_tok, desc = build_student(config, bundle, teacher, teacher_tok)
    check_tokenizers(teacher_tok, student_tok)
    resolve_modules(student, config.freeze)  # a bad module name stops here, before the data is read
    tokenizer = student_tok or teacher_tok
    dataset, collator = build_dataset(tokenizer, config.data, task=bundle.task, model=teacher)
    folder, persistent = checkpoint_folder(config, ctx)
    resume = resolve_resume(config, folder)
    args = make_training_args(config, folder, progress=ctx.progress, save=persistent)
    student.train()
    student.requires_grad_(True)
    use_teacher = config.alpha > 0 or config.hidden_weight > 0 or config.attention_weight > 0
    layer_map = [tuple(p) for p in config.layer_map] if config.layer_map else None
    if layer_map is None and desc.get("kept_layers") and (config.hidden_weight > 0 or config.attention_weight > 0):
        # a student cut from the teacher: output of kept layer k <-> the same teacher layer's output
        # (encoder–decoders: the decoder's, whose hidden states the trainer compares). The last
        # hidden state is what the head reads (in Llama and Whisper it comes after the final norm,
        # on another scale than the layer outputs), so the student's last is compared with the
        # teacher's last, whatever layer it was cut from.
        kept = desc["kept_layers"]
        kept = list(kept.values())[-1] if isinstance(kept, dict) else kept
        layer_map = [(i + 1, t + 1) for i, t in enumerate(kept)]
        layer_map[-1] = (len(kept), stack_depth(teacher.config))
    trainer = DistillationTrainer(
        model=student, teacher=teacher if use_teacher else None, args=args, train_dataset=dataset,
        data_collator=collator, processing_class=tokenizer, alpha=config.alpha,
        temperature=config.temperature, hidden_weight=config.hidden_weight, hidden_loss=config.hidden_loss,
        layer_map=layer_map, attention_weight=config.attention_weight,
        teacher_device=config.teacher_device, teacher_dtype=config.teacher_dtype, freeze=config.freeze,
    )
    result = trainer.train(resume_from_checkpoint=resume)
    detach_projector(trainer.model)
    student = trainer.model
    student.eval()
    if config.attention_weight > 0 and hasattr(student, "set_attn_implementation"):
        student.set_attn_implementation("sdpa")
    teacher_params = _param_count(teacher)
    bundle.model = student
    bundle.tokenizer = tokenizer
    bundle.meta["distill"] = {"teacher_parameters": teacher_params}
    summary = {
        "student": desc,
        "teacher": config.teacher or "bundle-model",
        "loss": "kd" if config.alpha > 0 else "labels-only",
        "teacher_parameters": teacher_params,
        "student_parameters": _param_count(student),
        "student_layers": getattr(student.config, "num_hidden_layers", None),
        "trainable_parameters": sum(p.numel() for p in student.parameters() if p.requires_grad),
        "steps": trainer.state.global_step,
        "train_samples": len(dataset),
        "train_runtime_s": round(float(result.metrics.get("train_runtime", 0.0)), 1),
        "first_log": first_log(trainer),
        "last_log": last_log(trainer),
        "checkpoints": str(folder) if persistent else None,
        "resumed_from": str(resume) if resume else None,
    }
    if config.freeze:
        summary["frozen"] = list(config.freeze)
        summary["shared_encoder"] = trainer.shared_encoder is not None
    if layer_map:
        summary["layer_map"] = [list(p) for p in layer_map]
    parallel = data_parallel_figures(trainer)
    if parallel is not None:
        summary["data_parallel"] = parallel
    return summary

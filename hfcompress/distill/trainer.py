"""``DistillationTrainer``: a ``transformers.Trainer`` that trains a student against a teacher.

Loss (every term is logged to ``trainer.state.log_history`` next to ``loss``)::

    loss = alpha · T² · KL(softmax(teacher/T) ‖ softmax(student/T))     # kd_loss
         + (1 - alpha) · CE(student, labels)                            # hard_loss
         + hidden_weight · Σ_pairs MSE|cos(proj(h_s[i]), h_t[j]) / n   # hidden_loss
         + attention_weight · Σ_pairs KL(attn_t[j] ‖ attn_s[i]) / n     # attention_loss

Causal LMs are distilled token by token over the vocabulary (positions whose next-token
label is ``-100`` — padding, prompt masking — are left out); sequence classifiers over
the class logits. The teacher is frozen, in eval mode, run under ``torch.no_grad``, and
may live on another device / dtype (``teacher_device``, ``teacher_dtype``).

When the hidden widths differ, a learned ``nn.Linear`` per mapped layer projects the
student's hidden state to the teacher's width. The projections live in a small module
attached to the student as ``student.distill_projector``, so the optimizer, DDP,
checkpoints and resumption all see them; :func:`detach_projector` removes it before
export. ``teacher=None`` (or ``alpha=0`` with no hidden/attention terms) trains on the
labels only — the "no distillation" baseline — through the same code path::

    trainer = DistillationTrainer(model=student, teacher=teacher, args=TrainingArguments(...),
                                  train_dataset=ds, data_collator=collator,
                                  processing_class=tokenizer, alpha=0.5, temperature=2.0)
    trainer.train()
"""

from __future__ import annotations

import hashlib
from typing import Any

import torch
from torch import nn
from transformers import Trainer

from ..errors import UsageError
from .freeze import encoder_inputs, freeze_modules, shared_encoder
from .losses import attention_loss, causal_shift, hard_loss, hidden_loss, kd_loss

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def check_tokenizers(teacher_tokenizer: Any, student_tokenizer: Any) -> None:
    """Raise a one-line :class:`UsageError` unless both tokenizers have the same vocabulary."""
    if teacher_tokenizer is None or student_tokenizer is None or teacher_tokenizer is student_tokenizer:
        return
    # processors (speech): compare their tokenizers; image processors have no vocabulary
    teacher_tokenizer, student_tokenizer = (t if hasattr(t, "get_vocab") else getattr(t, "tokenizer", None)
                                            for t in (teacher_tokenizer, student_tokenizer))
    if teacher_tokenizer is None or student_tokenizer is None:
        return
    tv, sv = teacher_tokenizer.get_vocab(), student_tokenizer.get_vocab()
    if tv == sv:
        return
    differ = sum(1 for tok, i in tv.items() if sv.get(tok) != i) + sum(1 for tok in sv if tok not in tv)
    raise UsageError(
        f"teacher and student tokenizers differ (vocab sizes {len(tv)} vs {len(sv)}, {differ} token ids "
        "differ): distillation compares the two models' outputs token by token, so they must share a "
        "tokenizer; build the student from the teacher (--student-layers N) or pick a student of the same "
        "model family"
    )


def _unwrap(model: nn.Module) -> nn.Module:
    model = getattr(model, "module", model)  # DDP
    if hasattr(model, "get_base_model"):  # peft
        return model.get_base_model()
    return model


def _hidden_size(config: Any) -> int:
    for name in ("hidden_size", "d_model", "dim", "n_embd"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    raise UsageError(f"cannot tell the hidden width of {type(config).__name__}: give layer_map and "
                     "check that the model returns hidden states")


def stack_depth(config: Any) -> int:
    """Depth of the stack whose hidden states are compared: the decoder's for encoder–decoders."""
    names = ("num_hidden_layers", "n_layers", "num_layers")
    if getattr(config, "is_encoder_decoder", False):
        names = ("decoder_layers", "num_decoder_layers") + names
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    raise UsageError(f"cannot tell the depth of {type(config).__name__}: give layer_map explicitly")


def default_layer_map(student_layers: int, teacher_layers: int) -> list[tuple[int, int]]:
    """Student hidden-state index ``i`` (1..Ls, output of layer i) -> teacher ``round(i·Lt/Ls)``."""
    return [(i, round(i * teacher_layers / student_layers)) for i in range(1, student_layers + 1)]


def is_causal_lm(model: nn.Module) -> bool:
    name = type(_unwrap(model)).__name__
    return name.endswith("ForCausalLM") or name.endswith("LMHeadModel")


class DistillProjector(nn.Module):
    """Learned projections student width -> teacher width, one per mapped layer pair."""

    def __init__(self, pairs: list[tuple[int, int]], student_dim: int, teacher_dim: int,
                 always: bool = False):
        super().__init__()
        self.pairs = [tuple(p) for p in pairs]
        learn = always or student_dim != teacher_dim
        self.proj = nn.ModuleList(
            [nn.Linear(student_dim, teacher_dim, bias=False) if learn else nn.Identity() for _ in self.pairs]
        )

    def forward(self, index: int, hidden: torch.Tensor) -> torch.Tensor:
        layer = self.proj[index]
        if isinstance(layer, nn.Linear):
            return layer(hidden.to(layer.weight.dtype))
        return hidden


def detach_projector(model: nn.Module) -> DistillProjector | None:
    """Remove (and return) the hidden-state projector attached to ``model`` for training."""
    for m in (model, _unwrap(model)):
        if "distill_projector" in m._modules:
            return m._modules.pop("distill_projector")
    return None


class DistillationTrainer(Trainer):
    """Trainer whose loss distills ``teacher`` into ``model`` (see the module docstring).

    Args (besides ``Trainer``'s):
        teacher: the teacher model (``None``: labels-only training).
        alpha: weight of the KD term; ``1 - alpha`` weighs the hard-label loss.
        temperature: softmax temperature ``T`` (the KD term is scaled by ``T²``).
        hidden_weight: weight of the hidden-state loss (0 = off).
        hidden_loss: ``"mse"`` or ``"cosine"``.
        layer_map: ``[(student_idx, teacher_idx), ...]`` indices into ``hidden_states``
            (0 = embeddings, i = output of layer i); default: uniform spacing.
        attention_weight: weight of the attention-map loss (0 = off; switches both models
            to eager attention, which returns the maps).
        teacher_device / teacher_dtype: where and in what dtype the teacher runs
            (default: the training device, its own dtype).
        teacher_tokenizer: compared with ``processing_class``; a mismatch is an error.
        freeze: student submodules not to train (see :mod:`hfcompress.distill.freeze`); a frozen
            encoder equal to the teacher's runs once per batch for both models.
    """

    # compute_loss returns a per-batch mean: the Trainer divides it by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(self, model: nn.Module | None = None, args: Any = None, *, teacher: nn.Module | None = None,
                 alpha: float = 0.5, temperature: float = 2.0, hidden_weight: float = 0.0,
                 hidden_loss: str = "mse", layer_map: list[tuple[int, int]] | None = None,
                 attention_weight: float = 0.0, teacher_device: str | None = None,
                 teacher_dtype: str | None = None, teacher_tokenizer: Any = None,
                 project_always: bool = False, freeze: list[str] | None = None, **kwargs: Any):
        if not 0.0 <= alpha <= 1.0:
            raise UsageError(f"alpha must be in [0, 1], got {alpha}: e.g. alpha=0.5")
        if temperature <= 0:
            raise UsageError(f"temperature must be > 0, got {temperature}: e.g. temperature=2.0")
        if hidden_loss not in ("mse", "cosine"):
            raise UsageError(f"hidden_loss must be 'mse' or 'cosine', got {hidden_loss!r}")
        if teacher is None and (alpha > 0 or hidden_weight > 0 or attention_weight > 0):
            raise UsageError("alpha, hidden_weight and attention_weight need a teacher: pass teacher=... "
                             "or set alpha=0 for labels-only training")
        check_tokenizers(teacher_tokenizer, kwargs.get("processing_class"))
        self.frozen = freeze_modules(_unwrap(model), list(freeze)) if freeze else []
        self.teacher = teacher
        self.alpha = float(alpha)
        self.temperature = float(temperature)
        self.hidden_weight = float(hidden_weight)
        self.hidden_kind = hidden_loss
        self.attention_weight = float(attention_weight)
        self.causal = is_causal_lm(model)
        self.layer_map: list[tuple[int, int]] = []
        if teacher is not None and (hidden_weight > 0 or attention_weight > 0):
            s_cfg, t_cfg = _unwrap(model).config, _unwrap(teacher).config
            self.layer_map = [tuple(p) for p in (layer_map or default_layer_map(stack_depth(s_cfg),
                                                                               stack_depth(t_cfg)))]
            if hidden_weight > 0:
                owner = _unwrap(model)
                existing = owner._modules.get("distill_projector")
                if existing is None or list(existing.pairs) != self.layer_map:
                    owner.distill_projector = DistillProjector(self.layer_map, _hidden_size(s_cfg),
                                                               _hidden_size(t_cfg), always=project_always)
                    dtype = next(p.dtype for p in owner.parameters() if p.is_floating_point())
                    owner.distill_projector.to(device=next(owner.parameters()).device,
                                               dtype=dtype if dtype.is_floating_point else torch.float32)
                owner.distill_projector.requires_grad_(True)
            if attention_weight > 0:
                for m in (_unwrap(model), _unwrap(teacher)):
                    if hasattr(m, "set_attn_implementation"):
                        m.set_attn_implementation("eager")
                    else:  # pragma: no cover - older models
                        m.config._attn_implementation = "eager"
        super().__init__(model=model, args=args, **kwargs)
        self.model_accepts_loss_kwargs = False
        self._terms: dict[str, float] = {}
        self._terms_n = 0
        #: A short digest of every training row this process trained on (see :func:`data_parallel_figures`).
        self.rows_seen: list[str] = []
        if teacher is not None:
            device = torch.device(teacher_device) if teacher_device else self.args.device
            if teacher_dtype is not None and teacher_dtype not in _DTYPES:
                raise UsageError(f"teacher_dtype {teacher_dtype!r}: use one of {', '.join(_DTYPES)}")
            if not getattr(teacher, "is_loaded_in_4bit", False) and not getattr(teacher, "is_loaded_in_8bit", False):
                teacher.to(device=device, dtype=_DTYPES.get(teacher_dtype or "", None))
            teacher.eval()
            teacher.requires_grad_(False)
            self.teacher_device = next(teacher.parameters()).device
        #: the teacher's encoder when the student's frozen encoder equals it: run once per batch for both
        self.shared_encoder = shared_encoder(_unwrap(model), teacher) if self.frozen and self.uses_teacher else None

    # -- loss ---------------------------------------------------------------------------------
    @property
    def uses_teacher(self) -> bool:
        return self.teacher is not None and (self.alpha > 0 or self.hidden_weight > 0 or self.attention_weight > 0)

    def compute_loss(self, model: nn.Module, inputs: dict[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None):
        labels = inputs.get("labels")
        attention_mask = inputs.get("attention_mask")
        if model.training and isinstance(inputs.get("input_ids"), torch.Tensor):
            self.rows_seen += [hashlib.blake2b(row.cpu().numpy().tobytes(), digest_size=8).hexdigest()
                               for row in inputs["input_ids"]]
        model_inputs = {k: v for k, v in inputs.items() if k != "labels"}
        if model.training:
            for module in self.frozen:  # Trainer.train() sets train mode on every module each step
                module.eval()
        if self.shared_encoder is not None and "encoder_outputs" not in model_inputs:
            with torch.no_grad():
                model_inputs["encoder_outputs"] = self.shared_encoder(
                    **encoder_inputs(self.shared_encoder, model_inputs), return_dict=True)
        extra: dict[str, bool] = {}
        if self.hidden_weight > 0:
            extra["output_hidden_states"] = True
        if self.attention_weight > 0:
            extra["output_attentions"] = True
        outputs = model(**model_inputs, **extra)
        s_logits = outputs.logits
        terms: dict[str, torch.Tensor] = {}
        total = s_logits.new_zeros((), dtype=torch.float32)

        if self.alpha < 1.0:
            if labels is None:
                raise UsageError("the hard-label loss needs `labels` in the batch: add them, or set alpha=1")
            terms["hard_loss"] = hard_loss(s_logits, labels, causal=self.causal)
            total = total + (1.0 - self.alpha) * terms["hard_loss"]

        if self.uses_teacher:
            with torch.no_grad():
                t_inputs = {k: (v.to(self.teacher_device) if torch.is_tensor(v) else v)
                            for k, v in model_inputs.items()}
                t_out = self.teacher(**t_inputs, **extra)
            if self.alpha > 0:
                t_logits = t_out.logits
                vocab = min(s_logits.size(-1), t_logits.size(-1))
                s_l, t_l = s_logits[..., :vocab], t_logits[..., :vocab]
                if self.causal:
                    s_l, mask = causal_shift(s_l, labels, attention_mask)
                    t_l, _ = causal_shift(t_l, labels, attention_mask)
                elif s_l.dim() == 3:  # token classification
                    mask = (labels != -100) if labels is not None else attention_mask
                else:
                    mask = None
                terms["kd_loss"] = kd_loss(s_l, t_l, self.temperature, mask)
                total = total + self.alpha * terms["kd_loss"]
            token_mask = attention_mask.bool() if attention_mask is not None else None
            if self.hidden_weight > 0:
                projector = _unwrap(model).distill_projector
                s_hidden, t_hidden = _hidden_states(outputs), _hidden_states(t_out)
                if getattr(outputs, "decoder_hidden_states", None) is not None:  # encoder–decoder: decoder tokens
                    dmask = inputs.get("decoder_attention_mask")
                    token_mask = dmask.bool() if dmask is not None else (labels != -100 if labels is not None else None)
                parts = []
                for k, (si, ti) in enumerate(self.layer_map):
                    h_s = projector(k, s_hidden[si])
                    parts.append(hidden_loss(h_s, t_hidden[ti], self.hidden_kind, token_mask))
                terms["hidden_loss"] = torch.stack(parts).mean()
                total = total + self.hidden_weight * terms["hidden_loss"]
            if self.attention_weight > 0:
                parts = []
                for si, ti in self.layer_map:
                    if si < 1 or ti < 1:
                        continue  # index 0 = embeddings: no attention map
                    parts.append(attention_loss(outputs.attentions[si - 1], t_out.attentions[ti - 1], token_mask))
                terms["attention_loss"] = torch.stack(parts).mean()
                total = total + self.attention_weight * terms["attention_loss"]

        if model.training:
            for name, value in terms.items():
                self._terms[name] = self._terms.get(name, 0.0) + float(value.detach())
            self._terms_n += 1
        return (total, outputs) if return_outputs else total

    # -- logging -------------------------------------------------------------------------------
    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the mean of each loss term since the last log to the training log entries."""
        if "loss" in logs and self._terms_n:
            for name, value in self._terms.items():
                logs[name] = round(value / self._terms_n, 6)
            self._terms, self._terms_n = {}, 0
        super().log(logs, start_time)


def _hidden_states(outputs: Any) -> Any:
    """Hidden states to compare: the model's, or the decoder's for an encoder–decoder output."""
    hs = getattr(outputs, "hidden_states", None)
    return hs if hs is not None else outputs.decoder_hidden_states


def data_parallel_figures(trainer: DistillationTrainer) -> dict[str, Any] | None:
    """Under several processes: how many training rows each one trained on and how many were distinct.

    Every process must call it (it gathers across the process group); None for one process.
    ``{"world_size": 2, "rows_per_process": [74, 74], "distinct_rows": 148}`` shows the data was
    split, not repeated.
    """
    world = int(getattr(trainer.args, "world_size", 1) or 1)
    if world <= 1 or not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return None
    gathered: list[Any] = [None] * world
    torch.distributed.all_gather_object(gathered, (len(trainer.rows_seen), sorted(set(trainer.rows_seen))))
    return {"world_size": world, "rows_per_process": [g[0] for g in gathered],
            "distinct_rows": len(set().union(*(set(g[1]) for g in gathered)))}

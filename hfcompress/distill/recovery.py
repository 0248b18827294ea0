"""Recovery fine-tuning with peft (family ``finetune``): methods ``lora`` and ``qlora``.

After pruning or quantization, a few hundred steps of LoRA on generic text recover
part of the lost quality. The loss is the plain LM loss (``loss: lm``) or distillation
from the uncompressed model (``loss: kd``, teacher = the recipe's input model)::

    stages:
      - prune: {method: wanda, sparsity: 0.5}
      - finetune:
          method: lora
          r: 16
          loss: kd
          data: {dataset: fixtures/enwiki-sample, seq_len: 256}
          training: {max_steps: 100, learning_rate: 2.0e-4}

The adapters are merged back for export. **Sparsity survives**: the zero mask of every
adapted weight is recorded before training and re-applied after the merge
(``W_merged * mask``), so zeros stay exactly zero; the summary records the sparsity
before and after. ``qlora`` trains LoRA on a 4-bit (bitsandbytes NF4) base — the
bundle's model if it is already 4-bit, else a 4-bit copy made here — and merges by
dequantizing each adapted weight, adding the LoRA delta (masked) and re-quantizing it
to NF4; the summary says so.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field

from ..registry import register
from .base import FinetuneConfig
from .kd import (
    INPUT,
    TrainingOptions,
    checkpoint_folder,
    first_log,
    last_log,
    make_training_args,
    resolve_resume,
    resolve_teacher,
)

_TASK_TYPES = {"causal-lm": "CAUSAL_LM", "sequence-classification": "SEQ_CLS",
               "token-classification": "TOKEN_CLS", "seq2seq-lm": "SEQ_2_SEQ_LM",
               "feature-extraction": "FEATURE_EXTRACTION"}


class LoraFinetuneConfig(TrainingOptions, FinetuneConfig):
    """Recovery fine-tuning with LoRA adapters, merged back (sparsity masks kept)."""

    family: ClassVar[str] = "finetune"
    method: Literal["lora"] = "lora"
    r: int = Field(16, ge=1, le=1024)
    lora_alpha: float = Field(32.0, gt=0)
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: list[str] | str = "all-linear"
    loss: Literal["lm", "kd"] = "lm"
    teacher: str | None = None
    alpha: float = Field(0.5, ge=0.0, le=1.0)
    temperature: float = Field(2.0, gt=0.0, le=100.0)
    keep_sparsity: bool = True
    merge: bool = True


class QLoraFinetuneConfig(LoraFinetuneConfig):
    """QLoRA: LoRA on a 4-bit NF4 base; merged by dequantize + add + re-quantize."""

    method: Literal["qlora"] = "qlora"  # type: ignore[assignment]
    quant_type: Literal["nf4", "fp4"] = "nf4"
    double_quant: bool = True
    compute_dtype: Literal["float32", "bfloat16", "float16"] = "float32"


# -- masks and sparsity -------------------------------------------------------------------------------
def _is_4bit(module: Any) -> bool:
    return type(module).__name__ == "Linear4bit" and hasattr(getattr(module, "weight", None), "quant_state")


def dense_weight(module: Any) -> torch.Tensor:
    """The (dequantized, for 4-bit layers) weight of a linear layer."""
    if _is_4bit(module):
        from peft.utils.integrations import dequantize_bnb_weight

        return dequantize_bnb_weight(module.weight, state=module.weight.quant_state)
    return module.weight.data


def linear_layers(model: Any) -> dict[str, Any]:
    """Linear layers inside the transformer blocks (the ones pruning methods sparsify)."""
    from .student import find_layer_list

    try:
        prefix, _ = find_layer_list(model)
    except Exception:  # noqa: BLE001 - any model: fall back to every linear layer
        prefix = ""
    out = {}
    for name, m in model.named_modules():
        if (isinstance(m, torch.nn.Linear) or _is_4bit(m)) and name.startswith(prefix):
            if "lora_" in name or name.endswith("base_layer"):
                continue
            out[name] = m
    return out


def sparsity(model: Any) -> dict[str, Any]:
    """Zero fraction of the block linear weights (``zeros / total``)."""
    zeros = total = 0
    for m in linear_layers(model).values():
        w = dense_weight(m)
        zeros += int((w == 0).sum())
        total += w.numel()
    return {"zeros": zeros, "total": total, "sparsity": round(zeros / total, 6) if total else 0.0}


def zero_masks(model: Any) -> dict[int, torch.Tensor]:
    """``id(linear) -> bool mask of its non-zeros`` for layers that contain zeros."""
    masks = {}
    for m in linear_layers(model).values():
        w = dense_weight(m)
        if bool((w == 0).any()):
            masks[id(m)] = (w != 0).cpu()
    return masks


@torch.no_grad()
def merge_lora(peft_model: Any, masks: dict[int, torch.Tensor] | None = None) -> tuple[Any, dict[str, Any]]:
    """Merge every LoRA adapter into its base weight, re-apply the zero ``masks``, unload.

    4-bit bases are dequantized, merged, masked and re-quantized with their own settings.
    Returns ``(base model, info)``.
    """
    from peft.tuners.lora import LoraLayer

    masks = masks or {}
    merged = requantized = masked = 0
    for _name, module in list(peft_model.named_modules()):
        if not isinstance(module, LoraLayer):
            continue
        base = module.get_base_layer()
        delta = None
        for adapter in module.active_adapters:
            if adapter in module.lora_A:
                d = module.get_delta_weight(adapter)
                delta = d if delta is None else delta + d
        if delta is None:
            continue
        mask = masks.get(id(base))
        if _is_4bit(base):
            import bitsandbytes as bnb

            weight = base.weight
            w = dense_weight(base).float() + delta.float()
            if mask is not None:
                w = w * mask.to(w.device, w.dtype)
                masked += 1
            kwargs = {k: v for k, v in weight.__dict__.items() if not k.startswith("_")}
            kwargs.pop("data", None)
            if "bnb_quantized" in kwargs:
                kwargs["bnb_quantized"] = False
            kwargs["requires_grad"] = False
            base.weight = bnb.nn.Params4bit(w.to(weight.quant_state.dtype).to("cpu"), **kwargs).to(weight.device)
            requantized += 1
        else:
            w = base.weight.data.float() + delta.float()
            if mask is not None:
                w = w * mask.to(w.device, w.dtype)
                masked += 1
            base.weight.data.copy_(w.to(base.weight.dtype))
        merged += 1
    model = peft_model.unload()
    return model, {"merged_layers": merged, "masked_layers": masked, "requantized_layers": requantized}


def check_mask(model: Any, masks: dict[int, torch.Tensor]) -> bool:
    """True when every recorded zero is still exactly zero."""
    for m in linear_layers(model).values():
        mask = masks.get(id(m))
        if mask is not None and bool((dense_weight(m)[~mask.to(m.weight.device)] != 0).any()):
            return False
    return True


# -- 4-bit base --------------------------------------------------------------------------------------
def to_4bit(bundle: Any, config: QLoraFinetuneConfig, ctx: Any) -> Any:
    """A bitsandbytes 4-bit copy of ``bundle.model`` (saved to scratch, reloaded quantized)."""
    import tempfile
    from pathlib import Path

    from transformers import BitsAndBytesConfig

    from ..loading import load

    work = Path(getattr(ctx, "work_dir", None) or tempfile.mkdtemp(prefix="hfcompress-qlora-"))
    folder = work / "dense-for-4bit"
    bundle.model.save_pretrained(folder)
    if bundle.tokenizer is not None:
        bundle.tokenizer.save_pretrained(folder)
    qcfg = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type=config.quant_type,
                              bnb_4bit_use_double_quant=config.double_quant,
                              bnb_4bit_compute_dtype=getattr(torch, config.compute_dtype))
    device_map = "auto" if torch.cuda.is_available() else "cpu"
    return load(str(folder), task=bundle.task, quantization_config=qcfg, device_map=device_map,
                with_tokenizer=False).model


# -- the stage ---------------------------------------------------------------------------------------
@register(LoraFinetuneConfig)
@register(QLoraFinetuneConfig)
def apply_lora(bundle: Any, config: LoraFinetuneConfig, ctx: Any) -> dict[str, Any]:
    import peft

    from .data import build_dataset
    from .trainer import DistillationTrainer

    qlora = isinstance(config, QLoraFinetuneConfig)
    teacher = None
    if config.loss == "kd":  # load the teacher first: '@input' is the uncompressed model
        teacher, teacher_tok = resolve_teacher(config.teacher or INPUT, bundle)
    model = bundle.model
    quantized_here = False
    if qlora and not getattr(model, "is_loaded_in_4bit", False):
        model = to_4bit(bundle, config, ctx)
        quantized_here = True
    before = sparsity(model)
    masks = zero_masks(model) if config.keep_sparsity else {}
    if qlora:
        model = peft.prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    lcfg = peft.LoraConfig(r=config.r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                           target_modules=config.target_modules, task_type=_TASK_TYPES.get(bundle.task))
    pm = peft.get_peft_model(model, lcfg)
    trainable = sum(p.numel() for p in pm.parameters() if p.requires_grad)
    dataset, collator = build_dataset(bundle.tokenizer, config.data, task=bundle.task)
    folder, persistent = checkpoint_folder(config, ctx)
    resume = resolve_resume(config, folder)
    args = make_training_args(config, folder, progress=getattr(ctx, "progress", True), save=persistent)
    trainer = DistillationTrainer(
        model=pm, teacher=teacher, args=args, train_dataset=dataset, data_collator=collator,
        processing_class=bundle.tokenizer, alpha=config.alpha if teacher is not None else 0.0,
        temperature=config.temperature, teacher_tokenizer=teacher_tok if teacher is not None else None,
    )
    result = trainer.train(resume_from_checkpoint=resume)
    summary: dict[str, Any] = {
        "loss": "kd" if teacher is not None else "lm",
        "r": config.r,
        "trainable_parameters": trainable,
        "steps": trainer.state.global_step,
        "train_runtime_s": round(float(result.metrics.get("train_runtime", 0.0)), 1),
        "first_log": first_log(trainer),
        "last_log": last_log(trainer),
        "sparsity_before": before,
        "checkpoints": str(folder) if persistent else None,
        "resumed_from": str(resume) if resume else None,
    }
    if qlora:
        summary["base"] = f"bitsandbytes {config.quant_type} 4-bit" + (" (quantized by this stage)"
                                                                       if quantized_here else "")
    if not config.merge:
        bundle.model = pm
        summary["merged"] = False
        return summary
    merged, info = merge_lora(trainer.model, masks)
    merged.eval()
    after = sparsity(merged)
    summary.update(info)
    summary["merged"] = True
    if qlora:
        summary["merge"] = (f"each adapted 4-bit weight was dequantized, the LoRA delta added (and the zero mask "
                            f"re-applied), then re-quantized to {config.quant_type}: the merged model is 4-bit "
                            "and carries a second rounding of those weights")
    summary["sparsity_after"] = after
    summary["zeros_preserved"] = check_mask(merged, masks) if masks else None
    bundle.model = merged
    return summary

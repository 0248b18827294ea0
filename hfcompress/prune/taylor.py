"""First-order Taylor pruning: importance |w * dL/dw| accumulated over calibration batches.

L is the language-model loss on the calibration windows (causal LM: next token; masked LM:
15 % of tokens masked). Gradients come from full backward passes (gradient checkpointing per
block keeps activation memory at about one block); each weight's |w * g| is added to its score
as soon as its gradient is ready and the gradient is freed. Pruning is per output row (or N:M).
With ``structured``, a channel / head group scores the sum of its weights' Taylor scores.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from ..errors import UnsupportedError
from ..registry import register
from .base import PruneConfig
from .engine import (
    arch_info,
    calibration_ids,
    check_widths,
    finish_unstructured,
    prune_mask,
    sparsity_for,
    target_linears,
    zero_,
)


class TaylorConfig(PruneConfig):
    """First-order Taylor |w x grad| (accumulated over calibration batches); N:M; structured."""

    supports_pattern = True
    supports_structured = True
    method: Literal["taylor"] = "taylor"
    scope: Literal["row", "layer"] = "row"


def check_taylor_task(bundle) -> None:
    if bundle.task not in ("causal-lm", "masked-lm"):
        raise UnsupportedError(f"taylor importance needs a language-model loss: load the model as causal-lm or "
                               f"masked-lm (this one is {bundle.task})")


def taylor_scores(bundle, info, params: dict[str, nn.Parameter], ids: torch.Tensor,
                  batch_size: int | None, progress: bool = False) -> dict[str, torch.Tensor]:
    """``{name: sum over batches of |p * dL/dp|}`` (fp32) for the given parameters."""
    model = bundle.model
    scores = {n: torch.zeros(p.shape, dtype=torch.float32) for n, p in params.items()}
    saved = {n: p.requires_grad for n, p in model.named_parameters()}
    was_training = model.training
    hooks = []
    for p in model.parameters():
        p.requires_grad_(False)
    for n, p in params.items():
        p.requires_grad_(True)

        def hook(param, n=n):
            scores[n].add_((param.detach().float() * param.grad.float()).abs_())
            param.grad = None

        hooks.append(p.register_post_accumulate_grad_hook(hook))
    model.eval()
    gc = getattr(model, "supports_gradient_checkpointing", False)
    if gc:
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable({"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        for layer in info.layers:  # checkpointing is active on training blocks; keep dropout off inside
            layer.training = True
    bs = batch_size or 1
    gen = torch.Generator().manual_seed(0)
    mask_id = getattr(bundle.tokenizer, "mask_token_id", None) if bundle.tokenizer is not None else None
    try:
        rng = range(0, ids.shape[0], bs)
        if progress:
            from tqdm.auto import tqdm

            rng = tqdm(rng, desc="taylor gradients", unit="batch")
        for a in rng:
            x = ids[a:a + bs]
            if bundle.task == "masked-lm":
                if mask_id is None:
                    raise UnsupportedError("taylor on a masked LM needs a tokenizer with a mask token")
                sel = torch.rand(x.shape, generator=gen) < 0.15
                labels = torch.where(sel, x, torch.full_like(x, -100))
                x = torch.where(sel, torch.full_like(x, mask_id), x)
            else:
                labels = x
            kwargs = {"use_cache": False} if info.kind == "decoder" else {}
            with torch.enable_grad():
                loss = model(input_ids=x, labels=labels, **kwargs).loss
                loss.backward()
    finally:
        for h in hooks:
            h.remove()
        if gc:
            disable = getattr(model, "activation_checkpointing_disable", None) or \
                model.gradient_checkpointing_disable
            disable()
        model.train(was_training)
        for n, p in model.named_parameters():
            p.requires_grad_(saved.get(n, True))
            p.grad = None
    return scores


@register(TaylorConfig)
def apply_taylor(bundle, cfg: TaylorConfig, ctx):
    if cfg.structured:
        from .structured import apply_structured

        return apply_structured(bundle, cfg, ctx, importance="taylor")
    model = bundle.model
    info = arch_info(model)
    check_taylor_task(bundle)
    linears = target_linears(model, info, cfg.targets, cfg.exclude)
    nm = cfg.nm()
    check_widths(linears, nm)
    ids = calibration_ids(bundle, cfg.calibration_or_default())
    scores = taylor_scores(bundle, info, {n: m.weight for n, m in linears.items()}, ids, cfg.batch_size,
                           progress=ctx.progress)
    s = cfg.effective_sparsity()
    with torch.no_grad():
        for name, lin in linears.items():
            sp = sparsity_for(name, s, cfg.overrides)
            zero_(lin.weight, prune_mask(scores.pop(name), sp, nm, per=cfg.scope))
    return finish_unstructured(bundle, cfg, linears, {"calibration_samples": int(ids.shape[0]),
                                                      "seq_len": int(ids.shape[1])})

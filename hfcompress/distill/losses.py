"""Distillation loss terms (pure functions on tensors, used by :class:`DistillationTrainer`).

* :func:`kd_loss` — ``T² · KL(softmax(teacher/T) ‖ softmax(student/T))``, averaged over
  the valid positions (rows of the logits whose mask is true).
* :func:`hard_loss` — cross-entropy on the labels (shifted for causal LMs).
* :func:`hidden_loss` — MSE or ``1 - cosine`` between (projected) student and teacher
  hidden states, averaged over valid tokens.
* :func:`attention_loss` — KL between teacher and student attention rows (head-averaged
  when the head counts differ), averaged over valid query tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _masked_mean(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean of ``values`` (shape ``[...]``) over the positions where ``mask`` is true."""
    if mask is None:
        return values.mean()
    mask = mask.to(values.device).bool()
    n = mask.sum()
    if int(n) == 0:
        return values.sum() * 0.0
    return values.masked_fill(~mask, 0.0).sum() / n


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0,
            mask: torch.Tensor | None = None) -> torch.Tensor:
    """``T² · mean_over_valid_positions( KL(p_teacher^T ‖ p_student^T) )``.

    ``*_logits``: ``[..., C]`` (C = vocabulary or classes); ``mask``: ``[...]`` bool, true
    where the position counts. The KL is summed over the C classes, computed in float32.
    The ``T²`` factor keeps the gradient scale independent of ``T`` (Hinton et al. 2015).
    """
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student logits {tuple(student_logits.shape)} and teacher logits "
                         f"{tuple(teacher_logits.shape)} differ in shape")
    t = float(temperature)
    log_p_s = F.log_softmax(student_logits.float() / t, dim=-1)
    log_p_t = F.log_softmax(teacher_logits.float().to(student_logits.device) / t, dim=-1)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).sum(-1)
    return _masked_mean(kl, mask) * (t * t)


def causal_shift(logits: torch.Tensor, labels: torch.Tensor | None,
                 attention_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits of the positions that predict a next token, and the mask of the valid ones.

    Position ``t`` predicts token ``t+1``: it counts when ``labels[t+1] != -100`` (or, with
    no labels, when both ``t`` and ``t+1`` are real tokens in ``attention_mask``).
    """
    shifted = logits[:, :-1]
    if labels is not None:
        mask = labels[:, 1:] != -100
    elif attention_mask is not None:
        mask = attention_mask[:, 1:].bool() & attention_mask[:, :-1].bool()
    else:
        mask = None
    return shifted, mask


def hard_loss(logits: torch.Tensor, labels: torch.Tensor, *, causal: bool) -> torch.Tensor:
    """Cross-entropy on the labels (``-100`` ignored); MSE for single-output regression heads."""
    if causal:
        logits, labels = logits[:, :-1], labels[:, 1:]
    if logits.size(-1) == 1 and labels.is_floating_point():
        return F.mse_loss(logits.squeeze(-1).float(), labels.float())
    return F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1).to(logits.device),
                           ignore_index=-100)


def hidden_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor, kind: str = "mse",
                mask: torch.Tensor | None = None) -> torch.Tensor:
    """MSE (mean over the hidden dimension) or ``1 - cos`` per token, averaged over valid tokens.

    ``student_hidden`` must already be projected to the teacher's width.
    """
    s = student_hidden.float()
    t = teacher_hidden.float().to(s.device)
    if kind == "mse":
        per_token = (s - t).pow(2).mean(-1)
    elif kind == "cosine":
        per_token = 1.0 - F.cosine_similarity(s, t, dim=-1, eps=1e-6)
    else:
        raise ValueError(f"unknown hidden loss {kind!r}: use 'mse' or 'cosine'")
    return _masked_mean(per_token, mask)


def attention_loss(student_attn: torch.Tensor, teacher_attn: torch.Tensor,
                   mask: torch.Tensor | None = None) -> torch.Tensor:
    """KL(teacher row ‖ student row) of attention probabilities ``[B, H, Lq, Lk]``.

    Head-averaged when the head counts differ; averaged over heads and valid query tokens.
    """
    s = student_attn.float()
    t = teacher_attn.float().to(s.device)
    if s.size(1) != t.size(1):
        s, t = s.mean(1, keepdim=True), t.mean(1, keepdim=True)
    kl = (torch.xlogy(t, t) - torch.xlogy(t, s.clamp_min(1e-12))).sum(-1)  # [B, H, Lq]
    kl = kl.mean(1)  # [B, Lq]
    return _masked_mean(kl, mask)

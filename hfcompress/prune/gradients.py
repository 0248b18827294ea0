"""First-order Taylor scores |w * dL/dw| accumulated over calibration batches (used by the
``taylor`` method, unstructured and structured).

L is the model's own loss on the calibration windows: causal LM next token, masked LM with
15 % of tokens masked, sequence-to-sequence with the window as labels; on image / speech
calibration inputs (:func:`hfcompress.calibration.modality.taylor_loss`) cross-entropy on the
dataset's labels (or the model's own predictions) for image classifiers, next-token
cross-entropy on the transcripts for speech encoder–decoders. Gradient checkpointing
per block keeps activation memory at about one block; each weight's |w * g| is added to its
score as soon as its gradient is ready and the gradient is freed. Gradients are taken on leaf
parameters: a GPT-2 ``Conv1D`` target is scored through its ``[in, out]`` parameter, the experts
of a fused 3-D tensor through that tensor (:func:`target_scores`); tied parameters are scored once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from ..calibration.blocks import find_block_stacks
from ..calibration.capture import model_inputs
from ..calibration.data import num_samples, take_samples
from ..calibration.modality import taylor_loss
from ..calibration.targets import Conv1DTarget, ExpertTarget
from ..errors import UnsupportedError

#: tasks whose model computes a language-model loss from token windows
LM_TASKS = ("causal-lm", "masked-lm", "seq2seq-lm")
#: tasks scored on image / audio calibration inputs (:func:`hfcompress.calibration.modality.taylor_loss`)
MEDIA_TASKS = ("image-classification", "speech-seq2seq")


def check_taylor_task(bundle) -> None:
    """One-line error unless the model has a loss to differentiate."""
    if bundle.task not in LM_TASKS + MEDIA_TASKS:
        raise UnsupportedError(f"taylor importance needs a loss to differentiate (a language-model loss: causal-lm, "
                               f"masked-lm, seq2seq-lm; an image-classification or speech-seq2seq loss), and this "
                               f"model is {bundle.task}: use magnitude or wanda")


def _blocks(model: nn.Module) -> list[nn.Module]:

    try:
        return [b for s in find_block_stacks(model) for b in s.blocks]
    except UnsupportedError:
        return []


def _leaf(name: str, target: Any) -> tuple[str, nn.Parameter, Callable[[torch.Tensor], torch.Tensor]]:
    """``(key, parameter, view)``: the leaf parameter behind a pruning target and how its ``[out, in]``
    matrix is cut from a tensor of the parameter's shape (a Conv1D's transpose, one expert's slice)."""
    if isinstance(target, Conv1DTarget):
        return name, target.parameter, lambda s: s.t()
    if isinstance(target, ExpertTarget):
        e, transposed = target.expert, bool(getattr(target.module, "is_transposed", False))
        return name.rpartition(".")[0], target.parameter, lambda s: s[e].t() if transposed else s[e]
    return name, target.weight, lambda s: s


def target_scores(bundle, targets: dict[str, Any], ids: torch.Tensor | dict[str, torch.Tensor], batch_size: int | None,
                  progress: bool = False) -> dict[str, torch.Tensor]:
    """:func:`taylor_scores` of pruning targets (Linear, Conv1D, one expert of a fused 3-D tensor), each
    ``[out, in]`` like the target's ``weight``: gradients are taken on the leaf parameters (a fused
    expert tensor once for all its experts) and each target's score is its view of them."""
    leaves: dict[str, nn.Parameter] = {}
    views = {}
    for name, t in targets.items():
        key, param, view = _leaf(name, t)
        leaves[key] = param
        views[name] = (key, view)
    scores = taylor_scores(bundle, leaves, ids, batch_size, progress)
    return {name: view(scores[key]) for name, (key, view) in views.items()}


def taylor_scores(bundle, params: dict[str, nn.Parameter], ids: torch.Tensor | dict[str, torch.Tensor],
                  batch_size: int | None,
                  progress: bool = False) -> dict[str, torch.Tensor]:
    """``{name: sum over batches of |p * dL/dp|}`` (float32) for the given (leaf) parameters; names of
    one shared (tied) parameter get the same scores tensor."""
    model = bundle.model
    for n, p in params.items():
        if not p.is_leaf:
            raise UnsupportedError(f"taylor scores are taken on parameters, and `{n}` is a view of one: pass the "
                                   "parameter (see target_scores)")
    by_id: dict[int, torch.Tensor] = {}
    scores = {n: by_id.setdefault(id(p), torch.zeros(p.shape, dtype=torch.float32)) for n, p in params.items()}
    saved = {n: p.requires_grad for n, p in model.named_parameters()}
    was_training = model.training
    hooks = []
    for p in model.parameters():
        p.requires_grad_(False)
    unique = {id(p): (n, p) for n, p in params.items()}
    for n, p in unique.values():
        p.requires_grad_(True)

        def hook(param, n=n):
            scores[n].add_((param.detach().float() * param.grad.float()).abs_())
            param.grad = None

        hooks.append(p.register_post_accumulate_grad_hook(hook))
    model.eval()
    gc = getattr(model, "supports_gradient_checkpointing", False)
    blocks = _blocks(model)
    if gc:
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable({"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        for block in blocks:  # checkpointing is active on training blocks; keep dropout off inside
            block.training = True
    bs = batch_size or 1
    gen = torch.Generator().manual_seed(0)
    mask_id = getattr(bundle.tokenizer, "mask_token_id", None) if bundle.tokenizer is not None else None
    use_cache = {"use_cache": False} if hasattr(model.config, "use_cache") else {}
    try:
        rng = range(0, num_samples(ids), bs)
        if progress:
            from tqdm.auto import tqdm

            rng = tqdm(rng, desc="taylor gradients", unit="batch")
        for a in rng:
            if isinstance(ids, dict):  # image / audio inputs
                with torch.enable_grad():
                    taylor_loss(model, model_inputs(model, take_samples(ids, a, a + bs), keep_labels=True)).backward()
                continue
            x = ids[a:a + bs]
            if bundle.task == "masked-lm":
                if mask_id is None:
                    raise UnsupportedError("taylor on a masked LM needs a tokenizer with a mask token")
                sel = torch.rand(x.shape, generator=gen) < 0.15
                labels = torch.where(sel, x, torch.full_like(x, -100))
                x = torch.where(sel, torch.full_like(x, mask_id), x)
            else:
                labels = x
            with torch.enable_grad():
                loss = model(input_ids=x, labels=labels, **use_cache).loss
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

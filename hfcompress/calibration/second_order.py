"""Second-order helpers shared by SparseGPT and the GPTQ-style quantizers (OBS updates).

* :class:`Hessians` accumulates ``H = X^T X`` per key in float32, in place (``addmm_``), with
  the token count (``scale="mean2"`` keeps GPTQ's running ``2/N X^T X`` instead).
* :func:`inverse_cholesky_upper` damps ``H`` by ``percdamp x mean(diag H)`` and returns the
  upper Cholesky factor of ``H^-1`` (retrying with 10x the damping when asked).
* :func:`obs_quantize` is the OBS column loop with lazy block updates (Frantar et al., GPTQ)
  for any storage grid; SparseGPT's pruning loop lives in ``prune/sparsegpt.py`` and uses the
  same inverse.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch

from ..errors import HFCompressError


class Hessians:
    """``{key: X^T X}`` (float32) and token counts; ``scale="mean2"``: ``2/N X^T X`` (GPTQ's)."""

    def __init__(self, scale: str = "sum") -> None:
        self.scale = scale
        self.H: dict[str, torch.Tensor] = {}
        self.count: dict[str, int] = {}

    def add(self, key: str, x: torch.Tensor) -> None:
        x = x.reshape(-1, x.shape[-1])
        xf = x if x.dtype == torch.float32 else x.float()
        n0 = self.count.get(key, 0)
        total = n0 + int(x.shape[0])
        H = self.H.get(key)
        if self.scale == "mean2":
            if H is None:
                H = self.H[key] = torch.zeros(x.shape[-1], x.shape[-1])
            if total:
                H *= n0 / total
                xs = math.sqrt(2 / total) * xf
                H += xs.t() @ xs
        elif H is None:
            self.H[key] = xf.t() @ xf
        else:
            H.addmm_(xf.t(), xf)
        self.count[key] = total

    def tokens(self, key: str) -> int:
        return self.count.get(key, 0)

    def pop(self, key: str) -> tuple[torch.Tensor | None, int]:
        return self.H.pop(key, None), self.count.pop(key, 0)


def fix_dead(H: torch.Tensor, W: torch.Tensor) -> None:
    """Inputs that were always zero: ``H[j, j] = 1`` and column ``j`` of ``W`` zeroed (in place)."""
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    W[:, dead] = 0


def inverse_cholesky_upper(H: torch.Tensor, percdamp: float, *, retries: int = 0, inplace: bool = False,
                           what: str = "the calibration") -> torch.Tensor:
    """Upper Cholesky factor of ``(H + percdamp * mean(diag H) * I)^-1``.

    ``inplace``: the damping is added to ``H`` itself (no copy; ``H`` is consumed). With
    ``retries`` the damping grows 10x per failed attempt. One-line error when it never works.
    """
    mean_diag = torch.mean(torch.diag(H))
    for attempt in range(retries + 1):
        Hd = H if inplace and retries == 0 else H.clone()
        Hd.diagonal().add_(percdamp * (10 ** attempt) * mean_diag)
        L, info = torch.linalg.cholesky_ex(Hd)
        if not int(info):
            del Hd
            return torch.linalg.cholesky(torch.cholesky_inverse(L), upper=True)
    raise HFCompressError(f"{what} Hessian is not positive definite even after damping: raise the damping "
                          "(e.g. 0.1) or use more calibration samples")


@torch.no_grad()
def obs_quantize(W: torch.Tensor, Hinv: torch.Tensor, quantize: Callable[[torch.Tensor, int, int], torch.Tensor],
                 *, block_size: int, mask: torch.Tensor | None = None,
                 on_column: Callable[[torch.Tensor, int, int], None] | None = None) -> torch.Tensor:
    """OBS / GPTQ column loop: ``Q[:, j] = quantize(w_j, j, j - block start)`` in order, each
    column's error ``(w - q) / Hinv[j, j]`` pushed onto the later columns of its lazy block, the
    block's errors onto all later columns in one matmul. ``mask`` (0/1): entries that stay zero.
    ``W`` (float32) is modified; returns ``Q``. ``on_column(W1, i1, i)`` runs before column ``i``
    of the block starting at ``i1`` (e.g. to fix a group's scale from the error-updated ``W1``)."""
    cols = W.shape[1]
    Q = torch.zeros_like(W)
    for i1 in range(0, cols, block_size):
        i2 = min(i1 + block_size, cols)
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        Hinv1 = Hinv[i1:i2, i1:i2]
        M1 = mask[:, i1:i2] if mask is not None else None
        for i in range(i2 - i1):
            if on_column is not None:
                on_column(W1, i1, i)
            w = W1[:, i]
            q = quantize(w, i1 + i, i)
            if M1 is not None:
                q = q * M1[:, i]
            Q1[:, i] = q
            err = (w - q) / Hinv1[i, i]
            W1[:, i:] -= err.unsqueeze(1) @ Hinv1[i, i:].unsqueeze(0)
            if M1 is not None:
                W1[:, i:] *= M1[:, i:]
            Err1[:, i] = err
        Q[:, i1:i2] = Q1
        W[:, i2:] -= Err1 @ Hinv[i1:i2, i2:]
        if mask is not None:
            W[:, i2:] *= mask[:, i2:]
    return Q

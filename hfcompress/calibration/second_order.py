"""Second-order helpers shared by SparseGPT and the GPTQ-style quantizers (OBS updates).

* :class:`Hessians` accumulates ``H = X^T X`` per key in float32, in place, on the upper block
  triangle only (:func:`add_gram_upper_`), with the token count (``scale="mean2"`` keeps GPTQ's running ``2/N X^T X`` instead).
* :func:`inverse_cholesky_upper` damps ``H`` by ``percdamp x mean(diag H)`` and returns the
  upper Cholesky factor of ``H^-1`` (retrying with 10x the damping when asked).
* :func:`obs_quantize` is the OBS column loop with lazy block updates (Frantar et al., GPTQ)
  for any storage grid; SparseGPT's pruning loop lives in ``prune/sparsegpt.py`` and uses the
  same inverse.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..errors import HFCompressError

#: column panels of the upper-triangular Hessian update (see :func:`add_gram_upper_`)
_PANELS = 4


def add_gram_upper_(H: torch.Tensor, x: torch.Tensor, alpha: float = 1.0) -> None:
    """``H += alpha * x^T x`` on the upper block triangle only (the rest of ``H`` is left as is).

    ``X^T X`` is symmetric, so the blocks below the diagonal are never computed: with the columns
    in ``_PANELS`` panels, panel ``i`` updates ``H[i, i:]`` in one matmul — (k+1)/2k of the full
    product's flops (62.5 % for k = 4) at the same matmul efficiency; BLAS has ``syrk`` for this,
    which torch does not expose. :func:`symmetrize_upper_` completes ``H`` once at the end.
    """
    n = x.shape[-1]
    w = -(-n // _PANELS)
    if n < 2 * 128:  # small layers: one full product
        H.addmm_(x.t(), x, alpha=alpha)
        return
    for a in range(0, n, w):
        H[a:a + w, a:].addmm_(x[:, a:a + w].t(), x[:, a:], alpha=alpha)


def symmetrize_upper_(H: torch.Tensor) -> torch.Tensor:
    """Fill ``H``'s lower triangle from its upper one (in place) after :func:`add_gram_upper_`."""
    lower = H.triu(1).t()
    return H.triu_().add_(lower)


class Hessians:
    """``{key: X^T X}`` (float32) and token counts; ``scale="mean2"``: ``2/N X^T X`` (GPTQ's).

    Accumulated on the upper block triangle (:func:`add_gram_upper_`); :meth:`pop` returns the
    full symmetric matrix.
    """

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
        if H is None:
            H = self.H[key] = torch.zeros(x.shape[-1], x.shape[-1], device=x.device)
        if self.scale == "mean2":
            if total:
                H *= n0 / total
                add_gram_upper_(H, xf, alpha=2 / total)
        else:
            add_gram_upper_(H, xf)
        self.count[key] = total

    def tokens(self, key: str) -> int:
        return self.count.get(key, 0)

    def pop(self, key: str) -> tuple[torch.Tensor | None, int]:
        H = self.H.pop(key, None)
        return (symmetrize_upper_(H) if H is not None else None), self.count.pop(key, 0)


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

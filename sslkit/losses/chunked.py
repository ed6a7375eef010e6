r"""Row-wise log-sum-exp over a similarity matrix in bounded memory.

The InfoNCE-family heads need, for each of the N = B*V rows :math:`u_a`,

.. math:: \ell_a = \log \sum_{b \notin E(a)} e^{c\, u_a^\top u_b}

with :math:`E(a)` the excluded columns (the row itself, or every view of its instance). The dense
form builds the N x N logits, several copies of them for masking and the softmax, and keeps them
for backward: at B = 16384, V = 2 that is 4 GiB per copy in fp32. :func:`row_logsumexp` with a
``chunk_size`` computes the same values a block of ``chunk_size`` rows at a time and recomputes
each block in backward (the gradient of :math:`\ell_a` is the softmax row, rebuilt from the saved
:math:`\ell`), so the peak is O(chunk_size x N) instead of O(N^2), for one more matrix product
per block. ``chunk_size=None`` is the dense path with plain autograd.

Used by the heads with a ``chunk_size`` argument (``loss.chunk_size``): InfoNCE, DCL (debiased
and decoupled), HCL and RINCE.

Heads whose per-row terms are more than a log-sum-exp use :func:`map_row_blocks` instead: a
block of query rows at a time under activation checkpointing (``torch.utils.checkpoint``,
recomputation in backward), the same bound for any row-wise function. MoCo: the ``[B, Q]``
logits against the queue; CACR/CCT: the ``[P, B, B]`` repulsion (each query's softmax is over
its own row); AU: each view's B x B uniformity distances (a log-sum-exp per row, then one over
the rows). :func:`row_logsumexp` keeps its hand-written backward, which rebuilds the softmax
from the saved result instead of re-running the block's forward: measured 0.7x the time and
0.7x the peak memory of the same log-sum-exp through :func:`map_row_blocks` (N = 8192,
D = 128, chunk 1024, one thread, side by side).

Still dense: the GCA heads, whose Sinkhorn iterations normalise whole columns as well as rows,
so every iteration needs the whole matrix; not chunked yet: the momentum-encoder CACR variants
(``cacr_moco``, ``cacr_mocov3``) and decoupled uniformity (``dunif``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint


def _block(u: Tensor, start: int, stop: int, scale: float, ids: Tensor | None) -> Tensor:
    """Scaled logits of rows ``start:stop`` against every row, excluded entries at -inf."""
    logits = (u[start:stop] @ u.T) * scale
    rows = torch.arange(start, stop, device=u.device)
    if ids is None:
        exclude = rows[:, None] == torch.arange(u.shape[0], device=u.device)[None, :]
    else:
        exclude = ids[rows][:, None] == ids[None, :]
    return logits.masked_fill_(exclude, float("-inf"))


class _ChunkedRowLogSumExp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u: Tensor, scale: float, ids: Tensor | None, chunk: int) -> Tensor:
        n = u.shape[0]
        lse = torch.empty(n, dtype=u.dtype, device=u.device)
        for start in range(0, n, chunk):
            stop = min(start + chunk, n)
            lse[start:stop] = torch.logsumexp(_block(u, start, stop, scale, ids), dim=1)
        ctx.save_for_backward(u, lse, ids)
        ctx.scale, ctx.chunk = scale, chunk
        return lse

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_lse: Tensor):
        u, lse, ids = ctx.saved_tensors
        scale, chunk = ctx.scale, ctx.chunk
        grad_u = torch.zeros_like(u)
        for start in range(0, u.shape[0], chunk):
            stop = min(start + chunk, u.shape[0])
            # d lse_a / d s_ab = softmax_ab (0 where excluded: exp(-inf))
            weights = (_block(u, start, stop, scale, ids) - lse[start:stop, None]).exp_()
            weights.mul_(grad_lse[start:stop, None] * scale)
            grad_u[start:stop] += weights @ u  # through the rows
            grad_u += weights.T @ u[start:stop]  # through the columns
        return grad_u, None, None, None


def check_chunk_size(chunk_size: int | None) -> None:
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int)
                                   or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive number of rows or null (dense), "
                         f"got {chunk_size!r}")


def row_logsumexp(u: Tensor, scale: float, ids: Tensor | None = None,
                  chunk_size: int | None = None) -> Tensor:
    r"""``[N]``: :math:`\log\sum_{b} e^{\text{scale}\cdot u_a^\top u_b}` for each row ``a`` of
    ``u: [N, D]``, over every ``b != a`` (``ids=None``) or over every ``b`` with
    ``ids[b] != ids[a]`` (negatives only, ``ids`` the instance of each row).

    ``chunk_size``: rows per block of the chunked computation (memory O(chunk_size x N), forward
    and backward); ``None`` or ``>= N``: the dense N x N computation.
    """
    check_chunk_size(chunk_size)
    n = u.shape[0]
    if chunk_size is None or chunk_size >= n:
        return torch.logsumexp(_block(u, 0, n, scale, ids), dim=1)
    return _ChunkedRowLogSumExp.apply(u, scale, ids, int(chunk_size))


@torch.no_grad()
def row_softmax_stats(u: Tensor, scale: float, ids: Tensor | None, lse: Tensor,
                      chunk_size: int | None = None) -> tuple[Tensor, Tensor]:
    """Entropy (nats) and largest value of each row's softmax over the same entries as
    :func:`row_logsumexp` (whose result is ``lse``), block by block; no gradient."""
    n = u.shape[0]
    chunk = n if chunk_size is None else chunk_size
    entropy, largest = torch.empty_like(lse), torch.empty_like(lse)
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        logits = _block(u, start, stop, scale, ids)
        weights = (logits - lse[start:stop, None]).exp()
        finite = logits.masked_fill(torch.isinf(logits), 0.0)
        entropy[start:stop] = lse[start:stop] - (weights * finite).sum(dim=1)
        largest[start:stop] = weights.amax(dim=1)
    return entropy, largest


def map_row_blocks(fn: Callable[..., tuple[Tensor, ...]], rows: Tensor, chunk_size: int | None,
                   *args: object, dim: int = 0) -> tuple[Tensor, ...]:
    """``fn(block, start, *args)`` on blocks of ``chunk_size`` rows of ``rows`` along ``dim``
    (``start``: the block's first row), each output concatenated along ``dim`` over the blocks.

    ``fn`` returns a tuple of per-row tensors (the block's rows along ``dim``). Each block runs
    under activation checkpointing (``torch.utils.checkpoint``, non-reentrant): its
    intermediates are dropped after its forward and recomputed in backward, one block at a time,
    so memory beyond the inputs and outputs is that of one block, forward and backward.
    ``chunk_size=None`` (or ``>= rows``): one call of ``fn`` on all rows with plain autograd.
    Work ``fn`` does under ``torch.no_grad()`` (logs) saves nothing for backward.
    """
    check_chunk_size(chunk_size)
    n = rows.shape[dim]
    if chunk_size is None or chunk_size >= n:
        return tuple(fn(rows, 0, *args))
    needs_grad = torch.is_grad_enabled() and any(
        isinstance(t, Tensor) and t.requires_grad for t in (rows, *args))
    outs = []
    for start in range(0, n, chunk_size):
        block = rows.narrow(dim, start, min(chunk_size, n - start))
        if needs_grad:
            outs.append(checkpoint(fn, block, start, *args, use_reentrant=False,
                                   preserve_rng_state=False))
        else:
            outs.append(fn(block, start, *args))
    return tuple(torch.cat(parts, dim=dim) for parts in zip(*outs))

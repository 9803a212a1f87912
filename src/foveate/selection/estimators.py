"""The attention-sampling expectation estimator (Katharopoulos & Fleuret, ICML 2019).

Phi = sum_i a_i f_i = E_{i~a}[f_i] is estimated from N sampled positions q as F = sum_k c_k a_{q_k} f_{q_k}
with constant coefficients c_k:
    with replacement:     c_k = 1 / (N a_{q_k})
    without replacement:  c_k = ((N-1-k) + pm_k / a_{q_k}) / N,  pm_k = 1 - sum_{j<k} a_{q_j}
(the average of the N per-draw estimates T_k = sum_{j<k} a_{q_j} f_{q_j} + pm_k f_{q_k}, each unbiased).
The gradient is dF/df_k = c_k a_{q_k} and dF/da_{q_k} = c_k f_{q_k}, both unbiased for dPhi. The
reference's closed-form attention gradient for the without-replacement case is biased; this one is
checked against exact enumeration in tests/selection/test_estimators.py.
"""
from __future__ import annotations

import torch
from torch import Tensor


def estimator_coefficients(a_q: Tensor, replace: bool) -> Tensor:
    """c (B, N) for the sampled attention values a_q (B, N), in draw order. No gradient."""
    a_q = a_q.detach()
    n = a_q.shape[-1]
    if replace:
        return 1.0 / (n * a_q)
    # remaining mass before each draw, in float64: 1 - cumsum goes negative in fp32 for peaked a
    a64 = a_q.double()
    before = torch.cumsum(a64, dim=-1) - a64
    remaining = (1.0 - before).clamp(min=0.0)
    order = torch.arange(n, device=a_q.device, dtype=torch.float64)
    c = ((n - 1 - order) + remaining / a64) / n
    return c.to(a_q.dtype)


class _WeightedSum(torch.autograd.Function):
    """F = sum_k c_k a_k f_k with c constant: (B, N), (B, N, D), (B, N) -> (B, D)."""

    @staticmethod
    def forward(ctx, a_q: Tensor, features: Tensor, c: Tensor) -> Tensor:
        ctx.save_for_backward(a_q, features, c)
        return torch.einsum("bn,bnd->bd", c * a_q, features)

    @staticmethod
    def backward(ctx, grad: Tensor):
        a_q, features, c = ctx.saved_tensors
        grad_a = c * torch.einsum("bnd,bd->bn", features, grad)  # c_k <f_k, g>
        grad_f = (c * a_q).unsqueeze(-1) * grad.unsqueeze(1)  # w_k g
        return grad_a, grad_f, None


def expectation(attention: Tensor, features: Tensor, idx: Tensor, replace: bool) -> Tensor:
    """Unbiased estimate of sum_i a_i f_i, and of its gradient, from the sampled positions.

    attention: (B, K) the distribution idx was drawn from; features: (B, N, D) of positions
    idx (B, N), in draw order; replace: whether the draws were with replacement.
    returns (B, D).
    """
    a_q = attention.gather(1, idx)  # (B, N)
    c = estimator_coefficients(a_q, replace)
    return _WeightedSum.apply(a_q, features, c)


def estimator_weights(attention: Tensor, idx: Tensor, replace: bool) -> Tensor:
    """The weights w_k = c_k a_{q_k} (B, N) each sampled feature gets; they sum to 1 without replacement."""
    a_q = attention.detach().gather(1, idx)
    return estimator_coefficients(a_q, replace) * a_q


def entropy_regulariser(attention: Tensor) -> Tensor:
    """mean over the batch of sum_i a_i log(a_i + 1e-6) = -H(a): adding lambda times it to the loss
    keeps the attention from collapsing early (the reference's regulariser)."""
    return (attention * torch.log(attention + 1e-6)).sum(dim=-1).mean()

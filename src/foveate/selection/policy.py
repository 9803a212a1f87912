"""Policy-gradient pieces shared by hard-attention models."""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class RunningBaseline(nn.Module):
    """An exponential moving average of the reward, kept as a buffer (saved in checkpoints).

    The loss must use the value from *before* this step's update; the caller updates it after
    computing the loss, with a reward already averaged across data-parallel replicas so that
    every replica holds the same baseline.
    """

    def __init__(self, initial: float = 0.5, momentum: float = 0.9) -> None:
        super().__init__()
        self.momentum = momentum
        self.register_buffer("value", torch.tensor(float(initial)))

    @torch.no_grad()
    def update(self, reward: Tensor) -> None:
        reward = reward.detach().to(self.value)
        self.value.mul_(self.momentum).add_((1.0 - self.momentum) * reward)


def reinforce_loss(log_prob: Tensor, reward: Tensor, baseline: Tensor | float) -> Tensor:
    """mean of -(reward - baseline) * log_prob; the advantage carries no gradient.

    log_prob, reward: same shape (any); baseline: scalar.
    """
    advantage = (reward - baseline).detach()
    return -(advantage * log_prob).mean()


def batch_mean_reinforce(log_prob: Tensor, reward: Tensor) -> Tensor:
    """Saccader's REINFORCE: -mean((r_b - mean_b r) * log_prob), the batch mean of the rewards
    as the baseline (no critic, no running state).

    log_prob: (B, ...) e.g. (B, T) one term per step; reward: (B,) or broadcastable to log_prob,
    the same reward for every step of a trajectory.
    """
    reward = reward.detach()
    per_item = reward.reshape(reward.shape + (1,) * (log_prob.dim() - reward.dim()))  # broadcasts over steps
    return reinforce_loss(log_prob, per_item, reward.mean())


def vimco_signal(logw: Tensor) -> tuple[Tensor, Tensor]:
    """VIMCO's per-sample learning signal (Mnih & Rezende, 2016) in log space, without gradient.

    logw: (B, K) log-weights of K samples per item. Returns (L, signal): L (B,) = log mean_k w_k,
    signal (B, K) = L - L^(-k), where L^(-k) replaces w_k by the geometric mean of the others.
    """
    lw = logw.detach()
    kk = lw.shape[-1]
    if kk < 2:
        raise ValueError("VIMCO needs at least 2 samples per item")
    bound = torch.logsumexp(lw, dim=-1) - math.log(kk)                        # (B,)
    others = (lw.sum(dim=-1, keepdim=True) - lw) / (kk - 1)                    # (B, K) mean_{j != k} log w_j
    eye = torch.eye(kk, dtype=torch.bool, device=lw.device)
    replaced = torch.where(eye, others[..., :, None], lw[..., None, :])         # (B, K, K): row k has w_k replaced
    loo = torch.logsumexp(replaced, dim=-1) - math.log(kk)                     # (B, K)
    return bound, bound[..., None] - loo


def vimco_loss(logw: Tensor, log_pi: Tensor) -> tuple[Tensor, Tensor]:
    """VIMCO surrogate: its gradient is
        sum_k softmax(logw)_k grad logw_k + sum_k (L - L^(-k)) grad log pi_k,
    averaged over the batch (and negated, to be minimised).

    logw: (B, K) log p(y | sample k) (gradient to the classifier); log_pi: (B, K) log-probability
    of each sample under the policy (gradient to the policy). Returns (loss, bound mean).
    """
    bound, signal = vimco_signal(logw)
    weights = torch.softmax(logw.detach(), dim=-1)
    surrogate = (weights * logw).sum(-1) + (signal * log_pi).sum(-1)
    return -surrogate.mean(), bound.mean()

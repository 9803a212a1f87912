"""Policy-gradient pieces shared by hard-attention models."""
from __future__ import annotations

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

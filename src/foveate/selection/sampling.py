"""Drawing regions from an attention distribution."""
from __future__ import annotations

import torch
from torch import Tensor

from ..errors import FoveateError


def sample_without_replacement(attention: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
    """Gumbel-top-k: n distinct positions of each row of `attention`, in the order of sequential
    draws without replacement (the estimator needs that order; do not sort it).

    attention: (B, K) probabilities (> 0). returns (B, n) long.
    """
    k = attention.shape[-1]
    if not 1 <= n <= k:
        raise FoveateError(f"cannot draw {n} distinct positions of {k} without replacement (need 1 <= n <= {k})")
    u = torch.rand(attention.shape, generator=generator, device=attention.device, dtype=attention.dtype)
    gumbel = -torch.log(-torch.log(u.clamp(min=torch.finfo(u.dtype).tiny)))
    return torch.topk(attention.log() + gumbel, n, dim=-1, sorted=True).indices


def sample_with_replacement(attention: Tensor, n: int, generator: torch.Generator | None = None) -> Tensor:
    """n i.i.d. draws from each row of `attention` (B, K). returns (B, n) long."""
    if n < 1:
        raise FoveateError(f"number of samples must be >= 1, got {n}")
    return torch.multinomial(attention, n, replacement=True, generator=generator)

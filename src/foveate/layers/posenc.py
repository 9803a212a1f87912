"""Sinusoidal encoding of integer positions such as (y, x, level)."""
from __future__ import annotations

import torch
from torch import Tensor


def sinusoid_encoding(pos: Tensor, dim: int, max_period: float = 100.0) -> Tensor:
    """pos: (n, P) coordinates; returns (n, dim).

    Each coordinate gets f = dim // (2P) frequencies w_m = max_period^(-m/(f-1)) (1 down to
    1/max_period) as [sin(p w), cos(p w)]; coordinates are laid out one after another and the
    remaining dim - 2Pf entries are zero (the TNet layout for P = 3).
    """
    n, num_coords = pos.shape
    f = dim // (2 * num_coords)
    if f < 1:
        raise ValueError(f"encoding dimension {dim} is too small for {num_coords} coordinates")
    m = torch.arange(f, device=pos.device, dtype=torch.float32)
    omega = max_period ** (-m / max(f - 1, 1))  # (f,)
    angles = pos.float()[:, :, None] * omega  # (n, P, f)
    enc = torch.stack([angles.sin(), angles.cos()], dim=2).reshape(n, -1)  # (n, P*2*f)
    return torch.nn.functional.pad(enc, (0, dim - enc.shape[1]))

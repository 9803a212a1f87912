"""Deterministic top-k selection."""
from __future__ import annotations

import torch
from torch import Tensor

from ..errors import FoveateError


def topk_cells(probs: Tensor, k: int, order: str = "index") -> Tensor:
    """Indices of the k most probable candidates of each row.

    probs: (n, C). returns (n, k) long. `order="index"` sorts the chosen indices by position
    (the TNet reference's order, which keeps items, positions and labels aligned the same way
    whatever the scores); `order="score"` keeps them best first.
    """
    num = probs.shape[-1]
    if not 1 <= k <= num:
        raise FoveateError(f"cannot choose {k} of {num} candidate regions (need 1 <= k <= {num})")
    idx = torch.topk(probs, k, dim=-1, sorted=True).indices
    if order == "index":
        idx = idx.sort(dim=-1).values
    elif order != "score":
        raise FoveateError(f"unknown selection order {order!r} (use 'index' or 'score')")
    return idx

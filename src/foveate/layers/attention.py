"""Cross-attention pooling: learned query tokens read a variable-size set of features."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import FoveateError


class CrossAttentionPool(nn.Module):
    """One Transformer block whose queries are `tokens` learned vectors (no self-attention):

        h = LN(q + Drop(MHA(q, z, z)));  h = LN(h + Drop(MLP(h)))

    Besides h it returns the attention weights over the set, averaged over heads and tokens,
    which IPS uses to rank patches. Dropout acts on the sub-layer outputs, not on the attention
    weights, so the returned weights are the plain softmax in training as in evaluation.
    """

    def __init__(self, dim: int, heads: int = 8, dim_head: int | None = None, mlp_dim: int | None = None,
                 dropout: float = 0.0, tokens: int = 1) -> None:
        super().__init__()
        if heads < 1 or dim % heads:
            raise FoveateError(f"dim {dim} must be a positive multiple of heads ({heads})")
        if dim_head is not None and dim_head * heads != dim:
            raise FoveateError(f"heads x dim_head must equal dim: {heads} x {dim_head} != {dim}")
        if tokens < 1:
            raise FoveateError(f"tokens must be >= 1, got {tokens}")
        self.query = nn.Parameter(torch.randn(1, tokens, dim))
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        mlp_dim = mlp_dim or 4 * dim
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(mlp_dim, dim))
        self.norm2 = nn.LayerNorm(dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """z: (B, L, D) set of features. returns h: (B, T, D), weights: (B, L) (sum to 1 per row)."""
        q = self.query.expand(z.shape[0], -1, -1)  # (B, T, D)
        attended, weights = self.attn(q, z, z, need_weights=True, average_attn_weights=True)  # (B,T,D), (B,T,L)
        h = self.norm1(q + self.drop(attended))
        h = self.norm2(h + self.drop(self.mlp(h)))
        return h, weights.mean(dim=1)

"""IPS, Iterative Patch Selection (Bergner, Lippert and Mahendran, ICLR 2023).

The full-resolution image is tiled into N patches. A no-gradient scan embeds them I at a time
and keeps a memory of the M patches the aggregator's learned query attends to most; only those
M are then embedded again, with gradient, and classified by the same cross-attention
aggregator. Backpropagation memory therefore covers M patches and the scan M + I patches,
whatever N is; compute is O(N). The selection gets no gradient of its own: its scores are the
aggregator's attention weights, which learn from the classification loss.
"""
from __future__ import annotations

import numbers
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..backbones import Backbone, create_backbone
from ..errors import FoveateError
from ..geometry import Grid
from ..layers import CrossAttentionPool, sinusoid_encoding
from ..sources.region import RegionSource, as_source
from .common import class_targets, network_range
from .output import Glimpses, Output
from .registry import register_model


@contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    """Evaluation mode for the block, then every submodule's own training flag back."""
    flags = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in flags:
            m.training = training


@register_model("ips")
class IPS(nn.Module):
    """
    Args:
        num_classes: K.
        in_chans: image channels.
        backbone: the patch encoder, a registered name or a `Backbone`; its pooled features are
            projected to `dim` when their size differs.
        patch_size, stride: P x P tiles every `stride` px (default P), covering the image.
        locations: M, the patches kept in memory and classified (`forward(locations=...)` overrides).
        chunk: I, the patches embedded per scan step.
        dim, heads, dim_head, mlp_dim, dropout, tokens: the cross-attention aggregator
            (heads x dim_head must equal dim); with several tokens the logits are averaged.
        pos_encoding: add a sinusoidal encoding of each patch's (row, column) to its feature.
    """

    reads_full_image = True  # the scan embeds every patch of the image

    def __init__(self, num_classes: int, in_chans: int = 1, backbone: str | Backbone = "small_cnn",
                 backbone_kwargs: dict | None = None, patch_size: int = 50, stride: int | None = None,
                 locations: int = 100, chunk: int = 100, dim: int = 128, heads: int = 8, dim_head: int = 16,
                 mlp_dim: int = 512, dropout: float = 0.1, tokens: int = 1, pos_encoding: bool = True) -> None:
        super().__init__()
        if chunk < 1:
            raise FoveateError(f"chunk (patches embedded per scan step) must be >= 1, got {chunk}")
        if patch_size < 1 or (stride is not None and stride < 1):
            raise FoveateError(f"patch_size and stride must be >= 1 px, got {patch_size} and {stride}")
        self.num_classes, self.in_chans = num_classes, in_chans
        self.patch_size, self.stride, self.chunk = patch_size, stride or patch_size, chunk
        self.default_locations = self.budget(locations)
        self.pos_encoding = pos_encoding
        self.backbone = backbone if isinstance(backbone, nn.Module) else create_backbone(
            backbone, in_chans=in_chans, **(backbone_kwargs or {}))
        features = self.backbone.num_features
        self.project = nn.Identity() if features == dim else nn.Linear(features, dim)
        self.aggregator = CrossAttentionPool(dim, heads, dim_head, mlp_dim, dropout, tokens)
        self.head = nn.Linear(dim, num_classes)

    # -- geometry -------------------------------------------------------------------------
    def budget(self, locations) -> int:
        """M for `locations`; whether the image has that many patches is checked in forward."""
        if isinstance(locations, bool) or not isinstance(locations, numbers.Integral) or locations < 1:
            raise FoveateError(f"IPS locations (M, patches kept) must be one positive integer, got {locations!r}")
        return int(locations)

    def grid(self, height: int, width: int) -> Grid:
        return Grid.tiles(height, width, self.patch_size, self.stride)

    # -- forward --------------------------------------------------------------------------
    def forward(self, x: Tensor | RegionSource, locations: int | None = None) -> Output:
        """x: (B, C, H, W) in [0, 1] at full resolution, or a `RegionSource` (read one chunk of
        tiles at a time, so a file source never holds the whole image). locations: M (default: as built)."""
        m = self.default_locations if locations is None else self.budget(locations)
        src = as_source(x, self.in_chans, self.patch_size, "the patch size")
        (height, width), b, device = src.size, src.batch, src.device
        grid = self.grid(height, width)
        n = grid.num_cells
        if m > n:
            raise FoveateError(f"locations={m} is impossible: a {width}x{height} image has {n} patches of "
                               f"{self.patch_size} px at stride {self.stride}")
        # A random scan order in training breaks ties (e.g. in empty regions) differently each step.
        perm = torch.randperm(n, device=device) if self.training else torch.arange(n, device=device)

        # Scan without gradient and with BatchNorm/dropout in eval mode, so that a patch's score
        # does not depend on which chunk it shares a backbone call with.
        with torch.no_grad(), _eval_mode(self):
            idx, z, heat = self._scan(src, grid, perm, m)  # (B, M), (B, M, D), (B, N)
        if self.training or torch.is_grad_enabled():
            z = self._embed(src, grid, idx)  # (B, M, D), with gradient and in the caller's mode
        h, weights = self.aggregator(z)  # (B, T, D), (B, M)
        logits = self.head(h).mean(dim=1)  # (B, K)

        boxes = grid.cell_boxes(device)[idx]  # (B, M, 4) full-resolution pixels
        glimpses = Glimpses(level=1, boxes=boxes, probs=weights.detach(), chosen=torch.ones_like(idx, dtype=torch.bool),
                            heatmap=heat.reshape(b, grid.h.cells, grid.w.cells))
        return Output(logits=logits, trace=[glimpses])

    def _embed(self, src: RegionSource, grid: Grid, idx: Tensor) -> Tensor:
        """Features (B, n, D) of patches idx (B, n) (cell indices i * g_w + j)."""
        b, n = idx.shape
        top, left = grid.cell_corners(idx)
        patches = src.crop(top, left, grid.cell_size)  # (B * n, C, P, P)
        _, pooled = self.backbone(network_range(patches))  # (B * n, D_backbone)
        z = self.project(pooled)  # (B * n, D)
        if self.pos_encoding:
            rows, cols = idx // grid.w.cells, idx % grid.w.cells
            pos = torch.stack([rows, cols, torch.zeros_like(rows)], dim=-1).reshape(b * n, 3)
            z = z + sinusoid_encoding(pos, z.shape[1]).to(z.dtype)
        return z.reshape(b, n, -1)

    def _scan(self, src: RegionSource, grid: Grid, perm: Tensor, m: int) -> tuple[Tensor, Tensor, Tensor]:
        """Top-M patches by attention over a chunked pass: the first M patches of `perm`, then I
        more per step, each step re-ranking memory + chunk and keeping the best M.

        returns idx (B, M) cell indices in descending score order, their features (B, M, D), and
        (B, N) the score each patch got in the last step where it was a candidate.
        """
        b, n = src.batch, grid.num_cells
        heat = torch.zeros(b, n, device=src.device)
        idx = perm.new_zeros(b, 0)
        z = None
        starts = [0, *range(m, n, self.chunk)]
        for start, end in zip(starts, [*starts[1:], n]):
            chunk = perm[start:end].expand(b, -1)  # (B, I), the same order for every image
            new = self._embed(src, grid, chunk)  # (B, I, D)
            z = new if z is None else torch.cat([z, new], dim=1)  # (B, M + I, D)
            idx = torch.cat([idx, chunk], dim=1)  # (B, M + I)
            _, scores = self.aggregator(z)  # (B, M + I), softmax over the candidates
            heat.scatter_(1, idx, scores)
            keep = scores.topk(min(m, scores.shape[1]), dim=1).indices  # (B, M)
            z = z.gather(1, keep[..., None].expand(-1, -1, z.shape[2]))
            idx = idx.gather(1, keep)
        return idx, z, heat

    # -- training objective -----------------------------------------------------------------
    def loss(self, out: Output, target: Tensor) -> dict[str, Tensor]:
        """Cross-entropy of the logits (the reference's NLL of log(softmax + 1e-6) differs only
        in capping each image's loss at -log(1e-6) ~ 13.8)."""
        ce = F.cross_entropy(out.logits, class_targets(target, "IPS"))
        return {"loss": ce, "ce": ce.detach()}

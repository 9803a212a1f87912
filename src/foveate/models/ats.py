"""Attention Sampling, ATS (Katharopoulos & Fleuret, ICML 2019).

An attention network scores every position of a cheap low-resolution view; N positions are
sampled from that distribution (without replacement by default, Gumbel-top-k), the P x P
full-resolution patches centred on them are encoded and L2-normalised, and their attention-weighted
average sum_i a_i f_i is estimated without bias from the N samples (`selection.expectation`).
The attention net learns through that estimator's gradient; an entropy term keeps it from
collapsing early. Cost follows N patches plus the low-resolution view, not the image size.
"""
from __future__ import annotations

from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..backbones import Backbone, create_backbone
from ..errors import FoveateError
from ..geometry import projected_corners
from ..selection import (
    entropy_regulariser,
    expectation,
    sample_with_replacement,
    sample_without_replacement,
    topk_cells,
)
from ..sources.region import RegionSource, as_source
from .common import class_targets, network_range
from .output import Glimpses, Output
from .registry import register_model


class AttentionNet(nn.Module):
    """The reference's Megapixel MNIST attention net: 3x3 "same" convs (tanh) to one logit per
    low-resolution pixel, optionally max-pooled to a coarser map. Logits: (B, G_h, G_w)."""

    def __init__(self, in_chans: int, channels: int = 8, depth: int = 2, pool: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_chans
        for _ in range(depth):
            layers += [nn.Conv2d(cin, channels, 3, padding=1), nn.Tanh()]
            cin = channels
        layers.append(nn.Conv2d(cin, 1, 3, padding=1))
        if pool > 1:
            layers.append(nn.MaxPool2d(pool))
        self.net = nn.Sequential(*layers)
        self.pool = pool
        self.receptive_field = 2 * (depth + 1) + 1  # smallest view it needs, low-res px

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)[:, 0]


@register_model("ats")
class ATS(nn.Module):
    """
    Args:
        num_classes: K.
        in_chans: image channels.
        scale: low-resolution view side / image side (0.12: 1500 px -> 180 px).
        patch_size: P, full-resolution patch side.
        locations: N, patches per image (`forward(locations=...)` overrides).
        replace: sample with replacement (i.i.d.) instead of without (Gumbel-top-k, the reference).
        eval_mode: "sample" (as the reference; seeded by `eval_seed`, so repeatable) or "topk" (the
            N most attended positions, weighted as a without-replacement draw in that order).
        backbone: the patch feature network by name ("ats_mnist" is the reference's).
        attention_channels, attention_depth, attention_pool: the attention net.
        smoothing: epsilon of a = (1 - eps) softmax(z) + eps / K_pos (never exactly 0).
        entropy_weight: lambda of the entropy regulariser.
    """

    def __init__(self, num_classes: int, in_chans: int = 1, scale: float = 0.12, patch_size: int = 50,
                 locations: int = 10, replace: bool = False, eval_mode: str = "sample", eval_seed: int = 0,
                 backbone: str | Backbone = "ats_mnist", backbone_kwargs: dict | None = None,
                 attention_channels: int = 8, attention_depth: int = 2, attention_pool: int = 1,
                 smoothing: float = 1e-5, entropy_weight: float = 1e-4, antialias: bool = True) -> None:
        super().__init__()
        if not 0.0 < scale <= 1.0:
            raise FoveateError(f"scale must be in (0, 1], got {scale}")
        if patch_size < 1:
            raise FoveateError(f"patch_size must be >= 1 px, got {patch_size}")
        if eval_mode not in ("sample", "topk"):
            raise FoveateError(f"unknown eval_mode {eval_mode!r} (use sample or topk)")
        if not 0.0 <= smoothing < 1.0:
            raise FoveateError(f"smoothing must be in [0, 1), got {smoothing}")
        self.num_classes, self.in_chans, self.scale, self.patch_size = num_classes, in_chans, scale, patch_size
        self.replace, self.eval_mode, self.eval_seed = replace, eval_mode, eval_seed
        self.smoothing, self.entropy_weight, self.antialias = smoothing, entropy_weight, antialias
        self.default_locations = self.budget(locations)
        self.attention = AttentionNet(in_chans, attention_channels, attention_depth, attention_pool)
        self.features = backbone if isinstance(backbone, nn.Module) else create_backbone(
            backbone, in_chans=in_chans, **(backbone_kwargs or {}))
        self.head = nn.Linear(self.features.num_features, num_classes)

    def budget(self, locations) -> int:
        if isinstance(locations, bool) or not isinstance(locations, int) or locations < 1:
            raise FoveateError(f"locations (patches per image) must be a positive integer, got {locations!r}")
        return locations

    def view_size(self, height: int, width: int) -> tuple[int, int]:
        return max(1, round(height * self.scale)), max(1, round(width * self.scale))

    def attention_map(self, x: Tensor | RegionSource) -> Tensor:
        """x: (B, C, H, W) in [0, 1] or a source -> a: (B, G_h, G_w), the smoothed attention distribution."""
        src = as_source(x, self.in_chans)
        height, width = src.size
        h, w = self.view_size(height, width)
        need = max(self.attention.receptive_field, self.attention.pool)
        if min(h, w) < need:
            raise FoveateError(f"the low-resolution view of a {width}x{height} image is {w}x{h} px, smaller than "
                               f"the attention net's receptive field ({need} px); raise scale or use larger images")
        z = self.attention(network_range(src.view((h, w), self.antialias)))  # (B, G_h, G_w)
        # Documented clamping: non-finite logits (a diverged attention net) become finite, and the
        # smoothing keeps every position's probability >= eps / K: the outputs are never NaN.
        z = torch.nan_to_num(z, nan=0.0, posinf=1e4, neginf=-1e4)
        b, gh, gw = z.shape
        a = torch.softmax(z.reshape(b, -1), dim=-1)
        a = (1.0 - self.smoothing) * a + self.smoothing / a.shape[-1]
        return a.reshape(b, gh, gw)

    def draw(self, a: Tensor, n: int) -> tuple[Tensor, bool]:
        """Positions (B, n) in draw order, and whether they count as with-replacement draws."""
        if not self.training and self.eval_mode == "topk":
            return topk_cells(a, n, order="score"), False
        generator = None
        if not self.training:  # repeatable evaluation
            generator = torch.Generator(device=a.device).manual_seed(self.eval_seed)
        if self.replace:
            return sample_with_replacement(a, n, generator), True
        return sample_without_replacement(a, n, generator), False

    def forward(self, x: Tensor | RegionSource, locations: int | None = None) -> Output:
        """x: (B, C, H, W) in [0, 1] at full resolution, or a `RegionSource` (only the N patches
        are read at full resolution). locations: N patches (default: as built)."""
        n = self.default_locations if locations is None else self.budget(locations)
        src = as_source(x, self.in_chans, self.patch_size, f"the patch size {self.patch_size}")
        (height, width), b = src.size, src.batch
        att = self.attention_map(src)  # (B, G_h, G_w)
        gh, gw = att.shape[1:]
        a = att.reshape(b, -1)  # (B, K_pos)
        idx, replace = self.draw(a, n)  # (B, N)
        top, left = _corners(gh, gw, *self.view_size(height, width), height, width, self.patch_size, src.device)
        top, left = top[idx // gw], left[idx % gw]  # (B, N) full-res px
        p = self.patch_size
        patches = src.crop(top, left, (p, p))  # (B*N, C, P, P); zeros outside the image
        _, pooled = self.features(network_range(patches))  # (B*N, D)
        feats = F.normalize(pooled, dim=-1).reshape(b, n, -1)  # (B, N, D)
        pooled_estimate = expectation(a, feats, idx, replace)  # (B, D)
        logits = self.head(pooled_estimate)
        boxes = torch.stack([left, top, left + p, top + p], dim=-1).float()  # (B, N, 4)
        glimpses = Glimpses(1, boxes, a.detach().gather(1, idx), torch.ones_like(idx, dtype=torch.bool),
                            heatmap=att.detach())
        return Output(logits=logits, trace=[glimpses], extras={"attention": a})

    def loss(self, out: Output, target: Tensor) -> dict[str, Tensor]:
        """Cross-entropy + lambda sum a log a (entropy regulariser)."""
        ce = F.cross_entropy(out.logits, class_targets(target, "ATS"))
        neg_entropy = entropy_regulariser(out.extras["attention"])
        return {"loss": ce + self.entropy_weight * neg_entropy, "ce": ce.detach(),
                "entropy": -neg_entropy.detach()}


@lru_cache(maxsize=64)
def _corner_lists(gh: int, gw: int, h: int, w: int, height: int, width: int, patch: int):
    return projected_corners(gh, h, height, patch), projected_corners(gw, w, width, patch)


def _corners(gh, gw, h, w, height, width, patch, device) -> tuple[Tensor, Tensor]:
    """(G_h,), (G_w,) long patch corners of every attention cell, in full-resolution px."""
    rows, cols = _corner_lists(gh, gw, h, w, height, width, patch)
    return torch.tensor(rows, device=device), torch.tensor(cols, device=device)

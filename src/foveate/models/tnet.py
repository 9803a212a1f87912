"""TNet, the Traversal Network (Papadopoulos et al., NeurIPS 2021).

Walks down the image's scale space: the whole image at the base resolution r, then the top-k
cells of a g x g grid cut from the full-resolution image and resized to r, and so on for L
levels. Every level is one batched backbone call over all items of all images. Each feature
gets a (y, x, level) encoding; the features are averaged and classified by one linear head.
"""
from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..backbones import Backbone, create_backbone
from ..errors import FoveateError
from ..geometry import Grid, child_boxes
from ..layers import set_level, sinusoid_encoding, split_batchnorm_by_level
from ..selection import RunningBaseline, reinforce_loss, topk_cells
from ..sources.region import RegionSource, as_source
from .common import class_targets, network_range
from .output import Glimpses, Output
from .registry import register_model


class LocationModule(nn.Module):
    """Scores the g_h x g_w cells of an item; p = softmax(z / ||z||_2).

    The L2 normalisation bounds how peaked p can get (at most ~0.104 for 25 cells), so it works
    as a ranking whose log-probabilities stay bounded, which keeps the policy term stable.
    """

    def __init__(self, fmap_channels: int, feat_dim: int, hidden: int = 256) -> None:
        super().__init__()
        self.coord_scale = nn.Parameter(torch.ones(2))
        self.coord_shift = nn.Parameter(torch.zeros(2))
        self.score = nn.Sequential(
            nn.Conv2d(fmap_channels + feat_dim + 2, hidden, 1),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(hidden, 1, 1),
        )

    def forward(self, cells: Tensor, pooled: Tensor) -> Tensor:
        """cells: (n, C, g_h, g_w) descriptors; pooled: (n, D). returns p: (n, g_h * g_w)."""
        n, _, gh, gw = cells.shape
        ys = torch.linspace(-1, 1, gh, device=cells.device)
        xs = torch.linspace(-1, 1, gw, device=cells.device)
        coords = torch.stack(torch.meshgrid(ys, xs, indexing="ij"))  # (2, g_h, g_w)
        coords = coords * self.coord_scale[:, None, None] + self.coord_shift[:, None, None]
        x = torch.cat([cells, pooled[:, :, None, None].expand(-1, -1, gh, gw),
                       coords.expand(n, -1, -1, -1)], dim=1)
        z = self.score(x).flatten(1)  # (n, g_h * g_w)
        return torch.softmax(F.normalize(z, dim=-1), dim=-1)


def _per_level(value, levels: int, name: str) -> list:
    """A scalar applies to every selection step; a list gives one value per step."""
    steps = levels - 1
    values = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else [value] * steps
    if len(values) != steps:
        raise FoveateError(f"{name} has {len(values)} values but a {levels}-level TNet selects {steps} times")
    return values


@register_model("tnet")
class TNet(nn.Module):
    """
    Args:
        num_classes: K.
        backbone: a registered name ("small_cnn", "timm/resnet18", ...) or a `Backbone`.
        in_chans: image channels (1 for digits, 3 for photos).
        levels: L, number of scales visited (L - 1 selection steps).
        grid: g, cells per axis of each selection step (int or one per step).
        overlap: cell side / crop side (int or one per step); cells overlap when g * overlap > 1.
        base_resolution: r, the side every item is resized to before the backbone.
        locations: default k per step (int or one per step); `forward(locations=...)` overrides.
        loss weights, as the reference: a (ce_weight), b (policy_image_weight), lambda
        (policy_weight); the running baseline starts at 0.5 with momentum 0.9.
        antialias: antialiased downscaling (the reference aliases; set False only to compare).
    """

    def __init__(self, num_classes: int, backbone: str | Backbone = "small_cnn", backbone_kwargs: dict | None = None,
                 in_chans: int = 1, levels: int = 2, grid: int | Sequence[int] = 5,
                 overlap: float | Sequence[float] = 0.34375, base_resolution: int = 77,
                 locations: int | Sequence[int] = 3, loc_hidden: int = 256, head_dropout: float = 0.0,
                 ce_weight: float = 0.3, policy_image_weight: float = 0.3, policy_weight: float = 0.1,
                 baseline_momentum: float = 0.9, antialias: bool = True) -> None:
        super().__init__()
        if levels < 1:
            raise FoveateError(f"levels must be >= 1, got {levels}")
        if base_resolution < 8:
            raise FoveateError(f"base_resolution must be >= 8 pixels, got {base_resolution}")
        for name, w in [("ce_weight", ce_weight), ("policy_image_weight", policy_image_weight)]:
            if not 0.0 <= w <= 1.0:
                raise FoveateError(f"{name} must be in [0, 1], got {w}")
        self.num_classes, self.in_chans, self.levels = num_classes, in_chans, levels
        self.grid_cells = [int(g) for g in _per_level(grid, levels, "grid")]
        self.overlap = [float(o) for o in _per_level(overlap, levels, "overlap")]
        self.default_locations = self.budget(locations)
        self.base_resolution, self.antialias = base_resolution, antialias
        self.a, self.b, self.lam = ce_weight, policy_image_weight, policy_weight

        self.backbone = backbone if isinstance(backbone, nn.Module) else create_backbone(
            backbone, in_chans=in_chans, **(backbone_kwargs or {}))
        # One set of BatchNorm statistics per level: no train/eval mismatch across scales.
        self._level_norms = split_batchnorm_by_level(self.backbone, levels)
        dim = self.backbone.num_features
        self.fuse = nn.Linear(2 * dim, dim)  # [pooled, sinusoid(y, x, level)] -> feature
        self.locator = LocationModule(self.backbone.fmap_channels, dim, loc_hidden)
        self.head_drop = nn.Dropout(head_dropout)
        self.head = nn.Linear(dim, num_classes)
        self.baseline = RunningBaseline(0.5, baseline_momentum)

    # -- geometry -------------------------------------------------------------------------
    def budget(self, locations) -> list[int]:
        """k per selection step for `locations` (int: every step); errors for impossible budgets."""
        ks = [int(k) for k in _per_level(locations, self.levels, "locations")]
        for step, (k, g) in enumerate(zip(ks, self.grid_cells), start=1):
            if not 1 <= k <= g * g:
                raise FoveateError(f"locations={k} at level {step} is impossible: it has {g * g} candidate cells")
        return ks

    def grids(self, height: int, width: int) -> list[Grid]:
        """The grid of every selection step for an image of this size."""
        return _grids(height, width, tuple(self.grid_cells), tuple(self.overlap))

    # -- forward --------------------------------------------------------------------------
    def forward(self, x: Tensor | RegionSource, locations: int | Sequence[int] | None = None) -> Output:
        """x: (B, C, H, W) in [0, 1] at full resolution, or a `RegionSource` (only the attended
        cells are read, and the first view comes from a pyramid level if the source has one).
        locations: k per step (default: as built)."""
        ks = self.default_locations if locations is None else self.budget(locations)
        src = as_source(x, self.in_chans, self.base_resolution, "the model's base resolution")
        (height, width), b, r = src.size, src.batch, self.base_resolution
        grids = self.grids(height, width)

        view = src.view((r, r), self.antialias)  # (n_l, C, r, r), n_1 = B
        boxes = torch.tensor([[0.0, 0.0, width, height]], device=src.device).expand(b, 4)  # (n_l, 4) full-res px
        pos = torch.zeros(b, 3, device=src.device)  # (n_l, 3): (y, x, level)
        feats, logps, trace = [], [], []
        for level in range(self.levels):
            set_level(self._level_norms, level)
            fmap, pooled = self.backbone(network_range(view))  # (n, C_loc, h, w), (n, D)
            feat = self.fuse(torch.cat([pooled, sinusoid_encoding(pos, pooled.shape[1])], dim=1))
            feats.append(feat.reshape(b, -1, feat.shape[1]))  # (B, n_l / B, D)
            if level == self.levels - 1:
                break
            grid, k = grids[level], ks[level]
            cells = F.adaptive_avg_pool2d(fmap, (grid.h.cells, grid.w.cells))
            probs = self.locator(cells.detach(), pooled.detach())  # (n, g*g); trained by the policy only
            idx = topk_cells(probs, k)  # (n, k), deterministic
            candidates = child_boxes(boxes, grid)  # (n, g*g, 4)
            chosen = torch.zeros_like(probs, dtype=torch.bool).scatter_(1, idx, True)
            trace.append(Glimpses(level + 1, candidates.reshape(b, -1, 4), probs.detach().reshape(b, -1),
                                  chosen.reshape(b, -1)))
            logps.append(torch.log(probs.gather(1, idx) + 1e-10).reshape(b, -1))  # one per child, in child order
            boxes = candidates.gather(1, idx[..., None].expand(-1, -1, 4)).reshape(-1, 4)  # (n*k, 4), item-major
            corners = boxes.reshape(b, -1, 4).long()  # (B, n*k/B, 4)
            view = src.crop(corners[..., 1], corners[..., 0], grid.cell_size, (r, r), self.antialias)
            pos = _child_positions(pos, idx, grid, level + 1)

        features = torch.cat(feats, dim=1)  # (B, N, D), N = 1 + k_1 + k_1 k_2 + ...
        aux = self.head(self.head_drop(features))  # (B, N, K)
        logits = self.head(self.head_drop(features.mean(dim=1)))  # (B, K)
        logp = torch.cat(logps, dim=1) if logps else logits.new_zeros(b, 0)  # (B, N - 1)
        return Output(logits=logits, aux_logits=aux, trace=trace, extras={"logp": logp})

    # -- training objective -----------------------------------------------------------------
    def loss(self, out: Output, target: Tensor) -> dict[str, Tensor]:
        """a CE(final) + (1-a) CE(every feature) + lambda [b image-level + (1-b) per-feature policy].

        The policy rewards are top-1 correctness against the running baseline (the value before
        this step's update); `update_baseline` must be called afterwards with `reward`.
        """
        target = class_targets(target, "TNet")
        bsz, n, k = out.aux_logits.shape
        ce = F.cross_entropy(out.logits, target)
        feature_ce = F.cross_entropy(out.aux_logits.reshape(bsz * n, k), target.repeat_interleave(n))
        correct = (out.logits.argmax(-1) == target).float()  # (B,)
        feature_correct = (out.aux_logits[:, 1:].argmax(-1) == target[:, None]).float()  # (B, N-1)
        logp = out.extras["logp"]  # (B, N-1)
        bl = self.baseline.value
        if logp.shape[1]:
            policy = (self.b * reinforce_loss(logp.sum(dim=1), correct, bl)
                      + (1 - self.b) * reinforce_loss(logp, feature_correct, bl))
            reward = self.b * correct.mean() + (1 - self.b) * feature_correct.mean()
        else:  # one level: nothing is selected
            policy, reward = ce.new_zeros(()), correct.mean()
        total = self.a * ce + (1 - self.a) * feature_ce + self.lam * policy
        return {"loss": total, "ce": ce.detach(), "feature_ce": feature_ce.detach(), "policy": policy.detach(),
                "reward": reward.detach(), "baseline": bl.detach().clone()}

    def update_baseline(self, reward: Tensor) -> None:
        self.baseline.update(reward)


@lru_cache(maxsize=64)
def _grids(height: int, width: int, cells: tuple[int, ...], overlap: tuple[float, ...]) -> list[Grid]:
    grids, h, w = [], height, width
    for g, o in zip(cells, overlap):
        grid = Grid.over(h, w, g, o)
        grids.append(grid)
        h, w = grid.cell_size
    return grids


def _child_positions(pos: Tensor, idx: Tensor, grid: Grid, level: int) -> Tensor:
    """(y, x, s) of each chosen cell: y' = g y + i, x' = g x + j, s' = level (0-based)."""
    k = idx.shape[1]
    parent = pos.repeat_interleave(k, dim=0)  # (n*k, 3)
    flat = idx.reshape(-1)
    i, j = (flat // grid.w.cells).to(pos), (flat % grid.w.cells).to(pos)
    return torch.stack([parent[:, 0] * grid.h.cells + i, parent[:, 1] * grid.w.cells + j,
                        torch.full_like(i, float(level))], dim=1)

"""BatchNorm with one set of statistics per scale level.

Hard-attention models run one backbone over views of very different scales (a whole canvas
shrunk 8x, then native-resolution cells). Shared BatchNorm would normalise each level by its
own batch in training but by a blend of all levels at evaluation (the TNet reference's
train/eval mismatch). Giving each level its own BatchNorm keeps BatchNorm's fast, stable
training (GroupNorm learns sparse digit canvases far more slowly; see README) without the
mismatch.
"""
from __future__ import annotations

import copy

from torch import Tensor, nn


class LevelBatchNorm2d(nn.Module):
    """`levels` independent copies of a BatchNorm2d; `level` picks the one in use."""

    def __init__(self, bn: nn.BatchNorm2d, levels: int) -> None:
        super().__init__()
        self.norms = nn.ModuleList(copy.deepcopy(bn) for _ in range(levels))
        self.level = 0

    def forward(self, x: Tensor) -> Tensor:
        return self.norms[self.level](x)


def split_batchnorm_by_level(module: nn.Module, levels: int) -> list[LevelBatchNorm2d]:
    """Replace every BatchNorm inside `module` (timm's fused BatchNormAct2d included: the copies
    keep their activation) by a `LevelBatchNorm2d`; returns them so the caller can switch levels.
    Frozen BatchNorm has no batch statistics and is left alone."""
    replaced = []
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            new = LevelBatchNorm2d(child, levels)
            setattr(module, name, new)
            replaced.append(new)
        else:
            replaced += split_batchnorm_by_level(child, levels)
    return replaced


def set_level(norms: list[LevelBatchNorm2d], level: int) -> None:
    for n in norms:
        n.level = level

"""A small GroupNorm CNN sized for digit-like data.

GroupNorm, not BatchNorm: hard-attention models run one backbone over views of very different
scales, and BatchNorm would keep one set of running statistics for all of them (the TNet
reference's train/eval mismatch). GroupNorm has no running statistics.
"""
from __future__ import annotations

from torch import Tensor, nn

from .registry import Backbone, register_backbone


def conv_gn(cin: int, cout: int, kernel: int, stride: int, groups: int = 8) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=False),
        nn.GroupNorm(min(groups, cout), cout),
        nn.ReLU(inplace=True),
    )


class SmallCNN(Backbone):
    """stem (5x5, stride 2), then per stage a stride-2 and a stride-1 3x3 conv. Output stride
    2 ** (1 + len(widths))."""

    def __init__(self, in_chans: int = 1, widths: tuple[int, ...] = (32, 64, 128), stem: int = 32,
                 dropout: float = 0.0) -> None:
        super().__init__()
        layers = [conv_gn(in_chans, stem, 5, 2)]
        cin = stem
        for w in widths:
            layers += [conv_gn(cin, w, 3, 2), conv_gn(w, w, 3, 1)]
            cin = w
        self.body = nn.Sequential(*layers)
        self.drop = nn.Dropout(dropout)
        self.num_features = self.fmap_channels = cin

    def forward_features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward_head(self, fmap: Tensor) -> Tensor:
        return self.drop(fmap.mean(dim=(2, 3)))


@register_backbone("small_cnn")
def small_cnn(**kwargs) -> SmallCNN:
    return SmallCNN(**kwargs)


@register_backbone("tiny_cnn")
def tiny_cnn(**kwargs) -> SmallCNN:
    """For tests and the quick start: a few hundred k parameters."""
    kwargs.setdefault("widths", (16, 32, 64))
    kwargs.setdefault("stem", 16)
    return SmallCNN(**kwargs)

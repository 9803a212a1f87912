"""A small CNN sized for digit-like data.

norm="batch" (default) uses BatchNorm, which learns sparse canvases (a few small digits in a
mostly empty crop) several times faster than GroupNorm; models that run the backbone over
several scales give each scale its own BatchNorm statistics (`layers.split_batchnorm_by_level`).
norm="group" has no running statistics at all.
"""
from __future__ import annotations

from torch import Tensor, nn

from ..errors import FoveateError
from .registry import Backbone, register_backbone


def conv_norm_act(cin: int, cout: int, kernel: int, stride: int, norm: str) -> nn.Sequential:
    if norm == "batch":
        layer = nn.BatchNorm2d(cout)
    elif norm == "group":
        layer = nn.GroupNorm(min(8, cout), cout)
    else:
        raise FoveateError(f"unknown norm {norm!r} for small_cnn (use batch or group)")
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, bias=False), layer,
                         nn.ReLU(inplace=True))


class SmallCNN(Backbone):
    """stem (5x5, stride 2), then per stage a stride-2 and a stride-1 3x3 conv. Output stride
    2 ** (1 + len(widths))."""

    def __init__(self, in_chans: int = 1, widths: tuple[int, ...] = (32, 64, 128), stem: int = 32,
                 dropout: float = 0.0, norm: str = "batch") -> None:
        super().__init__()
        layers = [conv_norm_act(in_chans, stem, 5, 2, norm)]
        cin = stem
        for w in widths:
            layers += [conv_norm_act(cin, w, 3, 2, norm), conv_norm_act(w, w, 3, 1, norm)]
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

"""The ATS reference feature network for Megapixel MNIST: conv7x7/32 then three conv3x3/32, all
ReLU and valid padding, global max pool (D = 32). No normalisation layer: every patch is scored
on its own, with no batch statistics to disagree between training and inference."""
from __future__ import annotations

from torch import Tensor, nn

from .registry import Backbone, register_backbone


class ATSFeatureNet(Backbone):
    receptive_field = 13  # 7 + 3 * 2 px: patches must be at least this large

    def __init__(self, in_chans: int = 1, width: int = 32, depth: int = 3) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_chans, width, 7), nn.ReLU(inplace=True)]
        for _ in range(depth):
            layers += [nn.Conv2d(width, width, 3), nn.ReLU(inplace=True)]
        self.body = nn.Sequential(*layers)
        self.num_features = self.fmap_channels = width

    def forward_features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward_head(self, fmap: Tensor) -> Tensor:
        return fmap.amax(dim=(2, 3))


@register_backbone("ats_mnist")
def ats_mnist(**kwargs) -> ATSFeatureNet:
    return ATSFeatureNet(**kwargs)

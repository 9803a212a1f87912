"""Backbones created by name, as timm creates models: `create_backbone("small_cnn")`,
`create_backbone("timm/resnet18")`."""
from __future__ import annotations

from torch import Tensor, nn

from ..registry import Registry

BACKBONES = Registry("backbone")
register_backbone = BACKBONES.register


class Backbone(nn.Module):
    """The contract every model relies on.

    forward_features: (n, C_in, r, r) -> (n, fmap_channels, h, w), the unpooled map whose cells
        describe image regions (a selector reads it).
    forward_head:     that map -> (n, num_features), the pooled vector a classifier reads.
    """

    num_features: int
    fmap_channels: int

    def forward_features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward_head(self, fmap: Tensor) -> Tensor:
        return fmap.mean(dim=(2, 3))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        fmap = self.forward_features(x)
        return fmap, self.forward_head(fmap)


def list_backbones() -> list[str]:
    return BACKBONES.names() + ["timm/<any timm model name>"]


def create_backbone(name: str, in_chans: int = 3, **kwargs) -> Backbone:
    if name.startswith("timm/"):
        from .timm_backbone import TimmBackbone

        return TimmBackbone(name[len("timm/"):], in_chans=in_chans, **kwargs)
    return BACKBONES.create(name, in_chans=in_chans, **kwargs)

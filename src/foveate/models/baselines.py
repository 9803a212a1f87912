"""The two reference points every hard-attention paper compares against: the same backbone on the
whole full-resolution image (`fullres_cnn`), and on the image downsampled to a low-resolution view
(`lowres_cnn`). Neither selects anything, so their trace is empty and they take no budget."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from ..backbones import Backbone, create_backbone
from ..errors import FoveateError
from ..sources.region import RegionSource, as_source
from .common import class_targets, network_range
from .output import Output
from .registry import register_model


class WholeImageCNN(nn.Module):
    """backbone -> global pool -> linear, on the whole image at `scale` of its resolution.

    pool="max" suits sparse evidence (a few digits in an empty megapixel canvas): the average over
    a 94x94 feature map dilutes five small objects; "avg" is the usual choice for dense images.
    """

    reads_full_image = True  # the whole image is decoded and passed through the network
    name = "whole_image_cnn"

    def __init__(self, num_classes: int, backbone: str | Backbone = "small_cnn", backbone_kwargs: dict | None = None,
                 in_chans: int = 1, scale: float = 1.0, pool: str = "max", dropout: float = 0.0,
                 antialias: bool = True) -> None:
        super().__init__()
        if not 0.0 < scale <= 1.0:
            raise FoveateError(f"scale must be in (0, 1], got {scale}")
        if pool not in ("avg", "max"):
            raise FoveateError(f"unknown pool {pool!r} (use avg or max)")
        self.num_classes, self.in_chans, self.scale, self.pool, self.antialias = num_classes, in_chans, scale, pool, antialias
        self.backbone = backbone if isinstance(backbone, nn.Module) else create_backbone(
            backbone, in_chans=in_chans, **(backbone_kwargs or {}))
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(self.backbone.fmap_channels, num_classes)

    def budget(self, locations) -> None:
        if locations is not None:
            raise FoveateError(f"{self.name} classifies the whole image without selecting regions; it takes "
                               f"no locations budget (got {locations!r})")

    def view_size(self, height: int, width: int) -> tuple[int, int]:
        return max(1, round(height * self.scale)), max(1, round(width * self.scale))

    def forward(self, x: Tensor | RegionSource, locations: None = None) -> Output:
        """x: (B, C, H, W) in [0, 1] or a `RegionSource` (read whole, at `scale`; from a pyramid
        level when the source has one). returns logits (B, K), no trace."""
        self.budget(locations)
        src = as_source(x, self.in_chans)
        view = src.view(self.view_size(*src.size), self.antialias)  # (B, C, h, w)
        fmap = self.backbone.forward_features(network_range(view))  # (B, D, h', w')
        pooled = fmap.amax(dim=(2, 3)) if self.pool == "max" else fmap.mean(dim=(2, 3))  # (B, D)
        return Output(logits=self.head(self.drop(pooled)))

    def loss(self, out: Output, target: Tensor) -> dict[str, Tensor]:
        ce = F.cross_entropy(out.logits, class_targets(target, self.name))
        return {"loss": ce, "ce": ce.detach()}


@register_model("fullres_cnn")
class FullResCNN(WholeImageCNN):
    """The backbone over every full-resolution pixel: the accuracy reference, and the cost hard
    attention avoids (activations grow with the image area)."""

    name = "fullres_cnn"

    def __init__(self, num_classes: int, **kwargs) -> None:
        if kwargs.get("scale", 1.0) != 1.0:
            raise FoveateError("fullres_cnn runs at full resolution; use lowres_cnn for a downsampled view")
        super().__init__(num_classes, **kwargs)


@register_model("lowres_cnn")
class LowResCNN(WholeImageCNN):
    """The backbone on the low-resolution view only (scale 0.12: 1500 px -> 180 px, as ATS's
    attention view): the cost floor, and what is lost when small objects shrink to a few pixels."""

    name = "lowres_cnn"
    reads_full_image = False  # only the downsampled view (from a pyramid level it would cost no full-res reads)

    def __init__(self, num_classes: int, scale: float = 0.12, **kwargs) -> None:
        super().__init__(num_classes, scale=scale, **kwargs)

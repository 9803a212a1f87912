"""Any timm model as a backbone, with an explicit choice of normalisation across scales."""
from __future__ import annotations

from pathlib import Path

import timm
import timm.layers
from torch import Tensor, nn

from ..errors import FoveateError
from .registry import Backbone


def batchnorm_to_groupnorm(module: nn.Module, groups: int = 32) -> nn.Module:
    """Replace every BatchNorm (plain or timm's fused BatchNormAct2d) by GroupNorm, keeping the
    activation. Used for models trained from scratch over several scales."""
    for name, child in module.named_children():
        if isinstance(child, timm.layers.BatchNormAct2d):
            c = child.num_features
            new = timm.layers.GroupNormAct(c, num_groups=_groups(c, groups), apply_act=False)
            new.act, new.drop = child.act, child.drop
        elif isinstance(child, nn.BatchNorm2d):
            c = child.num_features
            new = nn.GroupNorm(_groups(c, groups), c)
        else:
            batchnorm_to_groupnorm(child, groups)
            continue
        setattr(module, name, new)
    return module


def _groups(channels: int, preferred: int) -> int:
    g = min(preferred, channels)
    while channels % g:
        g -= 1
    return g


class TimmBackbone(Backbone):
    """fmap: the last stage of `forward_features`; pooled: its spatial mean.

    norm: "batch" (default from scratch) keeps the model's BatchNorm (multi-scale models such as
    TNet then give each level its own statistics); "frozen" (default with pretrained weights)
    freezes BatchNorm statistics; "group" swaps BatchNorm for GroupNorm (no running statistics).
    pretrained: path to a local weights file (no hub downloads).
    """

    def __init__(self, model_name: str, in_chans: int = 3, pretrained: str | None = None,
                 norm: str | None = None, **kwargs) -> None:
        super().__init__()
        if model_name not in timm.list_models():
            raise FoveateError(f"unknown timm model {model_name!r} (see timm.list_models())")
        if pretrained is not None and not Path(pretrained).is_file():
            raise FoveateError(f"pretrained weights file {pretrained} does not exist")
        extra = {}
        if pretrained is not None:
            extra = dict(pretrained=True, pretrained_cfg_overlay=dict(file=str(pretrained)))
        try:
            self.model = timm.create_model(model_name, num_classes=0, global_pool="", in_chans=in_chans,
                                           **extra, **kwargs)
        except (TypeError, RuntimeError) as e:
            raise FoveateError(f"cannot create timm model {model_name!r}: {e}") from None
        norm = norm or ("frozen" if pretrained else "batch")
        if norm == "group":
            batchnorm_to_groupnorm(self.model)
        elif norm == "frozen":
            self.model = timm.layers.freeze_batch_norm_2d(self.model)
        elif norm != "batch":
            raise FoveateError(f"unknown norm {norm!r} for a timm backbone (use group, frozen or batch)")
        self.num_features = self.fmap_channels = self.model.num_features

    def forward_features(self, x: Tensor) -> Tensor:
        return self.model.forward_features(x)

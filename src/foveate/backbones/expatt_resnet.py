"""ResNet-18 with and without ExpAtt, by name: `resnet18`, `expatt_resnet18`.

Both are built from timm's ResNet basic blocks and stage builder (so the plain one is exactly the
baseline the attention is compared against), with a stem chosen for the input size and a width
multiplier for CPU budgets (width 64 with the imagenet stem is timm's resnet18 body, 11,176,512
parameters). `expatt_resnet18` replaces the first 3x3 conv of every basic block in the chosen stages
by `ExpAttConv2d`, AA-Net's augmented convolution with ExpAtt as the attention branch.

Labels as in `explicit_attention.md`:
- the paper [paper] compares ExpAtt-Net with ResNets of the same depth; its stages, blocks and
  channel split are not known;
- conv branch beside an attention branch, concatenated, then the block's own BN and ReLU
  [inferred, mirrors AA-Net]; it replaces the block's first 3x3 conv, the one carrying the stride
  (a basic block has two 3x3 convs; the spec's bottleneck has one) [choice];
- attention channels C_att = kappa * C_out with kappa 0.25 [choice]; a stride-2 block averages
  its input over the conv's own 3x3 / stride-2 / pad-1 window first (the spec's 2x2 pool gives
  one row fewer than the conv on odd maps, e.g. 7 -> 3 vs 4; averaging commutes with the
  bias-free value projection, so pooling first is the same and cheaper) [choice];
- every stage by default; `expatt_stages=(2, 3, 4)` is the spec's conv3-conv5 alternative [choice];
- mode "residual": conv3x3(x) + gamma * BN(ExpAtt(x)) with gamma = 0 at init, a full-width conv
  kept (the spec's alternative for reusing pretrained weights) [choice].
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.models.resnet import BasicBlock, make_blocks
from torch import Tensor, nn

from ..errors import FoveateError
from ..layers.expatt import ExpAtt
from .registry import Backbone, register_backbone

STEMS = ("cifar", "imagenet")
MODES = ("concat", "residual")


def _init_conv(conv: nn.Conv2d) -> nn.Conv2d:
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")  # as timm's ResNet
    return conv


class ExpAttConv2d(nn.Module):
    """A 3x3 conv with an ExpAtt branch: (N, C_in, H, W) -> (N, C_out, ceil(H/s), ceil(W/s)).

    concat:   [conv3x3(x) (C_out - C_att channels), ExpAtt(pool_s(x)) (C_att channels)]
    residual: conv3x3(x) (C_out) + gamma * BN(ExpAtt(pool_s(x))) (C_out), gamma initialised to 0.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, *, kappa: float = 0.25,
                 mode: str = "concat", sigma_init: float | None = None, sigma_min: float = 1e-3,
                 coords: str = "normalized") -> None:
        super().__init__()
        if mode not in MODES:
            raise FoveateError(f"expatt mode must be one of {', '.join(MODES)}, got {mode!r}")
        if not 0 < kappa < 1:
            raise FoveateError(f"expatt kappa (attention share of the channels) must be in (0, 1), got {kappa!r}")
        if stride not in (1, 2):
            raise FoveateError(f"ExpAttConv2d supports stride 1 or 2, got {stride}")
        self.mode, self.stride = mode, stride
        att = out_channels if mode == "residual" else min(out_channels - 1, max(1, round(kappa * out_channels)))
        conv_out = out_channels if mode == "residual" else out_channels - att
        self.conv = _init_conv(nn.Conv2d(in_channels, conv_out, 3, stride, padding=1, bias=False))
        self.att = ExpAtt(in_channels, att, sigma_init=sigma_init, sigma_min=sigma_min, coords=coords)
        _init_conv(self.att.value)
        self.norm = nn.BatchNorm2d(att) if mode == "residual" else None
        self.gamma = nn.Parameter(torch.zeros(())) if mode == "residual" else None

    def forward(self, x: Tensor) -> Tensor:
        conv = self.conv(x)  # (N, C_out - C_att or C_out, H', W')
        a = x if self.stride == 1 else F.avg_pool2d(x, 3, 2, padding=1, count_include_pad=False)
        o = self.att(a)  # (N, C_att, H', W')
        if self.mode == "concat":
            return torch.cat([conv, o], dim=1)
        return conv + self.gamma * self.norm(o)


class ResNetBackbone(Backbone):
    """ResNet with timm's basic blocks and stage builder; fmap = the last stage, pooled = its mean.

    stem "cifar": 3x3 conv, stride 1, no max pool (output stride 8: a 28-px digit gives a 4x4
    map); "imagenet": timm's 7x7 / 2 conv and 3x3 / 2 max pool (output stride 32).
    width: channels of the first stage (64 in ResNet-18), doubled at every stage.
    expatt: False for the plain ResNet; True inserts ExpAttConv2d in `expatt_stages` (1-4).
    """

    def __init__(self, in_chans: int = 3, layers: Sequence[int] = (2, 2, 2, 2), width: int = 64,
                 stem: str = "cifar", expatt: bool = False, expatt_stages: Sequence[int] = (1, 2, 3, 4),
                 kappa: float = 0.25, mode: str = "concat", sigma_init: float | None = None,
                 sigma_min: float = 1e-3, coords: str = "normalized") -> None:
        super().__init__()
        if stem not in STEMS:
            raise FoveateError(f"resnet stem must be one of {', '.join(STEMS)}, got {stem!r}")
        if not isinstance(width, int) or width < 2:
            raise FoveateError(f"resnet width must be an integer >= 2, got {width!r}")
        if len(layers) != 4 or not all(isinstance(n, int) and n >= 1 for n in layers):
            raise FoveateError(f"resnet layers must be four block counts >= 1, got {tuple(layers)!r}")
        stages = tuple(expatt_stages) if expatt else ()
        if not set(stages) <= {1, 2, 3, 4}:
            raise FoveateError(f"expatt_stages must be among 1, 2, 3, 4, got {tuple(expatt_stages)!r}")
        if stem == "cifar":
            stem_layers = [nn.Conv2d(in_chans, width, 3, 1, padding=1, bias=False)]
        else:
            stem_layers = [nn.Conv2d(in_chans, width, 7, 2, padding=3, bias=False)]
        stem_layers += [nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        if stem == "imagenet":
            stem_layers.append(nn.MaxPool2d(3, 2, padding=1))
        self.stem = nn.Sequential(*stem_layers)
        channels = tuple(width * 2 ** i for i in range(4))
        # timm's stage builder (its ResNet class fixes the stem at 64 channels)
        stage_modules, _ = make_blocks((BasicBlock,) * 4, channels, tuple(layers), inplanes=width,
                                       act_layer=nn.ReLU, norm_layer=nn.BatchNorm2d)
        self.stages = nn.Sequential(OrderedDict(stage_modules))  # layer1 .. layer4
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                _init_conv(m)
            if hasattr(m, "zero_init_last"):  # timm's init: last BN of each residual branch at 0
                m.zero_init_last()
        for s in stages:
            for block in getattr(self.stages, f"layer{s}"):
                c = block.conv1
                block.conv1 = ExpAttConv2d(c.in_channels, c.out_channels, c.stride[0], kappa=kappa, mode=mode,
                                           sigma_init=sigma_init, sigma_min=sigma_min, coords=coords)
        self.stem_type, self.expatt_stages = stem, stages
        self.num_features = self.fmap_channels = channels[-1]

    def forward_features(self, x: Tensor) -> Tensor:  # (n, C, r, r) -> (n, 8 width, r/8 or r/32, ...)
        return self.stages(self.stem(x))

    def sigmas(self) -> dict[str, float]:
        """Current radius of every ExpAtt module, by module name (empty for the plain ResNet)."""
        return {name: float(m.sigma.detach()) for name, m in self.named_modules() if isinstance(m, ExpAtt)}


@register_backbone("resnet18")
def resnet18(**kwargs) -> ResNetBackbone:
    """Plain ResNet-18 (timm basic blocks) with a cifar or imagenet stem and a width multiplier:
    the baseline of `expatt_resnet18`."""
    if "expatt" in kwargs:
        raise FoveateError("resnet18 has no ExpAtt; use backbone 'expatt_resnet18'")
    return ResNetBackbone(**kwargs)


@register_backbone("expatt_resnet18")
def expatt_resnet18(**kwargs) -> ResNetBackbone:
    """ResNet-18 with ExpAtt beside the first 3x3 conv of every basic block (see module docstring)."""
    if "expatt" in kwargs:
        raise FoveateError("expatt_resnet18 always has ExpAtt; use backbone 'resnet18' for the plain one")
    return ResNetBackbone(expatt=True, **kwargs)

"""BagNet backbones: ResNet-50-like networks with small receptive fields (Brendel & Bethge, 2019).

Every convolution uses valid padding, so each output cell sees exactly one image patch (its
receptive field) and the image's class evidence is a bag of per-patch logits. `BagNet` is the
generic builder (kernel3 per group decides how many leading blocks of a group use a 3x3 middle
conv, and thereby the receptive field); `bagnet77_lowd` is Saccader's representation network
(docs: shared/reference/saccader.md §2): RF 77, stride 8, a 19x19 grid for a 224x224 input.

Contract (`Backbone`): forward_features -> the per-cell feature map (the 512-d "what" features
when a low-dimensional bottleneck is configured, else the last group's output); forward_head ->
its spatial mean. `forward_maps` returns all three maps a Saccader needs (features2d, what,
logits2d); `logits2d(what)` applies the per-cell 1x1 classifier.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from torch import Tensor, nn

from ..errors import FoveateError
from .registry import Backbone, register_backbone


class BagNetMaps(NamedTuple):
    features: Tensor       # (n, expansion * planes[-1], h, w): last group's output
    what: Tensor           # (n, fmap_channels, h, w): low-dimensional features (= features if none)
    logits: Tensor | None  # (n, num_classes, h, w): per-cell class logits (None without a classifier)


def _bn(channels: int, zero: bool = False) -> nn.BatchNorm2d:
    # TF momentum 0.9 is PyTorch momentum 0.1; eps 1e-5 (spec §9)
    bn = nn.BatchNorm2d(channels, eps=1e-5, momentum=0.1)
    if zero:
        nn.init.zeros_(bn.weight)
    return bn


class BagNetBottleneck(nn.Module):
    """1x1 -> kxk (stride, valid) -> 1x1 (4p, BN gamma 0) + shortcut, ReLU.

    The shortcut is cropped so it aligns with the valid kxk conv's output ("center": (k-1)/2 px on
    every side, as Saccader's reference; "corner": cut from the bottom/right, as the public BagNet
    code), then projected (1x1, stride) when the stride or the channel count changes.
    bn_quirk=True reproduces Saccader's reference: the projection's BN normalises the main branch
    instead of the projected shortcut (same parameter count).
    """

    def __init__(self, cin: int, planes: int, kernel: int, stride: int, expansion: int = 4,
                 crop: str = "center", bn_quirk: bool = False) -> None:
        super().__init__()
        cout = planes * expansion
        self.kernel, self.stride, self.crop, self.bn_quirk = kernel, stride, crop, bn_quirk
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = _bn(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel, stride=stride, padding=0, bias=False)
        self.bn2 = _bn(planes)
        self.conv3 = nn.Conv2d(planes, cout, 1, bias=False)
        self.bn3 = _bn(cout, zero=True)
        self.relu = nn.ReLU(inplace=True)
        self.proj: nn.Conv2d | None = None
        self.proj_bn: nn.BatchNorm2d | None = None
        if stride != 1 or cin != cout:
            self.proj = nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
            self.proj_bn = _bn(cout)

    def forward(self, x: Tensor) -> Tensor:              # (n, cin, H, W) -> (n, cout, H', W')
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        short = x
        c = self.kernel - 1
        if c:
            short = short[:, :, c // 2:short.shape[2] - (c - c // 2), c // 2:short.shape[3] - (c - c // 2)] \
                if self.crop == "center" else short[:, :, :short.shape[2] - c, :short.shape[3] - c]
        if self.proj is not None:
            short = self.proj(short)
            if self.bn_quirk:
                out = self.proj_bn(out)
            else:
                short = self.proj_bn(short)
        if short.shape[-2:] != out.shape[-2:]:   # odd sizes with stride: align as the valid conv does
            short = short[:, :, :out.shape[2], :out.shape[3]]
        return self.relu(out + short)


class BagNet(Backbone):
    """Generic BagNet: stem convs, then groups of bottlenecks, optional low-d bottleneck and
    per-cell classifier. All convolutions valid, no bias (except the classifier), BatchNorm.

    stem:     kernel sizes of the stem convs (stride 1, width stem_width); BN + ReLU after the
              last one (the public BagNet stem is (1, 3), Saccader's is (3,)).
    kernel3:  per group, how many leading blocks use a 3x3 middle conv (the rest use 1x1).
    width:    multiplier on every width (stem, planes, lowd): < 1 gives CPU-sized variants.
    lowd:     channels of the final 1x1 bottleneck ("what" features), or 0 for none.
    num_classes: channels of the per-cell logits conv (with bias), or 0 for none.
    """

    def __init__(self, in_chans: int = 3, blocks: Sequence[int] = (3, 4, 6, 3),
                 planes: Sequence[int] = (64, 128, 256, 512), strides: Sequence[int] = (2, 2, 2, 1),
                 kernel3: Sequence[int] = (2, 2, 2, 2), stem: Sequence[int] = (3,), stem_width: int = 64,
                 expansion: int = 4, lowd: int = 512, num_classes: int = 0, width: float = 1.0,
                 crop: str = "center", bn_quirk: bool = False) -> None:
        super().__init__()
        if not (len(blocks) == len(planes) == len(strides) == len(kernel3)):
            raise FoveateError("bagnet: blocks, planes, strides and kernel3 need one entry per group")
        if crop not in ("center", "corner"):
            raise FoveateError(f"bagnet: unknown crop {crop!r} (use center or corner)")
        if width <= 0:
            raise FoveateError(f"bagnet: width must be > 0, got {width}")

        def w(c: int) -> int:
            return max(1, round(c * width))

        layers: list[nn.Module] = []
        cin = in_chans
        for k in stem:
            layers.append(nn.Conv2d(cin, w(stem_width), k, padding=0, bias=False))
            cin = w(stem_width)
        self.stem = nn.Sequential(*layers, _bn(cin), nn.ReLU(inplace=True))
        groups = []
        rf, jump = 1 + sum(k - 1 for k in stem), 1
        for n, p, s, k3 in zip(blocks, planes, strides, kernel3):
            group = []
            for b in range(n):
                k = 3 if b < k3 else 1
                stride = s if b == 0 else 1
                group.append(BagNetBottleneck(cin, w(p), k, stride, expansion, crop, bn_quirk))
                cin = w(p) * expansion
                rf += (k - 1) * jump
                jump *= stride
            groups.append(nn.Sequential(*group))
        self.groups = nn.Sequential(*groups)
        self.feature_channels = cin
        self.lowd: nn.Module | None = None
        if lowd:
            self.lowd = nn.Sequential(nn.Conv2d(cin, w(lowd), 1, bias=False), _bn(w(lowd)), nn.ReLU(inplace=True))
            cin = w(lowd)
        self.num_features = self.fmap_channels = cin
        self.num_classes = num_classes
        self.classifier = nn.Conv2d(cin, num_classes, 1) if num_classes else None
        self.receptive_field, self.stride = rf, jump   # in input pixels; cell (i, j) sees [s*i, s*i+rf)

    def forward_maps(self, x: Tensor) -> BagNetMaps:     # (n, C, H, W) -> maps of (n, *, h, w)
        if min(x.shape[-2:]) < self.receptive_field:
            raise FoveateError(f"bagnet: image {tuple(x.shape[-2:])} is smaller than the receptive field "
                               f"({self.receptive_field} px)")
        features = self.groups(self.stem(x))
        what = self.lowd(features) if self.lowd is not None else features
        return BagNetMaps(features, what, self.logits2d(what) if self.classifier is not None else None)

    def forward_features(self, x: Tensor) -> Tensor:     # (n, C, H, W) -> (n, fmap_channels, h, w)
        return self.forward_maps(x).what

    def logits2d(self, what: Tensor) -> Tensor:          # (n, fmap_channels, h, w) -> (n, classes, h, w)
        if self.classifier is None:
            raise FoveateError("bagnet: built without a classifier (num_classes=0)")
        return self.classifier(what)

    def grid_size(self, size: int) -> int:
        """Cells along an axis of `size` input pixels (valid convolutions)."""
        return (size - self.receptive_field) // self.stride + 1 if size >= self.receptive_field else 0


@register_backbone("bagnet")
def bagnet(**kwargs) -> BagNet:
    """The generic builder, every argument from the config."""
    return BagNet(**kwargs)


@register_backbone("bagnet77_lowd")
def bagnet77_lowd(**kwargs) -> BagNet:
    """Saccader's BagNet-77-lowD: stem 3x3, blocks [3,4,6,3], kernel3 [2,2,2,2], strides
    [2,2,2,1], 2048 -> 512 "what" bottleneck; RF 77, stride 8 (19x19 cells for 224 px).
    With num_classes=1001: 20,574,249 trainable parameters (spec §2)."""
    for key in ("blocks", "strides", "kernel3", "stem"):
        if key in kwargs:
            raise FoveateError(f"bagnet77_lowd fixes {key}; use backbone 'bagnet' for another layout")
    return BagNet(blocks=(3, 4, 6, 3), strides=(2, 2, 2, 1), kernel3=(2, 2, 2, 2), stem=(3,), **kwargs)


_PUBLIC_BAGNET_KERNEL3 = {9: (1, 1, 0, 0), 17: (1, 1, 1, 0), 33: (1, 1, 1, 1)}


def _public_bagnet(rf: int, kwargs: dict) -> BagNet:
    """Brendel & Bethge's public BagNet-9/17/33: ResNet-50 groups [3,4,6,3], strides [2,2,2,1],
    a 3x3 middle conv only in the first block of the first 2/3/4 groups, stem 1x1 then 3x3 (64),
    shortcut cropped at the bottom/right ("corner", as their code), no low-d bottleneck; stride 8.
    num_classes=k adds the per-cell 1x1 logits (their fc after average pooling is the same linear
    map applied to every cell, then averaged)."""
    for key in ("blocks", "strides", "kernel3", "stem"):
        if key in kwargs:
            raise FoveateError(f"bagnet{rf} fixes {key}; use backbone 'bagnet' for another layout")
    kwargs = {"lowd": 0, "crop": "corner", **kwargs}
    return BagNet(blocks=(3, 4, 6, 3), strides=(2, 2, 2, 1), kernel3=_PUBLIC_BAGNET_KERNEL3[rf], stem=(1, 3),
                  **kwargs)


@register_backbone("bagnet9")
def bagnet9(**kwargs) -> BagNet:
    """BagNet-9: RF 9, stride 8 (27x27 cells for 224 px)."""
    return _public_bagnet(9, kwargs)


@register_backbone("bagnet17")
def bagnet17(**kwargs) -> BagNet:
    """BagNet-17: RF 17, stride 8 (26x26 cells for 224 px)."""
    return _public_bagnet(17, kwargs)


@register_backbone("bagnet33")
def bagnet33(**kwargs) -> BagNet:
    """BagNet-33: RF 33, stride 8 (24x24 cells for 224 px)."""
    return _public_bagnet(33, kwargs)

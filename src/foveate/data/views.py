"""How a training or evaluation image is cut from a (possibly huge) file: one region read per item.

The crop box is chosen in full-resolution pixel coordinates from the image's size alone, then read
with `RegionSource.read(box, out_size)`, so a pyramidal file is decoded only inside the box and at
the coarsest level that still gives the output's resolution. Nothing here touches every pixel of
the image unless the file format forces it (plain PNG/JPEG are decoded whole by `open_source`).

Two ways to fit a region into the fixed output size (H, W) every batch needs:
  "pad"     (default): scale the region to fit inside (H, W) keeping its aspect ratio, centre it,
            fill the rest with zeros (the value models read outside an image);
  "stretch": resize the region to (H, W) exactly, changing its aspect (TNet's fMoW recipe).
Training crops ("random resized crop"): an area fraction s ~ U(crop_scale) of the region, with
the region's own aspect ratio (crop_ratio=None: nothing is stretched, and s = 1 is exactly the
evaluation view) or an aspect w/h drawn log-uniformly from crop_ratio; then flips and colour
jitter (torchvision.transforms.v2 functional ops) on the read pixels, before padding.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torchvision.transforms.v2.functional as TF
from torch import Tensor

from ..errors import FoveateError
from ..sources import RegionSource

Box = tuple[float, float, float, float]  # x1, y1, x2, y2 in full-resolution pixels
RESIZE_MODES = ("pad", "stretch")


def _size(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, bool):
        raise FoveateError(f"image_size must be an int or [H, W], got {value!r}")
    if isinstance(value, int):
        value = (value, value)
    if not (isinstance(value, Sequence) and len(value) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                    and v >= 8 for v in value)):
        raise FoveateError(f"image_size must be an int >= 8 or [H, W] ints >= 8, got {value!r}")
    return int(value[0]), int(value[1])


def _range(name: str, value, lo: float, hi: float) -> tuple[float, float]:
    if not (isinstance(value, Sequence) and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
            and lo <= value[0] <= value[1] <= hi and value[1] > 0):
        raise FoveateError(f"{name} must be [min, max] with {lo:g} <= min <= max <= {hi:g}, got {value!r}")
    return float(value[0]), float(value[1])


@dataclass(frozen=True)
class ViewConfig:
    """What one item looks like; the data modules build it from their (flat) config keys.

    size: (H, W) of every output. resize: "pad" | "stretch" (module docstring).
    crop_scale: area fraction range of training crops; crop_ratio: None (the region's aspect)
    or the [min, max] range of the crop's width / height. hflip, vflip: probabilities.
    brightness, contrast, saturation: jitter strength j, factors drawn from U(1 - j, 1 + j).
    min_box_covered: a training crop must contain at least this fraction of one annotated box
    (fMoW; ignored for items without boxes). upsample: allow images smaller than the output
    (otherwise an error: the model would see interpolated pixels it never sees at test time).
    """

    size: tuple[int, int]
    resize: str = "pad"
    crop_scale: tuple[float, float] = (0.35, 1.0)
    crop_ratio: tuple[float, float] | None = None
    hflip: float = 0.5
    vflip: float = 0.0
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    min_box_covered: float = 0.0
    upsample: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "size", _size(self.size))
        if self.resize not in RESIZE_MODES:
            raise FoveateError(f"resize must be one of {', '.join(RESIZE_MODES)}, got {self.resize!r}")
        object.__setattr__(self, "crop_scale", _range("crop_scale", self.crop_scale, 0.0, 1.0))
        if self.crop_ratio is not None:
            object.__setattr__(self, "crop_ratio", _range("crop_ratio", self.crop_ratio, 1e-3, 1e3))
        for name in ("hflip", "vflip", "brightness", "contrast", "saturation", "min_box_covered"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0.0 <= v <= 1.0:
                raise FoveateError(f"{name} must be a number in [0, 1], got {v!r}")
        if not isinstance(self.upsample, bool):
            raise FoveateError(f"upsample must be true or false, got {self.upsample!r}")


def content_size(box_hw: tuple[float, float], cfg: ViewConfig) -> tuple[int, int]:
    """(h, w) the region occupies in the output: all of it ("stretch") or its aspect kept ("pad")."""
    if cfg.resize == "stretch":
        return cfg.size
    (bh, bw), (oh, ow) = box_hw, cfg.size
    s = min(oh / bh, ow / bw)
    return min(oh, max(1, round(bh * s))), min(ow, max(1, round(bw * s)))


def check_not_upsampled(name: str, region_hw: tuple[float, float], cfg: ViewConfig) -> None:
    """The evaluation view of a region must not enlarge it unless cfg.upsample (one-line error)."""
    if cfg.upsample:
        return
    (h, w), (oh, ow) = region_hw, cfg.size
    scale = min(oh / h, ow / w) if cfg.resize == "pad" else max(oh / h, ow / w)
    if scale > 1 + 1e-9:
        raise FoveateError(f"{name}: image region is {round(w)}x{round(h)} px, smaller than the output "
                           f"{ow}x{oh} ({'fits' if cfg.resize == 'pad' else 'stretches'} by enlarging); "
                           "set data.upsample: true to allow it or lower data.image_size")


def _uniform(lo: float, hi: float, generator: torch.Generator | None) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=generator))


def _covered(crop: Box, box: Box) -> float:
    """Fraction of `box`'s area inside `crop`."""
    w = min(crop[2], box[2]) - max(crop[0], box[0])
    h = min(crop[3], box[3]) - max(crop[1], box[1])
    area = (box[2] - box[0]) * (box[3] - box[1])
    return max(0.0, w) * max(0.0, h) / area if area > 0 else 0.0


def sample_crop(region: Box, cfg: ViewConfig, boxes: Sequence[Box] = (), generator: torch.Generator | None = None,
                attempts: int = 100) -> Box:
    """A random training crop inside `region` (full-resolution px), by cfg.crop_scale/crop_ratio.

    With crop_ratio=None the crop has the region's aspect and always fits (one draw). Otherwise,
    as torchvision's RandomResizedCrop and TensorFlow's sample_distorted_bounding_box: up to
    `attempts` draws of (area, aspect); a draw must fit and, when `boxes` and
    cfg.min_box_covered > 0, contain that fraction of at least one box; else the whole region.
    """
    x1, y1, x2, y2 = region
    rw, rh = x2 - x1, y2 - y1
    lo, hi = cfg.crop_scale
    if cfg.crop_ratio is None and not (boxes and cfg.min_box_covered > 0):
        attempts = 1
    for _ in range(attempts):
        area = rw * rh * _uniform(lo, hi, generator)
        if cfg.crop_ratio is None:
            ratio = rw / rh
        else:
            ratio = math.exp(_uniform(math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]), generator))
        cw, ch = math.sqrt(area * ratio), math.sqrt(area / ratio)
        if cw > rw * (1 + 1e-9) or ch > rh * (1 + 1e-9) or cw < 1 or ch < 1:
            continue
        cw, ch = min(cw, rw), min(ch, rh)
        left = x1 + _uniform(0.0, rw - cw, generator)
        top = y1 + _uniform(0.0, rh - ch, generator)
        crop = (left, top, left + cw, top + ch)
        if boxes and cfg.min_box_covered > 0 and max(_covered(crop, b) for b in boxes) < cfg.min_box_covered:
            continue
        return crop
    return region


def jitter(x: Tensor, cfg: ViewConfig, generator: torch.Generator | None = None) -> Tensor:
    """Brightness, contrast and saturation factors ~ U(1 - j, 1 + j), applied in a random order
    (as torchvision's ColorJitter). x: (C, h, w) in [0, 1]; saturation is a no-op for C = 1."""
    ops = [(TF.adjust_brightness, cfg.brightness), (TF.adjust_contrast, cfg.contrast),
           (TF.adjust_saturation, cfg.saturation)]
    for i in torch.randperm(len(ops), generator=generator).tolist():
        op, strength = ops[i]
        if strength > 0:
            x = op(x, _uniform(1 - strength, 1 + strength, generator))
    return x


def read_view(source: RegionSource, box: Box, cfg: ViewConfig, train: bool,
              generator: torch.Generator | None = None) -> Tensor:
    """Read `box` (full-res px) from a one-image source into a (C, H, W) output in [0, 1].

    One `source.read` at the content size (the source picks the pyramid level), then, when
    training, flips with probabilities cfg.hflip/vflip and colour jitter on the read pixels only
    (padding stays zero), then centring in the zero canvas ("pad").
    """
    x1, y1, x2, y2 = box
    h, w = content_size((y2 - y1, x2 - x1), cfg)
    x = source.read(torch.tensor([[[x1, y1, x2, y2]]], dtype=torch.float64), (h, w))[0]  # (C, h, w)
    if train:
        if cfg.hflip > 0 and float(torch.rand((), generator=generator)) < cfg.hflip:
            x = TF.horizontal_flip(x)
        if cfg.vflip > 0 and float(torch.rand((), generator=generator)) < cfg.vflip:
            x = TF.vertical_flip(x)
        x = jitter(x, cfg, generator).clamp_(0.0, 1.0)
    oh, ow = cfg.size
    if (h, w) == (oh, ow):
        return x.contiguous()
    out = x.new_zeros(x.shape[0], oh, ow)
    top, left = (oh - h) // 2, (ow - w) // 2
    out[:, top:top + h, left:left + w] = x
    return out

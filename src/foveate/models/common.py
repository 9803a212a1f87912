"""Small rules every model applies the same way: input checks, pixel range, downsampling, targets."""
from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from ..errors import FoveateError


def check_image(x: Tensor, in_chans: int, min_side: int = 1, what: str = "a patch") -> tuple[int, int]:
    """(H, W) of a (B, C, H, W) batch; one-line errors for the wrong channel count or a too-small image."""
    if x.dim() != 4:
        raise FoveateError(f"model expects a (B, C, H, W) batch, got shape {tuple(x.shape)}")
    _, c, height, width = x.shape
    if c != in_chans:
        raise FoveateError(f"model expects {in_chans}-channel images, got {c} channels")
    if min(height, width) < min_side:
        raise FoveateError(f"image is {width}x{height} px, smaller than {what} ({min_side} px)")
    return height, width


def network_range(x: Tensor) -> Tensor:
    """[0, 1] pixels -> [-1, 1], the range every foveate network is trained on."""
    return x * 2.0 - 1.0


def downsample(x: Tensor, size: tuple[int, int], antialias: bool = True) -> Tensor:
    """Bilinear resize to (h, w); antialiased, so small objects shrink to faint blobs instead of
    vanishing between samples."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", antialias=antialias, align_corners=False)


def class_targets(target: Tensor, model: str) -> Tensor:
    """The (B,) class indices a single-label classifier trains on; multi-label targets are refused."""
    if target.dtype.is_floating_point or target.ndim != 1:
        raise FoveateError(f"{model} trains on one class index per image; multi-label targets "
                           "(label: multi) are not supported")
    return target

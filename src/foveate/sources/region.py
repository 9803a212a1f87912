"""Region sources: every model reads its image through one, by region, at the resolution it asks for.

A model never holds "the image": it asks a `RegionSource` for a low-resolution view and for the few
regions it attends, so that a pyramidal file on disk is decoded only where the model looks (and
the low-resolution view comes from a pyramid level, not from resizing every full-resolution pixel).

    src = as_source(x)                              # a (B, C, H, W) tensor in [0, 1]: today's path
    view = src.view((192, 192))                     # (B, C, 192, 192)
    patches = src.crop(top, left, (50, 50))         # (B * k, C, 50, 50), native pixels
    cells = src.crop(top, left, (480, 480), (192, 192))  # read from the cheapest sufficient level

Conventions (all sources):
- coordinates are full-resolution pixels; a region is (top, left) plus a size shared by every
  region of one call (the models' grids are uniform, and a shared size keeps reads batched and
  free of host synchronisation on a GPU); `read(boxes, out_size)` accepts arbitrary boxes;
- pixels outside the image read as 0 (zero padding, as the models were trained with);
- reads return float32 in [0, 1] on the source's device, item-major: (B * k, C, h, w);
- a read resampled to a smaller size uses the coarsest pyramid level that still has at least
  the requested pixel density, then an antialiased bilinear resize (`geometry.resize`).
  On a pyramid, a region's corner is rounded to that level's pixel grid (at most half a
  level pixel, i.e. half an output pixel, of shift); full-resolution reads are exact.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import FoveateError
from ..geometry import gather_crops, resize

Size = tuple[int, int]


class RegionSource:
    """A batch of B images of one size, read by region (see the module docstring).

    Subclasses give `level_sizes` (full resolution first, then coarser pyramid levels) and
    `_crop_level`; everything else (level choice, coordinate maps, resizing) is shared.
    """

    batch: int
    channels: int
    device: torch.device
    level_sizes: list[Size]  # (H_l, W_l) per level; level 0 is full resolution
    name: str = "<image>"

    @property
    def size(self) -> Size:
        """(H, W) in full-resolution pixels."""
        return self.level_sizes[0]

    # -- what subclasses implement ----------------------------------------------------------
    def _crop_level(self, level: int, top: Tensor, left: Tensor, size: Size) -> Tensor:
        """(B, k) integer corners at `level` -> (B * k, C, h, w) float in [0, 1], zeros outside."""
        raise NotImplementedError

    # -- reads ------------------------------------------------------------------------------
    def level_for(self, density: float) -> int:
        """The coarsest level with at least `density` pixels per full-resolution pixel."""
        height, width = self.size
        best = 0
        for level, (h, w) in enumerate(self.level_sizes):
            if min(h / height, w / width) >= density * (1 - 1e-6):
                best = level
        return best

    def crop(self, top: Tensor, left: Tensor, size: Size, out_size: Size | None = None,
             antialias: bool = True) -> Tensor:
        """Regions of `size` (full-res px) at corners top, left (B, k) long, resampled to `out_size`.

        returns (B * k, C, *out_size) (or `size` when out_size is None), item-major.
        """
        out_size = tuple(out_size or size)
        if min(*size, *out_size) < 1:
            raise FoveateError(f"{self.name}: regions must be at least 1 px, got {size} -> {out_size}")
        if out_size == tuple(size):
            return self._crop_level(0, top, left, size)
        level = self.level_for(max(out_size[0] / size[0], out_size[1] / size[1]))
        if level == 0:
            return resize(self._crop_level(0, top, left, size), out_size, antialias)
        (height, width), (h, w) = self.size, self.level_sizes[level]
        fy, fx = h / height, w / width
        lsize = (max(1, round(size[0] * fy)), max(1, round(size[1] * fx)))
        ltop = torch.round(top.to(torch.float64) * fy).long()
        lleft = torch.round(left.to(torch.float64) * fx).long()
        return resize(self._crop_level(level, ltop, lleft, lsize), out_size, antialias)

    def _whole_level(self, level: int) -> Tensor:
        """The whole of `level`: (B, C, H_l, W_l). Sources holding their levels in memory return
        them as they are (no copy)."""
        zero = torch.zeros(self.batch, 1, dtype=torch.long, device=self.device)
        return self._crop_level(level, zero, zero, self.level_sizes[level])

    def view(self, out_size: Size, antialias: bool = True) -> Tensor:
        """The whole image at `out_size`: (B, C, h, w), resized from the coarsest sufficient level."""
        (height, width), out_size = self.size, tuple(out_size)
        if min(out_size) < 1:
            raise FoveateError(f"{self.name}: a view must be at least 1 px, got {out_size}")
        level = self.level_for(max(out_size[0] / height, out_size[1] / width))
        return resize(self._whole_level(level), out_size, antialias)

    def read(self, boxes: Tensor, out_size: Size) -> Tensor:
        """Any boxes (B, k, 4) float (x1, y1, x2, y2) in full-resolution pixels -> (B * k, C, *out_size).

        The general (user-facing) form: corners are rounded to whole pixels and boxes are grouped
        by size (one host synchronisation). Models use `crop`, whose regions share a size.
        """
        if boxes.ndim != 3 or boxes.shape[0] != self.batch or boxes.shape[-1] != 4:
            raise FoveateError(f"{self.name}: boxes must be ({self.batch}, k, 4), got {tuple(boxes.shape)}")
        corners = torch.round(boxes.detach().to(torch.float64)).long()
        x1, y1, x2, y2 = corners.unbind(-1)  # (B, k) each
        hs, ws = y2 - y1, x2 - x1
        if bool(((hs < 1) | (ws < 1)).any()):
            raise FoveateError(f"{self.name}: every box needs x2 > x1 and y2 > y1 (after rounding to pixels)")
        b, k = x1.shape
        out = torch.empty(b * k, self.channels, *out_size, device=self.device)
        for i in range(b):
            sizes = list(zip(hs[i].tolist(), ws[i].tolist()))
            for size in set(sizes):
                sel = torch.tensor([j for j, s in enumerate(sizes) if s == size], device=self.device)
                out[i * k + sel] = self._one(i).crop(y1[i, sel][None], x1[i, sel][None], size, out_size)
        return out

    def _one(self, i: int) -> RegionSource:
        """Image i of the batch as a source of one image (sources of one image return themselves)."""
        if self.batch == 1:
            return self
        raise NotImplementedError


class TensorSource(RegionSource):
    """In-memory images (B, C, H, W) in [0, 1], optionally with coarser pyramid levels.

    With levels=None only full resolution exists: views are resized from every pixel (today's
    path, exactly). Give `levels` (e.g. `build_pyramid(x)`) to read views from a coarser level,
    as a pyramidal file would.
    """

    def __init__(self, x: Tensor, levels: Sequence[Tensor] | None = None, name: str = "<tensor>") -> None:
        if x.dim() != 4:
            raise FoveateError(f"{name}: expected a (B, C, H, W) batch, got shape {tuple(x.shape)}")
        self.x = x
        self.levels = [x, *(levels or [])]
        self.batch, self.channels = x.shape[0], x.shape[1]
        self.device = x.device
        self.level_sizes = [tuple(t.shape[-2:]) for t in self.levels]
        self.name = name

    def _crop_level(self, level: int, top: Tensor, left: Tensor, size: Size) -> Tensor:
        return gather_crops(self.levels[level], top, left, size)

    def _whole_level(self, level: int) -> Tensor:
        return self.levels[level]

    def _one(self, i: int) -> RegionSource:
        return TensorSource(self.x[i:i + 1], [t[i:i + 1] for t in self.levels[1:]], self.name)


def build_pyramid(x: Tensor, min_side: int = 64) -> list[Tensor]:
    """Levels 1, 2, ... of x (B, C, H, W): each half the previous (2x2 mean, ceil), sized as
    `pyramid_sizes` (the one halving rule, shared with `convert`)."""
    levels, cur = [], x
    for _ in pyramid_sizes(*x.shape[-2:], min_side)[1:]:
        cur = F.avg_pool2d(cur, 2, ceil_mode=True)
        levels.append(cur)
    return levels


def as_source(x: Tensor | RegionSource, in_chans: int | None = None, min_side: int = 1,
              what: str = "a patch") -> RegionSource:
    """The source a model reads from: tensors are wrapped (zero copy); sources pass through.

    Checks what every model needs: the channel count and that the image is at least `min_side`
    px (one-line errors naming the image).
    """
    src = x if isinstance(x, RegionSource) else TensorSource(x)
    if in_chans is not None and src.channels != in_chans:
        raise FoveateError(f"{src.name}: model expects {in_chans}-channel images, got {src.channels} channels")
    height, width = src.size
    if min(height, width) < min_side:
        raise FoveateError(f"{src.name}: image is {width}x{height} px, smaller than {what} ({min_side} px)")
    return src


def pyramid_sizes(height: int, width: int, min_side: int = 64) -> list[Size]:
    """Level sizes of a 2x pyramid (ceil halving) down to `min_side`, full resolution first."""
    sizes = [(height, width)]
    while min(sizes[-1]) // 2 >= min_side:
        h, w = sizes[-1]
        sizes.append((math.ceil(h / 2), math.ceil(w / 2)))
    return sizes

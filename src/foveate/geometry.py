"""Patch geometry: grids of overlapping cells over a crop, and zero-copy cell crops.

The rules follow the TNet reference (see README "Architecture"): for a crop of side S, a grid of
g cells per axis and an overlap ratio o, the cell side is P = round(o*S), the stride
T = ceil((S-P)/(g-1)), the padded side S' = (g-1)*T + P, padded with ceil((S'-S)/2) before.
Each axis is handled on its own, so non-square images work.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from .errors import FoveateError


@dataclass(frozen=True)
class Axis:
    """Cells along one axis of a crop."""

    size: int  # S: the crop side, pixels
    cells: int  # g
    patch: int  # P: the cell side, pixels
    stride: int  # T
    pad_before: int
    pad_after: int

    @property
    def padded(self) -> int:
        return self.size + self.pad_before + self.pad_after

    def starts(self) -> list[int]:
        """Cell start offsets in the coordinates of the unpadded crop (may be negative)."""
        return [i * self.stride - self.pad_before for i in range(self.cells)]


def axis_geometry(size: int, cells: int, overlap: float) -> Axis:
    if cells < 1:
        raise FoveateError(f"grid must be at least 1 cell per axis, got {cells}")
    if not 0.0 < overlap <= 1.0:
        raise FoveateError(f"overlap (cell side / crop side) must be in (0, 1], got {overlap}")
    patch = max(1, round(overlap * size))
    stride = max(1, math.ceil((size - patch) / (cells - 1))) if cells > 1 else patch
    extra = (cells - 1) * stride + patch - size  # negative only for one centred cell: F.pad crops
    before = math.ceil(extra / 2)
    return Axis(size, cells, patch, stride, before, extra - before)


def tile_axis(size: int, patch: int, stride: int) -> Axis:
    if patch < 1 or stride < 1:
        raise FoveateError(f"patch size and stride must be >= 1 px, got {patch} and {stride}")
    if patch > size:
        raise FoveateError(f"patch size {patch} px is larger than the image side {size} px")
    cells = math.ceil((size - patch) / stride) + 1
    extra = (cells - 1) * stride + patch - size
    return Axis(size, cells, patch, stride, extra // 2, extra - extra // 2)


@dataclass(frozen=True)
class Grid:
    """A g_h x g_w grid of cells over an (H, W) crop. Cell index c = i * g_w + j."""

    h: Axis
    w: Axis

    @classmethod
    def over(cls, height: int, width: int, cells: int, overlap: float) -> Grid:
        return cls(axis_geometry(height, cells, overlap), axis_geometry(width, cells, overlap))

    @classmethod
    def tiles(cls, height: int, width: int, patch: int, stride: int | None = None) -> Grid:
        """P x P tiles every `stride` px (default P) covering the image; padded evenly at both ends."""
        return cls(tile_axis(height, patch, stride or patch), tile_axis(width, patch, stride or patch))

    @property
    def num_cells(self) -> int:
        return self.h.cells * self.w.cells

    @property
    def cell_size(self) -> tuple[int, int]:
        return self.h.patch, self.w.patch

    def cell_corners(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        """(top, left) pixel corners of cells `idx` (any shape, i * g_w + j), in crop pixels."""
        i, j = idx // self.w.cells, idx % self.w.cells
        return i * self.h.stride - self.h.pad_before, j * self.w.stride - self.w.pad_before

    def cell_boxes(self, device: torch.device | None = None) -> Tensor:
        """(g_h * g_w, 4) float boxes (x1, y1, x2, y2) of every cell, in crop pixels."""
        ys = torch.tensor(self.h.starts(), dtype=torch.float32, device=device)
        xs = torch.tensor(self.w.starts(), dtype=torch.float32, device=device)
        y1, x1 = torch.meshgrid(ys, xs, indexing="ij")
        y1, x1 = y1.reshape(-1), x1.reshape(-1)
        return torch.stack([x1, y1, x1 + self.w.patch, y1 + self.h.patch], dim=-1)


def gather_crops(x: Tensor, top: Tensor, left: Tensor, size: tuple[int, int]) -> Tensor:
    """P_h x P_w crops at any integer corners (B, k) of x (B, C, H, W); pixels outside the image are zero.

    Gathers only the crops' pixels (no padded copy of the image, so the cost follows the crops).
    returns (B * k, C, P_h, P_w), item-major.
    """
    b, k = top.shape
    (ph, pw), (height, width) = size, x.shape[-2:]
    rows = top.reshape(-1, 1) + torch.arange(ph, device=x.device)  # (n, P_h)
    cols = left.reshape(-1, 1) + torch.arange(pw, device=x.device)  # (n, P_w)
    item = torch.arange(b, device=x.device).repeat_interleave(k)  # (n,)
    out = x[item[:, None, None], :, rows.clamp(0, height - 1)[:, :, None], cols.clamp(0, width - 1)[:, None, :]]
    inside = ((rows >= 0) & (rows < height))[:, :, None] & ((cols >= 0) & (cols < width))[:, None, :]
    # (n, P_h, P_w, C) -> (n, C, P_h, P_w) with standard strides: `.contiguous()` would keep the permuted
    # strides when C == 1 (a size-1 dim counts as contiguous), which some backward kernels mishandle
    return (out * inside[..., None]).permute(0, 3, 1, 2).clone(memory_format=torch.contiguous_format)


def resize(x: Tensor, size: tuple[int, int], antialias: bool = True) -> Tensor:
    """Bilinear resize of (n, C, h, w) to `size`; antialiased, so small objects shrink to faint
    blobs instead of vanishing between samples. A no-op at the same size."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", antialias=antialias, align_corners=False)


def child_boxes(parent: Tensor, grid: Grid, idx: Tensor | None = None) -> Tensor:
    """Full-resolution boxes of cells, given each parent crop's full-resolution box.

    Crops are always cut at native resolution, so a cell's box is its parent's top-left plus
    the cell offset.
    parent: (n, 4) boxes; idx: (n, k) cell indices, or None for all cells.
    returns (n, k, 4) (or (n, g_h*g_w, 4)).
    """
    cells = grid.cell_boxes(parent.device)  # (g*g, 4)
    if idx is not None:
        cells = cells[idx]  # (n, k, 4)
    else:
        cells = cells.unsqueeze(0).expand(parent.shape[0], -1, -1)
    offset = parent[:, None, :2].repeat(1, 1, 2)  # (n, 1, 4): (x1, y1, x1, y1)
    return cells + offset


def projected_corners(cells: int, low: int, high: int, patch: int, receptive_field: int = 0) -> list[int]:
    """Full-resolution patch corners for the cells of an attention map over a low-resolution view
    (one axis): the P-px patch centred on the full-resolution projection of each cell centre.

    cells: G, attention-map size; low, high: the axis in the low-res view and the full image;
    receptive_field: of the attention net in low-res px (0 when its map is pixel-aligned).
    start(i) = round((rf/2) rho + i step + step/2 - P/2), step = (low - rf) rho / G, rho = high / low.
    Corners may be negative or run past the image: those pixels read as zero.
    """
    rho = high / low
    step = (low - receptive_field) * rho / cells
    return [round(receptive_field / 2 * rho + i * step + step / 2 - patch / 2) for i in range(cells)]

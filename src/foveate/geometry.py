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


@dataclass(frozen=True)
class Grid:
    """A g_h x g_w grid of cells over an (H, W) crop. Cell index c = i * g_w + j."""

    h: Axis
    w: Axis

    @classmethod
    def over(cls, height: int, width: int, cells: int, overlap: float) -> "Grid":
        return cls(axis_geometry(height, cells, overlap), axis_geometry(width, cells, overlap))

    @property
    def num_cells(self) -> int:
        return self.h.cells * self.w.cells

    @property
    def cell_size(self) -> tuple[int, int]:
        return self.h.patch, self.w.patch

    def cell_boxes(self, device: torch.device | None = None) -> Tensor:
        """(g_h * g_w, 4) float boxes (x1, y1, x2, y2) of every cell, in crop pixels."""
        ys = torch.tensor(self.h.starts(), dtype=torch.float32, device=device)
        xs = torch.tensor(self.w.starts(), dtype=torch.float32, device=device)
        y1, x1 = torch.meshgrid(ys, xs, indexing="ij")
        y1, x1 = y1.reshape(-1), x1.reshape(-1)
        return torch.stack([x1, y1, x1 + self.w.patch, y1 + self.h.patch], dim=-1)


def crop_cells(x: Tensor, grid: Grid, idx: Tensor) -> Tensor:
    """Cut the selected cells out of full-resolution crops, without materialising the others.

    x:   (n, C, H, W) crops, with (H, W) the size `grid` was built for.
    idx: (n, k) long, cell indices i * g_w + j.
    returns (n * k, C, P_h, P_w), item-major (all k cells of item 0 first).
    """
    n, c, height, width = x.shape
    if (height, width) != (grid.h.size, grid.w.size):
        raise FoveateError(f"crop is {height}x{width} but the grid was built for {grid.h.size}x{grid.w.size}")
    h, w = grid.h, grid.w
    # Negative pads (a single centred cell) crop instead of padding.
    x = F.pad(x, (w.pad_before, w.pad_after, h.pad_before, h.pad_after))
    view = x.unfold(2, h.patch, h.stride).unfold(3, w.patch, w.stride)  # (n, C, g_h, g_w, P_h, P_w)
    k = idx.shape[1]
    item = torch.arange(n, device=x.device).repeat_interleave(k)
    flat = idx.reshape(-1)
    cells = view[item, :, flat // w.cells, flat % w.cells]  # (n*k, C, P_h, P_w): copies k cells only
    return cells


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

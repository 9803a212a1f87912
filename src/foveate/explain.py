"""Picture what a model looked at: the image with the regions each level read.

Uses matplotlib's object API (`Figure`, no pyplot): no global backend or figure registry, so it
is safe in scripts, servers and worker processes, and figures do not accumulate.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.collections import PatchCollection
from matplotlib.figure import Figure
from matplotlib.legend_handler import HandlerBase
from matplotlib.patches import Patch, Rectangle
from torch import Tensor

from .errors import FoveateError
from .fileio import atomic_save_figure
from .sources.region import RegionSource, TensorSource

if TYPE_CHECKING:
    from matplotlib.axes import Axes

    from .models.output import Glimpses, Output

DPI = 100
BAND_PX = 28  # height of the title band and of the legend band, pixels
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
           "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")  # matplotlib tab10
HEATMAP_CMAP = "inferno"
HEATMAP_ALPHA = 0.65  # opacity of the overlay where attention is at its maximum; 0 where it is 0
MAX_LABELS = 10  # probability labels per level: the most probable chosen boxes only


def display_size(height: int, width: int, max_side: int) -> tuple[int, int]:
    """(h, w) the image is drawn at: shrunk so the long side is max_side, or enlarged by the
    largest whole factor that fits (crisp pixels, readable labels on small images)."""
    long_side = max(height, width)
    if long_side > max_side:
        s = max_side / long_side
        return max(1, round(height * s)), max(1, round(width * s))
    f = max_side // long_side
    return height * f, width * f


def _display_pixels(src: RegionSource, height: int, width: int) -> Tensor:
    """The image at (h, w) -> (h, w) or (h, w, 3) float in [0, 1]. Shrinking reads a pyramid
    level when the source has one (a gigapixel file is never decoded whole to draw it);
    enlarging is left to nearest-neighbour drawing."""
    size = (height, width) if height * width < src.size[0] * src.size[1] else src.size
    x = src.view(size)[0].detach().to("cpu", torch.float32).clamp(0.0, 1.0)
    return x[0] if x.shape[0] == 1 else x.permute(1, 2, 0)


def draw_trace(image: Tensor | RegionSource, output: Output, index: int, path: str | os.PathLike[str],
               title: str | None = None, max_side: int = 1200, show_candidates: bool = False) -> None:
    """Write a PNG of `image` with the regions the model read, one colour per level.

    image: (C, H, W), C = 1 or 3, values in [0, 1], the full-resolution input of batch item
    `index` of `output` (trace boxes are in its pixels), or a `RegionSource` of that one image. Each chosen box is outlined in its
    level's colour (clipped to the image) and labelled with its selection probability (the
    MAX_LABELS most probable of the level only, when it read more), prefixed by its reading
    step ("2: 0.310") when the level records an `order`;
    show_candidates adds faint outlines of the candidates that were not read.
    A level with a `heatmap` (B, h, w) is drawn under the boxes as a HEATMAP_CMAP overlay over
    the whole image, normalised to this item's maximum, its opacity rising from 0 (clear) to
    HEATMAP_ALPHA; NaN, infinite and negative cells count as 0, and a map with no positive
    cell draws nothing. The legend then gains an "attention" entry.
    The PNG is w pixels wide and h + BAND_PX per band tall, (h, w) = display_size(H, W,
    max_side); bands: the title (if given) above, the legend (if there is a trace) below.
    """
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise FoveateError(f"{path}: draw_trace writes PNG; use a .png file name")
    if isinstance(image, RegionSource):
        src = image
    elif image.dim() != 3 or image.shape[0] not in (1, 3):
        raise FoveateError(f"{path}: image must be (1 or 3, H, W), got {tuple(image.shape)}")
    else:
        src = TensorSource(image[None])
    batch = output.logits.shape[0]
    if not 0 <= index < batch:
        raise FoveateError(f"{path}: index {index} is outside the batch of {batch}")
    for g in output.trace:
        hm = g.heatmap
        if hm is not None and (hm.dim() != 3 or hm.shape[0] != batch or hm.shape[1] < 1 or hm.shape[2] < 1):
            raise FoveateError(f"{path}: level {g.level} heatmap must be ({batch}, h, w) like the "
                               f"batch, got {tuple(hm.shape)}")
    height, width = src.size
    h, w = display_size(height, width, max_side)
    top = BAND_PX if title else 0
    bottom = BAND_PX if output.trace else 0
    total = top + h + bottom

    fig = Figure(figsize=(w / DPI, total / DPI), dpi=DPI)
    try:
        ax = fig.add_axes((0.0, bottom / total, 1.0, h / total))
        ax.set_axis_off()
        # extent in full-resolution pixels: boxes are drawn in their own coordinates.
        ax.imshow(_display_pixels(src, h, w).numpy(), cmap="gray", vmin=0.0, vmax=1.0,
                  interpolation="nearest", extent=(0, width, height, 0))
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
        # all heatmaps first (coarse to fine), so every level's boxes stay on top of them.
        heat = [_draw_heatmap(ax, g.heatmap[index], width, height)
                for g in output.trace if g.heatmap is not None]
        for i, glimpses in enumerate(output.trace):
            _draw_level(ax, glimpses, index, PALETTE[i % len(PALETTE)], width, height, show_candidates)
        if title:
            fig.text(0.01, 1.0 - top / 2 / total, title, ha="left", va="center", fontsize=11)
        if output.trace:
            handles = [Patch(facecolor="none", edgecolor=PALETTE[i % len(PALETTE)], linewidth=2,
                             label=f"level {g.level}") for i, g in enumerate(output.trace)]
            handler_map, handlelength = {}, 1.2
            if any(heat):
                handlelength = 2.6  # room for the gradient key
                attention = Patch(label="attention")
                handles.append(attention)
                handler_map[attention] = _HandlerGradient()
            fig.legend(handles=handles, handler_map=handler_map, loc="center",
                       bbox_to_anchor=(0.5, bottom / 2 / total), ncol=len(handles), frameon=False,
                       fontsize=9, handlelength=handlelength, borderaxespad=0.0, columnspacing=1.2)
        atomic_save_figure(fig, path, dpi=DPI, format="png")
    finally:
        fig.clear()  # drop the image and artists now; the figure<->canvas cycle waits for gc


def _heatmap_rgba(values: np.ndarray) -> np.ndarray:
    """(h, w) values in [0, 1] -> (h, w, 4) overlay colours, opacity HEATMAP_ALPHA * value."""
    rgba = colormaps[HEATMAP_CMAP](values)
    rgba[..., 3] = HEATMAP_ALPHA * values
    return rgba


def _draw_heatmap(ax: Axes, heatmap: Tensor, width: int, height: int) -> bool:
    """Overlay one (h, w) map over the whole image; False (nothing drawn) if it has no
    positive cell. Drawn at its own size with an extent: matplotlib resamples it to the
    screen, so a 6000x6000 image costs no more than a small one."""
    values = heatmap.detach().to("cpu", torch.float64)
    values = torch.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0).clamp(min=0.0)
    peak = float(values.max())
    if peak <= 0.0:
        return False
    ax.imshow(_heatmap_rgba((values / peak).numpy()), interpolation="nearest",
              extent=(0, width, height, 0))
    ax.set_xlim(0, width)  # imshow resets the limits to its extent; keep the image's
    ax.set_ylim(height, 0)
    return True


class _HandlerGradient(HandlerBase):
    """Legend key for the heatmap: the overlay from 0 to its maximum, over mid-gray so it looks
    as it does on an image."""

    def create_artists(self, legend, orig_handle, xdescent, ydescent, width, height, fontsize, trans):
        steps = 16
        x0, y0 = -xdescent, -ydescent
        ground = Rectangle((x0, y0), width, height, facecolor="0.5", edgecolor="0.3",
                           linewidth=0.5, transform=trans)
        colours = _heatmap_rgba(np.linspace(0.0, 1.0, steps))
        return [ground] + [Rectangle((x0 + width * i / steps, y0), width / steps, height,
                                     facecolor=tuple(c), edgecolor="none", transform=trans)
                           for i, c in enumerate(colours)]


def _probability_label(p: float) -> str:
    """Three decimals, or two significant digits below 0.01 (attention over many cells is
    small, and "0.000" on every box says nothing)."""
    return f"{p:.3f}" if p >= 0.01 or p == 0.0 else f"{p:.2g}"


def _draw_level(ax: Axes, glimpses: Glimpses, index: int, color: str, width: int, height: int,
                show_candidates: bool) -> None:
    """Outline one level's boxes for batch item `index` (boxes (C, 4) x1, y1, x2, y2)."""
    boxes = glimpses.boxes[index].detach().to("cpu", torch.float64)  # (C, 4)
    probs = glimpses.probs[index].detach().to("cpu", torch.float64)  # (C,)
    chosen = glimpses.chosen[index].detach().to("cpu", torch.bool)  # (C,)
    limits = torch.tensor([width, height, width, height], dtype=torch.float64)
    boxes = torch.minimum(boxes.clamp(min=0.0), limits)  # padded grids reach outside the image

    def rectangles(rows: Tensor) -> list[Rectangle]:
        return [Rectangle((x1, y1), x2 - x1, y2 - y1) for x1, y1, x2, y2 in rows.tolist()]

    if show_candidates and (~chosen).any():
        ax.add_collection(PatchCollection(rectangles(boxes[~chosen]), facecolor="none",
                                          edgecolor=color, linewidth=0.6, alpha=0.35))
    if chosen.any():
        ax.add_collection(PatchCollection(rectangles(boxes[chosen]), facecolor="none",
                                          edgecolor=color, linewidth=1.8))
    boxes, probs = boxes[chosen], probs[chosen]
    if glimpses.order is not None:  # read one after another: number the boxes "1: p", "2: p", ...
        steps = glimpses.order[index].detach().to("cpu")[chosen]
        seq = steps.argsort()
        boxes, probs = boxes[seq], probs[seq]
        labels = [f"{int(t)}: {_probability_label(p)}" for t, p in zip(steps[seq].tolist(), probs.tolist())]
    else:
        labels = [_probability_label(p) for p in probs.tolist()]
    if len(probs) > MAX_LABELS:  # label the most probable only, drawn in their original order
        keep = torch.topk(probs, MAX_LABELS).indices.sort().values
        boxes, labels = boxes[keep], [labels[i] for i in keep.tolist()]
    for (x1, y1, _, _), text in zip(boxes.tolist(), labels):
        ax.annotate(text, (x1, y1), xytext=(2, -2), textcoords="offset points",
                    ha="left", va="top", fontsize=7, color=color, clip_on=True,
                    bbox={"boxstyle": "square,pad=0.1", "facecolor": "white", "alpha": 0.75, "linewidth": 0})

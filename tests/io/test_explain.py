"""draw_trace writes a PNG of a predictable size showing each level's chosen boxes and, for
models that report one, the attention heatmap under them."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from matplotlib.axes import Axes
from PIL import Image
from torch import Tensor

from foveate.errors import FoveateError
from foveate.explain import BAND_PX, MAX_LABELS, PALETTE, display_size, draw_trace
from foveate.models.output import Glimpses, Output


def synthetic_output(height: int, width: int, batch: int = 2) -> Output:
    """Two levels: a 2x2 grid over the image (two read), then 4 boxes inside the first cell,
    one reaching outside the image as padded grids do."""
    h2, w2 = height / 2, width / 2
    coarse = torch.tensor([[0, 0, w2, h2], [w2, 0, width, h2], [0, h2, w2, height], [w2, h2, width, height]])
    fine = torch.tensor([[-8, -8, w2 / 2, h2 / 2], [w2 / 2, 0, w2, h2 / 2],
                         [0, h2 / 2, w2 / 2, h2], [w2 / 2, h2 / 2, w2 + 20, h2 + 20]])
    levels = []
    for level, boxes, chosen in [(1, coarse, [True, False, False, True]), (2, fine, [False, True, True, False])]:
        probs = torch.softmax(torch.arange(4.0), 0)
        levels.append(Glimpses(level, boxes.expand(batch, 4, 4).float(), probs.expand(batch, 4),
                               torch.tensor(chosen).expand(batch, 4)))
    return Output(logits=torch.zeros(batch, 3), trace=levels)


def has_colour(png: np.ndarray, hex_colour: str, tol: int = 8) -> bool:
    rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)])
    return bool((np.abs(png[..., :3].astype(int) - rgb).max(-1) <= tol).any())


@pytest.mark.parametrize("channels, height, width, max_side", [
    (1, 64, 64, 300),     # small grayscale: enlarged 4x
    (3, 80, 120, 300),    # small RGB, non-square: enlarged 2x
    (3, 1500, 600, 400),  # large, tall: shrunk to 400 x 160
])
def test_png_size_and_content(tmp_path, channels, height, width, max_side):
    image = torch.linspace(0, 1, width).expand(channels, height, width)  # gray ramp: no tab10 colours
    path = tmp_path / "trace.png"
    draw_trace(image, synthetic_output(height, width), 1, path, title="class 2 (p=0.871)", max_side=max_side)
    h, w = display_size(height, width, max_side)
    assert max(h, w) <= max_side and abs(h / w - height / width) < 0.01
    png = np.asarray(Image.open(path))
    assert png.shape[:2] == (h + 2 * BAND_PX, w)
    assert has_colour(png, PALETTE[0]) and has_colour(png, PALETTE[1])  # both levels drawn


def test_display_size():
    assert display_size(6000, 6000, 1200) == (1200, 1200)
    assert display_size(3000, 1000, 1200) == (1200, 400)
    assert display_size(100, 250, 1200) == (400, 1000)
    assert display_size(1200, 10, 1200) == (1200, 10)


def test_without_title_or_trace_and_with_candidates(tmp_path):
    image = torch.rand(3, 100, 50)
    draw_trace(image, Output(logits=torch.zeros(1, 2)), 0, tmp_path / "plain.png", max_side=200)
    assert Image.open(tmp_path / "plain.png").size == (100, 200)
    draw_trace(image, synthetic_output(100, 50), 0, tmp_path / "cand.png", max_side=200, show_candidates=True)
    assert Image.open(tmp_path / "cand.png").size == (100, 200 + BAND_PX)


def test_bad_arguments(tmp_path):
    out = synthetic_output(32, 32)
    with pytest.raises(FoveateError, match="use a .png file name"):
        draw_trace(torch.rand(3, 32, 32), out, 0, tmp_path / "t.jpg")
    with pytest.raises(FoveateError, match="outside the batch of 2"):
        draw_trace(torch.rand(3, 32, 32), out, 2, tmp_path / "t.png")
    with pytest.raises(FoveateError, match="image must be"):
        draw_trace(torch.rand(4, 32, 32), out, 0, tmp_path / "t.png")
    assert list(tmp_path.iterdir()) == []


def heatmap_output(heatmap: Tensor, height: int, width: int, chosen: int = 1) -> Output:
    """One level as ATS/IPS report it: only the read patches as boxes (all chosen), along the
    bottom-left edge of the image, and an attention map over the whole image."""
    batch = heatmap.shape[0]
    side = min(height, width) / 8
    boxes = torch.tensor([[i * side / 4, height - side, i * side / 4 + side, height] for i in range(chosen)])
    probs = torch.linspace(0.5, 0.1, chosen)
    return Output(logits=torch.zeros(batch, 2),
                  trace=[Glimpses(1, boxes.expand(batch, chosen, 4).float(), probs.expand(batch, chosen),
                                  torch.ones(batch, chosen, dtype=torch.bool), heatmap=heatmap)])


def read_png(path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


GRAY = 0.5  # uniform test image: drawn as (127 or 128) gray everywhere without an overlay


def test_heatmap_png_size_and_where_it_is_drawn(tmp_path):
    height, width, max_side = 120, 240, 480  # shown 2x: 240 x 480
    heat = torch.zeros(2, 4, 8)
    heat[1, 1, 2] = 3.0  # one hot cell: rows 30..60, columns 60..90 of the image
    heat[1, 3, 7] = 1.5  # a cooler one, bottom right
    path = tmp_path / "heat.png"
    draw_trace(torch.full((1, height, width), GRAY), heatmap_output(heat, height, width), 1, path,
               title="ips", max_side=max_side)
    h, w = display_size(height, width, max_side)
    png = read_png(path)
    assert png.shape[:2] == (h + 2 * BAND_PX, w)
    image = png[BAND_PX:BAND_PX + h]  # the image area, 2 display pixels per image pixel

    def off_gray(y: int, x: int) -> int:  # image pixel (y, x): distance from the plain image
        return int(np.abs(image[2 * y, 2 * x] - 127.5).max())

    assert off_gray(45, 75) > 60  # inside the hot cell: strongly coloured (inferno's pale yellow)
    hot, cool = image[2 * 45, 2 * 75], image[2 * 105, 2 * 225]
    assert hot[0] > hot[2] + 40 and np.abs(hot - cool).max() > 30  # value shows: hot != cool
    for y, x in [(45, 56), (45, 94), (26, 75), (64, 75), (10, 10), (45, 150)]:  # just outside
        assert off_gray(y, x) <= 1, (y, x)
    assert has_colour(png, PALETTE[0])  # the boxes are drawn on top


def test_heatmap_is_normalised_per_image(tmp_path):
    heat = torch.rand(1, 6, 6).expand(2, 6, 6) * torch.tensor([1.0, 1e-6]).view(2, 1, 1)
    out = heatmap_output(heat, 60, 60)
    for i in (0, 1):
        draw_trace(torch.full((3, 60, 60), GRAY), out, i, tmp_path / f"{i}.png", max_side=120)
    assert (read_png(tmp_path / "0.png") == read_png(tmp_path / "1.png")).all()


def test_heatmap_without_positive_values_draws_nothing_and_nan_counts_as_zero(tmp_path):
    height, width = 64, 64
    image = torch.linspace(0, 1, width).expand(3, height, width)
    none = heatmap_output(torch.zeros(1, 4, 4), height, width)
    none.trace[0].heatmap = None
    draw_trace(image, none, 0, tmp_path / "none.png", max_side=256)
    plain = read_png(tmp_path / "none.png")
    assert plain.std() > 10  # the gray ramp, not a blank picture
    for name, heat in [("zeros", torch.zeros(1, 4, 4)), ("nan", torch.full((1, 4, 4), float("nan"))),
                       ("negative", -torch.rand(1, 4, 4)), ("inf", torch.full((1, 4, 4), float("inf")))]:
        draw_trace(image, heatmap_output(heat, height, width), 0, tmp_path / f"{name}.png", max_side=256)
        assert (read_png(tmp_path / f"{name}.png") == plain).all(), name  # no overlay, no legend key

    heat = torch.full((1, 4, 4), float("nan"))
    heat[0, 0, 3] = 1.0  # top-right cell hot, the rest NaN
    draw_trace(image, heatmap_output(heat, height, width), 0, tmp_path / "partial.png", max_side=256)
    partial = read_png(tmp_path / "partial.png")
    assert partial.shape == plain.shape
    cell = 256 // 4
    assert np.abs(partial[BAND_PX:BAND_PX + cell, -cell:] - plain[BAND_PX:BAND_PX + cell, -cell:]).max() > 40
    assert (partial[BAND_PX + cell:BAND_PX + 3 * cell] == plain[BAND_PX + cell:BAND_PX + 3 * cell]).all()


def test_many_chosen_boxes_label_only_the_most_probable(tmp_path, monkeypatch):
    labels = []
    original = Axes.annotate
    monkeypatch.setattr(Axes, "annotate", lambda self, text, *a, **k: labels.append(text) or original(self, text, *a, **k))
    out = heatmap_output(torch.rand(1, 30, 30), 300, 300, chosen=100)
    out.trace[0].probs = torch.rand(1, 100) * 1e-3  # IPS-like: small attention per patch
    draw_trace(torch.rand(3, 300, 300), out, 0, tmp_path / "ips.png")
    top = out.trace[0].probs[0].topk(MAX_LABELS).values.tolist()
    assert len(labels) == MAX_LABELS
    assert sorted(float(t) for t in labels) == pytest.approx(sorted(top), rel=0.05)  # 2 significant digits
    labels.clear()
    draw_trace(torch.rand(3, 32, 32), synthetic_output(32, 32), 0, tmp_path / "tnet.png")
    assert sorted(labels) == ["0.032", "0.087", "0.237", "0.644"]  # TNet: every chosen box, as before


def test_heatmap_with_wrong_shape(tmp_path):
    for heat in [torch.rand(1, 4, 4), torch.rand(2, 4), torch.rand(2, 0, 4)]:
        out = heatmap_output(torch.rand(2, 4, 4), 32, 32)
        out.trace[0].heatmap = heat
        with pytest.raises(FoveateError, match=r"level 1 heatmap must be \(2, h, w\)") as e:
            draw_trace(torch.rand(3, 32, 32), out, 0, tmp_path / "t.png")
        assert "\n" not in str(e.value)
    assert list(tmp_path.iterdir()) == []

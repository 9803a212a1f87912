"""draw_trace writes a PNG of a predictable size showing each level's chosen boxes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from foveate.errors import FoveateError
from foveate.explain import BAND_PX, PALETTE, display_size, draw_trace
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

"""OpenSlideSource: with a stand-in openslide module (always), and with the real library on a generic
tiled TIFF when the optional extra is installed."""
import sys
import types

import numpy as np
import pytest
import torch
from PIL import Image
from tiff_helpers import write_pyramid

from foveate.geometry import gather_crops
from foveate.sources import load_image, open_source
from foveate.sources.convert import convert
from foveate.sources.openslide import OpenSlideSource


class FakeSlide:
    """OpenSlide's API over an RGB array with a 2x level: RGBA regions, alpha 0 outside the image."""

    def __init__(self, path):
        self.levels = [FakeSlide.image, np.ascontiguousarray(FakeSlide.image[::2, ::2])]
        self.level_dimensions = [(a.shape[1], a.shape[0]) for a in self.levels]
        self.level_downsamples = [1.0, 2.0]

    def read_region(self, location, level, size):
        x0, y0 = (round(c / self.level_downsamples[level]) for c in location)
        (w, h), a = size, self.levels[level]
        out = np.zeros((h, w, 4), np.uint8)
        part = a[max(y0, 0):y0 + h, max(x0, 0):x0 + w]
        out[:part.shape[0], :part.shape[1], :3] = part
        out[:part.shape[0], :part.shape[1], 3] = 255
        return Image.fromarray(out, "RGBA")

    def close(self):
        pass


@pytest.fixture
def fake_openslide(monkeypatch):
    FakeSlide.image = np.random.default_rng(0).integers(0, 256, (120, 90, 3), dtype=np.uint8)
    module = types.SimpleNamespace(OpenSlide=FakeSlide)
    monkeypatch.setitem(sys.modules, "openslide", module)
    return FakeSlide.image


def test_reads_equal_the_levels_with_zero_padding(tmp_path, fake_openslide):
    path = tmp_path / "slide.svs"
    path.write_bytes(b"x")
    src = open_source(path, 3)
    assert isinstance(src, OpenSlideSource) and src.level_sizes == [(120, 90), (60, 45)]
    top, left = torch.tensor([[-5, 30, 200]]), torch.tensor([[10, 70, 0]])
    for level, arr in enumerate([fake_openslide, fake_openslide[::2, ::2]]):
        ref = torch.from_numpy(arr.astype(np.float32) / np.float32(255)).permute(2, 0, 1)[None]
        assert torch.equal(src._crop_level(level, top, left, (25, 30)), gather_crops(ref, top, left, (25, 30)))
    grey = open_source(path, 1).view((120, 90))[0]
    png = tmp_path / "same.png"
    Image.fromarray(fake_openslide).save(png)
    assert torch.equal(grey, load_image(png, 1))  # the same luma as load_image


def test_convert_streams_a_slide(tmp_path, fake_openslide):
    path = tmp_path / "slide.ndpi"
    path.write_bytes(b"x")
    result = convert(path, tmp_path / "out.tif", tile=32, min_side=16)
    assert not result.decoded_whole
    src = open_source(tmp_path / "out.tif", 3)
    assert torch.equal(src.view(src.size)[0],
                       torch.from_numpy(fake_openslide.astype(np.float32) / np.float32(255)).permute(2, 0, 1))


def test_real_openslide_on_a_generic_tiled_tiff(tmp_path):
    pytest.importorskip("openslide")
    rgb = np.random.default_rng(1).integers(0, 256, (200, 150, 3), dtype=np.uint8)
    path = write_pyramid(tmp_path / "generic.tif", [rgb], tile=64, photometric="rgb")
    src = OpenSlideSource(path, 3)
    ref = torch.from_numpy(rgb.astype(np.float32) / np.float32(255)).permute(2, 0, 1)[None]
    top, left = torch.tensor([[-10, 100]]), torch.tensor([[20, 120]])
    assert torch.equal(src._crop_level(0, top, left, (50, 50)), gather_crops(ref, top, left, (50, 50)))
    src.close()

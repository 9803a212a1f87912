"""Bad input to open_source: every problem is a one-line FoveateError that names the file."""
import os
import sys

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from tiff_helpers import halve, write_pyramid

from foveate import FoveateError
from foveate.sources import files, open_source, tiff
from foveate.sources.tiff import TiffSource


def expect_error(path, *needles, **kw):
    with pytest.raises(FoveateError) as info:
        src = open_source(path, kw.pop("channels", 1), **kw)
        src.view((8, 8))  # errors found only when reading count too
    msg = str(info.value)
    assert "\n" not in msg and msg.startswith(str(path)), msg
    for needle in needles:
        assert needle in msg, msg
    return msg


def test_non_tiled_big_tiff_suggests_convert(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "NON_TILED_MAX_SIDE", 100)
    path = tmp_path / "strips.tif"
    tifffile.imwrite(path, np.zeros((50, 150), np.uint8), rowsperstrip=10)
    expect_error(path, "not tiled", "foveate convert")
    # allow_large decodes it whole, as a plain file
    src = open_source(path, 1, allow_large=True)
    assert src.size == (50, 150) and not isinstance(src, TiffSource)


def test_small_non_tiled_tiff_is_decoded_whole(tmp_path):
    a = np.random.default_rng(0).integers(0, 256, (40, 30), dtype=np.uint8)
    path = tmp_path / "small.tif"
    tifffile.imwrite(path, a)
    src = open_source(path, 1)
    assert not isinstance(src, TiffSource)
    assert torch.equal(src.view(src.size)[0, 0], torch.from_numpy(a.astype(np.float32) / np.float32(255)))


def test_corrupt_tile_names_the_file_level_and_region(tmp_path, grey_pyramid):
    path, _ = grey_pyramid
    with tifffile.TiffFile(path) as tf:
        page = tf.series[0].levels[0].keyframe
        offset = page.dataoffsets[1]  # tile (0, 1): rows 0:64, cols 64:128
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(b"\xff" * 32)
    src = open_source(path, 1)  # the header is fine
    ok = src._crop_level(0, torch.tensor([[100]]), torch.tensor([[0]]), (20, 20))  # other tiles still read
    assert ok.shape == (1, 1, 20, 20)
    with pytest.raises(FoveateError) as info:
        src._crop_level(0, torch.tensor([[10]]), torch.tensor([[70]]), (20, 20))
    msg = str(info.value)
    assert msg.startswith(str(path)) and "corrupt" in msg and "level 0" in msg and "rows 10:30" in msg, msg
    assert "\n" not in msg


def test_truncated_files(tmp_path, grey_pyramid):
    path, _ = grey_pyramid
    data = path.read_bytes()
    with tifffile.TiffFile(path) as tf:
        page = tf.series[0].levels[0].keyframe
        cut = int(page.dataoffsets[-1]) + 10  # inside level 0's last tile
    short = tmp_path / "short.tif"
    short.write_bytes(data[:cut])
    expect_error(short, "truncated")
    header_only = tmp_path / "header.tif"
    header_only.write_bytes(data[:40])
    expect_error(header_only)  # tifffile and Pillow both fail: one line naming the file
    empty = tmp_path / "empty.tif"
    empty.write_bytes(b"")
    expect_error(empty, "empty")


def test_box_outside_the_image_reads_zeros(grey_pyramid):
    path, levels = grey_pyramid
    src = open_source(path, 1)
    far = src.crop(torch.tensor([[1000, -500]]), torch.tensor([[1000, -500]]), (30, 30))
    assert torch.equal(far, torch.zeros(2, 1, 30, 30))
    assert src.tiles_decoded == 0  # nothing inside: nothing decoded
    boxes = torch.tensor([[[-10.0, -10.0, 10.0, 10.0]]])  # x1, y1, x2, y2: a quarter inside
    out = src.read(boxes, (20, 20))[0, 0]
    assert torch.equal(out[:10], torch.zeros(10, 20)) and torch.equal(out[:, :10], torch.zeros(20, 10))
    assert torch.equal(out[10:, 10:], torch.from_numpy(levels[0][:10, :10].astype(np.float32) / np.float32(255)))


def test_declared_size_limit_is_a_bomb_guard(grey_pyramid, monkeypatch):
    path, _ = grey_pyramid
    monkeypatch.setattr(tiff, "MAX_LAZY_PIXELS", 1000)
    expect_error(path, "decompression bomb", "allow_large=True")
    assert open_source(path, 1, allow_large=True).size == (300, 200)
    monkeypatch.setattr(tiff, "MAX_LAZY_PIXELS", 10**12)
    monkeypatch.setattr(tiff, "MAX_TILE_PIXELS", 1000)  # 64x64 tiles are above it
    expect_error(path, "tiles", "allow_large=True")


def test_pillow_bomb_guard_stays_on_for_plain_files(tmp_path, monkeypatch):
    path = tmp_path / "big.png"
    Image.new("L", (100, 100)).save(path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    expect_error(path, "allow_large=True")
    assert open_source(path, 1, allow_large=True).size == (100, 100)


def test_openslide_formats_without_the_extra(tmp_path, monkeypatch):
    path = tmp_path / "slide.svs"
    path.write_bytes(b"II*\x00" + bytes(100))
    monkeypatch.setitem(sys.modules, "openslide", None)  # import openslide -> ImportError
    msg = expect_error(path, "pip install 'foveate[openslide]'")
    assert ".svs" in msg


def test_16_bit_tiff_is_scaled(tmp_path):
    a = np.array([[0, 1, 32768, 65535]] * 64, np.uint16)
    path = write_pyramid(tmp_path / "g16.tif", [np.tile(a, (1, 16))], tile=64, photometric="minisblack")
    src = open_source(path, 1)
    assert isinstance(src, TiffSource)
    row = src.view(src.size)[0, 0, 0, :4]
    assert torch.equal(row, torch.tensor([0, 1, 32768, 65535], dtype=torch.float32) / 65535)


def test_rgba_tiff_refused_unless_opaque(tmp_path):
    rgba = np.full((64, 64, 4), 200, np.uint8)
    rgba[..., 3] = 255
    rgba[4, 4, 3] = 0  # one transparent pixel, also in level 1 (a 2x subsampling): found when opening
    path = write_pyramid(tmp_path / "rgba.tif", [rgba, halve(rgba)], tile=32, photometric="rgb",
                         extrasamples=["unassalpha"])
    expect_error(path, "transparency", channels=3)
    # an opaque coarse level does not hide it: reading the pixel fails
    rgba[4, 4, 3], rgba[5, 5, 3] = 255, 0  # now only in level 0
    level1 = halve(rgba)
    assert level1[..., 3].min() == 255
    path = write_pyramid(tmp_path / "rgba2.tif", [rgba, level1], tile=32, photometric="rgb",
                         extrasamples=["unassalpha"])
    src = open_source(path, 3)
    with pytest.raises(FoveateError, match="transparency"):
        src.crop(torch.tensor([[0]]), torch.tensor([[0]]), (16, 16))


def test_unsupported_layouts(tmp_path):
    pal = tmp_path / "palette.tif"
    tifffile.imwrite(pal, np.zeros((64, 64), np.uint8), tile=(16, 16), photometric="palette",
                     colormap=np.zeros((3, 256), np.uint16))
    expect_error(pal, "palette")
    f = tmp_path / "float.tif"
    tifffile.imwrite(f, np.full((64, 64), 2.0, np.float32), tile=(16, 16))
    expect_error(f, "outside [0, 1]")
    i16 = tmp_path / "int16.tif"
    tifffile.imwrite(i16, np.zeros((64, 64), np.int16), tile=(16, 16))
    expect_error(i16, "sample type")


def test_not_a_tiff_despite_the_name(tmp_path):
    path = tmp_path / "fake.tif"
    path.write_bytes(b"this is not an image" * 10)
    expect_error(path, "not an image")
    missing = tmp_path / "missing.tif"
    expect_error(missing, "no such file")
    assert not os.path.exists(missing)

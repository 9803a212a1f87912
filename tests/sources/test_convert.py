"""foveate convert: tiled, compressed pyramids (SubIFDs) that are pixel-equal at full resolution; streamed
from tiled inputs, decoded once from plain ones; written atomically; bad options are one-line errors."""
import sys

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from tiff_helpers import write_pyramid

from foveate import FoveateError
from foveate.cli import main
from foveate.sources import load_image, open_source
from foveate.sources.convert import convert, downsample2
from foveate.sources.tiff import TiffSource


def levels_of(path):
    with tifffile.TiffFile(path) as tf:
        series = tf.series[0]
        pages = [lv.keyframe for lv in series.levels]
        info = [(p.is_tiled, p.tilelength, int(p.compression)) for p in pages]
        return [lv.asarray() for lv in series.levels], info, len(tf.pages[0].subifds or ())


def test_png_round_trip(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (700, 500, 3), dtype=np.uint8)
    png = tmp_path / "in.png"
    Image.fromarray(rgb).save(png)
    out = tmp_path / "out.tif"
    result = convert(png, out, tile=128, min_side=100)
    assert result.decoded_whole and result.levels == [(700, 500), (350, 250), (175, 125)]
    arrays, info, subifds = levels_of(out)
    assert subifds == 2  # the coarser levels are SubIFDs of the first page (OME / QuPath layout)
    assert all(tiled and tile == 128 and compression == 8 for tiled, tile, compression in info)  # 8: zlib
    assert np.array_equal(arrays[0], rgb)
    assert np.array_equal(arrays[1], downsample2(rgb))
    src = open_source(out, 3)
    assert isinstance(src, TiffSource) and src.level_sizes == result.levels
    assert torch.equal(src.view(src.size)[0], load_image(png, 3))


def test_downsample_is_the_2x2_mean_of_pixels_inside():
    a = np.array([[0, 2, 9], [4, 6, 10], [1, 1, 255]], np.uint8)
    assert downsample2(a).tolist() == [[3, 10], [1, 255]]  # (0+2+4+6)/4, (9+10)/2 -> 9.5 -> 10, ...
    b = np.array([[0, 1], [0, 0]], np.uint8)
    assert downsample2(b).tolist() == [[0]]  # 0.25 rounds down


def test_tiled_tiff_is_streamed_and_lossless(tmp_path):
    a = np.random.default_rng(1).integers(0, 65536, (600, 450), dtype=np.uint16)
    src = write_pyramid(tmp_path / "in.tif", [a], tile=64, photometric="minisblack")
    for compression, code in [("zlib", 8), ("zstd", 50000), ("none", 1)]:
        out = tmp_path / f"out-{compression}.tif"
        result = convert(src, out, tile=256, compression=compression, min_side=64)
        assert not result.decoded_whole
        arrays, info, _ = levels_of(out)
        assert arrays[0].dtype == np.uint16 and np.array_equal(arrays[0], a)
        assert len(arrays) == 3 and {c for _, _, c in info} == {code}  # 450 -> 225 -> 113 (56 < 64)


def test_strip_tiff_is_streamed(tmp_path):
    a = np.random.default_rng(2).integers(0, 256, (1000, 300), dtype=np.uint8)
    strips = tmp_path / "strips.tif"
    tifffile.imwrite(strips, a, rowsperstrip=16)
    result = convert(strips, tmp_path / "out.tif", tile=64, min_side=64)
    assert not result.decoded_whole
    assert np.array_equal(levels_of(tmp_path / "out.tif")[0][0], a)


def test_jpeg_is_lossy_but_close(tmp_path):
    grey = np.tile(np.linspace(0, 255, 256, dtype=np.uint8), (256, 1))
    png = tmp_path / "g.png"
    Image.fromarray(grey).save(png)
    convert(png, tmp_path / "g.tif", tile=128, compression="jpeg", quality=95, min_side=64)
    arrays, info, _ = levels_of(tmp_path / "g.tif")
    assert info[0][2] == 7 and np.abs(arrays[0].astype(int) - grey).max() <= 4


def test_bad_options_and_inputs(tmp_path):
    png = tmp_path / "a.png"
    Image.fromarray(np.zeros((64, 64), np.uint16)).save(png)  # 16-bit
    out = tmp_path / "o.tif"
    with pytest.raises(FoveateError, match="multiple of 16"):
        convert(png, out, tile=100)
    with pytest.raises(FoveateError, match="8-bit"):
        convert(png, out, compression="jpeg")
    with pytest.raises(FoveateError, match="one of"):
        convert(png, out, compression="lzw")
    with pytest.raises(FoveateError, match="must not be the input"):
        convert(png, png)
    with pytest.raises(FoveateError, match="no such file"):
        convert(tmp_path / "missing.png", out)
    assert not out.exists() and sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]  # no leftovers


def test_failure_leaves_the_old_output_untouched(tmp_path, monkeypatch):
    png = tmp_path / "a.png"
    Image.fromarray(np.full((300, 300), 7, np.uint8)).save(png)
    out = tmp_path / "o.tif"
    out.write_bytes(b"old")
    module = sys.modules["foveate.sources.convert"]  # the module (foveate.sources.convert is the function)

    def boom(band):
        raise RuntimeError("interrupted")

    monkeypatch.setattr(module, "downsample2", boom)
    with pytest.raises(RuntimeError):
        convert(png, out, tile=64, min_side=64)
    assert out.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "o.tif"]


def test_cli(tmp_path, capsys):
    png = tmp_path / "a.png"
    Image.fromarray(np.full((300, 200), 9, np.uint8)).save(png)
    out = tmp_path / "a.tif"
    assert main(["convert", str(png), str(out), "--tile", "64", "--min-side", "64"]) == 0
    captured = capsys.readouterr()
    assert "wrote" in captured.out and "2 levels (200x300, 100x150)" in captured.out
    assert "decoded whole" in captured.err
    assert main(["convert", str(tmp_path / "nope.png"), str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("foveate: error:") and "nope.png" in err and "\n" not in err

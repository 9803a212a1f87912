"""TiffSource: lazy reads equal the decoded pixels at every level, zero padding outside, only the needed
tiles are decoded, the same tensors as load_image, and models give the same logits as in memory."""
import pickle

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image
from tiff_helpers import halve, write_pyramid

from foveate import create_model
from foveate.geometry import gather_crops
from foveate.sources import TensorSource, load_image, open_source
from foveate.sources.tiff import TiffSource


def as_tensor(arr: np.ndarray, white: float = 255.0) -> torch.Tensor:
    """(H, W) or (H, W, 3) -> (1, C, H, W) float32 in [0, 1]."""
    t = torch.from_numpy(arr.astype(np.float32) / np.float32(white))
    return (t[None] if t.ndim == 2 else t.permute(2, 0, 1))[None]


def test_dispatch_and_levels(grey_pyramid):
    path, levels = grey_pyramid
    src = open_source(path, 1)
    assert isinstance(src, TiffSource)
    assert src.level_sizes == [lv.shape for lv in levels]
    assert (src.batch, src.channels, src.size) == (1, 1, (300, 200))


@pytest.mark.parametrize("level", [0, 1, 2])
def test_crops_equal_the_decoded_level_with_zero_padding(grey_pyramid, level):
    path, levels = grey_pyramid
    src = open_source(path, 1)
    ref = as_tensor(levels[level])
    h, w = levels[level].shape
    # inside, across tile borders, partly outside on every side, wholly outside
    top = torch.tensor([[5, 60, -20, h - 30, -100, h + 5]])
    left = torch.tensor([[7, 60, -10, w - 25, -100, 3]])
    got = src._crop_level(level, top, left, (40, 50))
    assert got.shape == (6, 1, 40, 50) and got.dtype == torch.float32
    assert torch.equal(got, gather_crops(ref, top, left, (40, 50)))
    assert torch.equal(got[4], torch.zeros(1, 40, 50)) and torch.equal(got[5], torch.zeros(1, 40, 50))


def test_resampled_reads_match_an_in_memory_pyramid(grey_pyramid):
    """crop/view choose the same level and resize the same way as a TensorSource with the same levels."""
    path, levels = grey_pyramid
    src = open_source(path, 1)
    mem = TensorSource(as_tensor(levels[0]), [as_tensor(lv) for lv in levels[1:]])
    top, left = torch.tensor([[0, 100, -40]]), torch.tensor([[0, 120, 170]])
    for size, out in [((120, 80), (30, 20)), ((64, 64), (40, 40)), ((200, 200), (200, 200))]:
        assert torch.equal(src.crop(top, left, size, out), mem.crop(top, left, size, out))
    assert torch.equal(src.view((75, 50)), mem.view((75, 50)))
    boxes = torch.tensor([[[10.0, 20.0, 60.0, 90.0], [150.0, 250.0, 260.0, 330.0]]])
    assert torch.equal(src.read(boxes, (16, 16)), mem.read(boxes, (16, 16)))


def test_only_the_needed_tiles_are_decoded(tmp_path):
    a = np.random.default_rng(1).integers(0, 256, (1024, 1024), dtype=np.uint8)
    path = write_pyramid(tmp_path / "big.tif", [a, halve(a)], tile=128, photometric="minisblack")
    src = open_source(path, 1)
    assert src.tiles_decoded == 0  # opening reads no pixels
    src._crop_level(0, torch.tensor([[130]]), torch.tensor([[140]]), (100, 100))  # inside tile (1, 1)
    assert src.tiles_decoded == 1 and src.bytes_decoded == 128 * 128
    src._crop_level(0, torch.tensor([[250]]), torch.tensor([[250]]), (10, 10))  # corner of 4 tiles
    assert src.tiles_decoded == 5
    src._crop_level(0, torch.tensor([[-50]]), torch.tensor([[1000]]), (60, 60))  # partly outside: 1 tile
    assert src.tiles_decoded == 6
    # k overlapping regions of one call are read as their bounding box: shared tiles decoded once
    n = src.tiles_decoded
    src._crop_level(0, torch.tensor([[0, 0, 64, 64]]), torch.tensor([[0, 64, 0, 64]]), (128, 128))  # 192x192
    assert src.tiles_decoded - n == 4
    # far-apart regions are read one by one (not their 1024x1024 bounding box)
    n = src.tiles_decoded
    src._crop_level(0, torch.tensor([[0, 900]]), torch.tensor([[0, 900]]), (20, 20))
    assert src.tiles_decoded - n == 2
    assert src.pixels_read > 0


def test_same_tensor_as_load_image(tmp_path):
    """Pillow reads small tiled TIFFs too: both paths give identical tensors (luma, 16-bit, opaque alpha)."""
    rng = np.random.default_rng(2)
    cases = {
        "rgb": (rng.integers(0, 256, (90, 70, 3), dtype=np.uint8), {"photometric": "rgb"}),
        "grey16": (rng.integers(0, 65536, (90, 70), dtype=np.uint16), {"photometric": "minisblack"}),
        "grey8": (rng.integers(0, 256, (90, 70), dtype=np.uint8), {"photometric": "minisblack"}),
    }
    for name, (arr, kw) in cases.items():
        path = write_pyramid(tmp_path / f"{name}.tif", [arr], tile=32, compression=None, **kw)
        for channels in (1, 3):
            src = open_source(path, channels)
            assert isinstance(src, TiffSource)
            assert torch.equal(src.view(src.size)[0], load_image(path, channels)), (name, channels)
    # 16-bit is scaled by 65535, not clipped
    arr = cases["grey16"][0]
    src = open_source(tmp_path / "grey16.tif", 1)
    assert torch.equal(src.view(src.size)[0, 0], torch.from_numpy(arr.astype(np.float32) / np.float32(65535)))
    # RGBA that is fully opaque: alpha dropped, same as the RGB pixels through Pillow
    rgba = np.concatenate([cases["rgb"][0], np.full((90, 70, 1), 255, np.uint8)], axis=-1)
    path = write_pyramid(tmp_path / "rgba.tif", [rgba], tile=32, photometric="rgb", extrasamples=["unassalpha"])
    png = tmp_path / "rgb.png"
    Image.fromarray(cases["rgb"][0]).save(png)
    for channels in (1, 3):
        src = open_source(path, channels)
        assert torch.equal(src.view(src.size)[0], load_image(png, channels))


def test_rgb_pyramid_and_minisblack_tile_reads(tmp_path):
    rgb = np.random.default_rng(3).integers(0, 256, (130, 150, 3), dtype=np.uint8)
    path = write_pyramid(tmp_path / "rgb.tif", [rgb, halve(rgb)], tile=32, photometric="rgb")
    src = open_source(path, 3)
    top, left = torch.tensor([[-5, 40]]), torch.tensor([[100, 20]])
    for level, arr in enumerate([rgb, halve(rgb)]):
        assert torch.equal(src._crop_level(level, top, left, (30, 60)), gather_crops(as_tensor(arr), top, left, (30, 60)))


@pytest.mark.parametrize("name", ["tnet", "ats"])
def test_models_give_the_same_output_on_the_file_and_in_memory(tmp_path, name):
    a = np.random.default_rng(4).integers(0, 256, (400, 400), dtype=np.uint8)
    levels = [a, halve(a), halve(halve(a))]
    path = write_pyramid(tmp_path / "img.tif", levels, tile=64, photometric="minisblack")
    kw = {"backbone": "small_cnn", "base_resolution": 96, "grid": 4} if name == "tnet" else {"patch_size": 32}
    model = create_model(name, num_classes=10, in_chans=1, **kw).eval()
    mem = TensorSource(as_tensor(levels[0]), [as_tensor(lv) for lv in levels[1:]])
    with torch.no_grad():
        torch.manual_seed(0)
        on_file = model(open_source(path, 1)).logits
        torch.manual_seed(0)
        in_memory = model(mem).logits
    torch.testing.assert_close(on_file, in_memory, rtol=0, atol=1e-6)


def test_pickled_source_reopens_the_file(grey_pyramid):
    """DataLoader workers get a copy that opens its own file handle."""
    path, _ = grey_pyramid
    src = open_source(path, 1)
    copy = pickle.loads(pickle.dumps(src))
    top, left = torch.tensor([[10]]), torch.tensor([[20]])
    assert torch.equal(copy.crop(top, left, (30, 30)), src.crop(top, left, (30, 30)))
    src.close()
    copy.close()


def test_ome_tiff_series_levels(tmp_path):
    """An OME-TIFF pyramid (SubIFDs plus OME-XML) reads like any other."""
    a = np.random.default_rng(5).integers(0, 256, (256, 192), dtype=np.uint8)
    path = tmp_path / "img.ome.tif"
    with tifffile.TiffWriter(path, bigtiff=True, ome=True) as tw:
        tw.write(a, tile=(64, 64), subifds=1, compression="zlib", photometric="minisblack", metadata={"axes": "YX"})
        tw.write(halve(a), tile=(64, 64), subfiletype=1, compression="zlib", photometric="minisblack")
    src = open_source(path, 1)
    assert isinstance(src, TiffSource) and src.level_sizes == [(256, 192), (128, 96)]
    assert torch.equal(src._crop_level(1, torch.tensor([[3]]), torch.tensor([[5]]), (50, 50)),
                       gather_crops(as_tensor(halve(a)), torch.tensor([[3]]), torch.tensor([[5]]), (50, 50)))

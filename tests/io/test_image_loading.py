"""load_image / image_files on real files of every pixel mode, and every way a file can be bad."""
from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from foveate.errors import FoveateError
from foveate.sources import image as image_module
from foveate.sources import image_files, load_image


def save(img: Image.Image, path: Path, **kw) -> Path:
    img.save(path, **kw)
    return path


def rgb_array(h: int = 6, w: int = 10) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8)


def expect_error(path: Path, *fragments: str, **kw) -> str:
    """load_image(path) raises a one-line FoveateError starting with the path."""
    with pytest.raises(FoveateError) as info:
        load_image(path, kw.pop("channels", 3), **kw)
    msg = str(info.value)
    assert msg.startswith(str(path)) and "\n" not in msg, msg
    for fragment in fragments:
        assert fragment in msg, msg
    return msg


def tiff_bytes(width: int, height: int, samples: int) -> bytes:
    """A minimal uncompressed 8-bit TIFF, for layouts Pillow cannot write (e.g. 5 samples)."""
    data = bytes(width * height * samples)
    bps = struct.pack(f"<{samples}H", *[8] * samples)
    n = 10
    bps_at = 8 + 2 + 12 * n + 4
    data_at = bps_at + len(bps)
    photometric = 2 if samples >= 3 else 1
    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, samples, bps_at), (259, 3, 1, 1),
               (262, 3, 1, photometric), (273, 4, 1, data_at), (277, 3, 1, samples),
               (278, 4, 1, height), (279, 4, 1, len(data)), (284, 3, 1, 1)]
    out = b"II*\x00" + struct.pack("<IH", 8, n)
    for tag, kind, count, value in entries:
        out += struct.pack("<HHII", tag, kind, count, value) if kind == 4 or count > 1 else \
            struct.pack("<HHIHH", tag, kind, count, value, 0)
    return out + struct.pack("<I", 0) + bps + data


# ---- modes -------------------------------------------------------------------------------


def test_gray_png_exact_and_replicated(tmp_path):
    a = np.array([[0, 128, 255], [1, 2, 3]], dtype=np.uint8)
    p = save(Image.fromarray(a), tmp_path / "g.png")
    one = load_image(p, 1)
    assert one.dtype == torch.float32 and one.shape == (1, 2, 3)
    assert torch.equal(one[0], torch.from_numpy(a.astype(np.float32) / 255))
    three = load_image(p, 3)
    assert three.shape == (3, 2, 3) and torch.equal(three, one.expand(3, -1, -1))
    three[0, 0, 0] = 0.5  # a real tensor, not a broadcast view
    assert three[1, 0, 0] == 0


def test_bilevel_png(tmp_path):
    img = Image.new("1", (4, 2))
    img.putpixel((1, 0), 1)
    t = load_image(save(img, tmp_path / "b.png"), 1)
    assert Image.open(tmp_path / "b.png").mode == "1"
    assert t.tolist() == [[[0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]]]


def test_rgb_exact_and_luminance_like_pillow(tmp_path):
    a = rgb_array()
    p = save(Image.fromarray(a), tmp_path / "c.png")
    t = load_image(p, 3)
    assert t.shape == (3, 6, 10)  # (C, H, W) of a 10-wide, 6-tall image
    assert torch.equal(t, torch.from_numpy(a.astype(np.float32) / 255).permute(2, 0, 1))
    gray = load_image(p, 1)[0]
    pil_l = torch.from_numpy(np.asarray(Image.fromarray(a).convert("L"), dtype=np.float32) / 255)
    assert (gray - pil_l).abs().max() <= 0.51 / 255  # Pillow rounds to 8 bits, we do not
    r, g, b = torch.from_numpy(a.astype(np.float64) / 255).unbind(-1)
    assert torch.allclose(gray.double(), 0.299 * r + 0.587 * g + 0.114 * b, atol=1e-6)


def palette_image() -> Image.Image:
    img = Image.new("P", (4, 2))
    img.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0, 10, 20, 30])
    img.putdata([0, 1, 2, 3, 3, 2, 1, 0])
    return img


def test_palette_equals_its_rgb_conversion(tmp_path):
    img = palette_image()
    p = save(img, tmp_path / "p.png")
    assert Image.open(p).mode == "P"
    rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / 255
    assert torch.equal(load_image(p, 3), torch.from_numpy(rgb).permute(2, 0, 1))
    gif = load_image(save(img, tmp_path / "p.gif"), 3)
    assert torch.equal(gif, torch.from_numpy(rgb).permute(2, 0, 1))


def test_gray_palette_to_one_channel(tmp_path):
    img = Image.new("P", (2, 1))
    img.putpalette([50, 50, 50, 200, 200, 200])
    img.putdata([1, 0])
    t = load_image(save(img, tmp_path / "gp.png"), 1)
    assert torch.allclose(t, torch.tensor([[[200 / 255, 50 / 255]]]), atol=1e-6)


def test_palette_transparency(tmp_path):
    used = save(palette_image(), tmp_path / "used.png", transparency=3)
    expect_error(used, "has transparency; flatten it onto a background first")
    alpha = save(palette_image(), tmp_path / "alpha.png", transparency=bytes([255, 255, 128, 255]))
    expect_error(alpha, "has transparency")
    img = palette_image()
    img.putdata([0, 1, 2, 0, 0, 2, 1, 0])  # index 3 (the transparent one) is never used
    unused = save(img, tmp_path / "unused.png", transparency=3)
    assert torch.equal(load_image(unused, 3)[:, 0, 1], torch.tensor([1.0, 0.0, 0.0]))


def test_alpha_opaque_is_dropped_transparent_is_refused(tmp_path):
    a = rgb_array()
    opaque = np.dstack([a, np.full(a.shape[:2], 255, np.uint8)])
    p = save(Image.fromarray(opaque, "RGBA"), tmp_path / "opaque.png")
    assert torch.equal(load_image(p, 3), torch.from_numpy(a.astype(np.float32) / 255).permute(2, 0, 1))
    opaque[2, 3, 3] = 254
    expect_error(save(Image.fromarray(opaque, "RGBA"), tmp_path / "see-through.png"), "has transparency")
    la = np.stack([a[..., 0], np.full(a.shape[:2], 255, np.uint8)], -1)
    p = save(Image.fromarray(la, "LA"), tmp_path / "la.png")
    assert torch.equal(load_image(p, 1)[0], torch.from_numpy(a[..., 0].astype(np.float32) / 255))
    la[0, 0, 1] = 0
    expect_error(save(Image.fromarray(la, "LA"), tmp_path / "la-see-through.png"), "has transparency")


def test_colour_key_transparency(tmp_path):
    a = rgb_array()
    key = tuple(int(v) for v in a[1, 1])
    expect_error(save(Image.fromarray(a), tmp_path / "key.png", transparency=key), "has transparency")
    p = save(Image.fromarray(a), tmp_path / "absent-key.png", transparency=(1, 2, 3))
    assert not np.all(a == (1, 2, 3), axis=-1).any()
    assert load_image(p, 3).shape == (3, 6, 10)


def test_16_bit(tmp_path):
    a = np.array([[0, 32768, 65535]], dtype=np.uint16)
    png = save(Image.fromarray(a), tmp_path / "g16.png")
    assert Image.open(png).mode == "I;16"
    t = load_image(png, 1)
    assert t[0, 0].tolist() == [0.0, pytest.approx(32768 / 65535), 1.0]
    assert t[0, 0, 2].item() == 1.0
    big_endian = Image.new("I;16B", (3, 1))
    big_endian.putpixel((1, 0), 32768)
    big_endian.putpixel((2, 0), 65535)
    tif = save(big_endian, tmp_path / "g16b.tif")
    assert Image.open(tif).mode == "I;16B"
    assert torch.equal(load_image(tif, 3), t.expand(3, -1, -1))
    pgm = save(Image.fromarray(a), tmp_path / "g16.pgm")
    assert torch.equal(load_image(pgm, 1), t)


def test_32_bit_integer(tmp_path):
    p = save(Image.fromarray(np.array([[0, 32768, 65535]], dtype=np.int32)), tmp_path / "i.tif")
    assert Image.open(p).mode == "I"
    assert load_image(p, 1)[0, 0].tolist() == [0.0, pytest.approx(32768 / 65535), 1.0]
    bad = save(Image.fromarray(np.array([[0, 70000]], dtype=np.int32)), tmp_path / "i-big.tif")
    expect_error(bad, "outside 0..65535")
    negative = save(Image.fromarray(np.array([[-1, 5]], dtype=np.int32)), tmp_path / "i-neg.tif")
    expect_error(negative, "outside 0..65535")


def test_float(tmp_path):
    a = np.array([[0.0, 0.25, 1.0]], dtype=np.float32)
    p = save(Image.fromarray(a), tmp_path / "f.tif")
    assert Image.open(p).mode == "F"
    assert load_image(p, 3)[:, 0].tolist() == [[0.0, 0.25, 1.0]] * 3
    expect_error(save(Image.fromarray(a * 2), tmp_path / "f2.tif"), "outside [0, 1]")
    expect_error(save(Image.fromarray(a - 0.5), tmp_path / "fneg.tif"), "outside [0, 1]")
    nan = a.copy()
    nan[0, 1] = np.nan
    expect_error(save(Image.fromarray(nan), tmp_path / "fnan.tif"), "NaN")


@pytest.mark.parametrize("mode, value", [("CMYK", (10, 200, 30, 40)), ("YCbCr", (100, 140, 90)),
                                         ("LAB", (136, 80, 67))])
def test_other_colour_spaces_convert_to_rgb(tmp_path, mode, value):
    img = Image.new(mode, (5, 3), value)
    p = save(img, tmp_path / f"{mode}.tif")
    assert Image.open(p).mode == mode
    rgb = np.asarray(img.convert("RGB"), dtype=np.float32) / 255
    assert torch.equal(load_image(p, 3), torch.from_numpy(rgb).permute(2, 0, 1))


def test_cmyk_jpeg(tmp_path):
    img = Image.new("CMYK", (16, 8), (0, 255, 255, 0))  # red
    p = save(img, tmp_path / "cmyk.jpg", quality=95)
    assert Image.open(p).mode == "CMYK"
    t = load_image(p, 3)
    assert t.shape == (3, 8, 16)
    assert torch.allclose(t.mean((1, 2)), torch.tensor([1.0, 0.0, 0.0]), atol=0.03)


def test_lossless_formats_and_jpeg(tmp_path):
    a = rgb_array()
    expected = torch.from_numpy(a.astype(np.float32) / 255).permute(2, 0, 1)
    for name in ("c.bmp", "c.tiff", "c.webp"):
        kw = {"lossless": True} if name.endswith("webp") else {}
        assert torch.equal(load_image(save(Image.fromarray(a), tmp_path / name, **kw), 3), expected), name
    jpg = save(Image.fromarray(a), tmp_path / "c.JPG")
    decoded = np.asarray(Image.open(jpg), dtype=np.float32) / 255  # lossy: compare with Pillow's decode
    assert torch.equal(load_image(jpg, 3), torch.from_numpy(decoded).permute(2, 0, 1))


def test_multi_page_tiff_uses_first_page(tmp_path):
    first, second = Image.new("L", (3, 2), 10), Image.new("L", (3, 2), 200)
    p = save(first, tmp_path / "pages.tif", save_all=True, append_images=[second])
    assert Image.open(p).n_frames == 2
    assert torch.equal(load_image(p, 1), torch.full((1, 2, 3), 10 / 255))


# ---- bad files ---------------------------------------------------------------------------


def test_bad_channels(tmp_path):
    expect_error(save(Image.new("L", (2, 2)), tmp_path / "x.png"), "channels must be 1 or 3", channels=4)


def test_missing_directory_empty_and_not_an_image(tmp_path):
    expect_error(tmp_path / "nowhere.png", "no such file")
    expect_error(tmp_path, "is a directory")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    expect_error(empty, "empty (0 bytes)")
    text = tmp_path / "notes.png"
    text.write_text("these are my notes\nline two\n")
    expect_error(text, "not an image")


@pytest.mark.parametrize("name", ["cut.png", "cut.jpg"])
def test_truncated(tmp_path, name):
    full = save(Image.fromarray(rgb_array(64, 64)), tmp_path / f"full-{name}")
    data = full.read_bytes()
    cut = tmp_path / name
    cut.write_bytes(data[: len(data) // 2])
    expect_error(cut, "truncated or corrupt")


def test_truncated_even_if_pillow_is_told_to_tolerate_it(tmp_path, monkeypatch):
    data = save(Image.fromarray(rgb_array(64, 64)), tmp_path / "full.jpg").read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: len(data) // 2])
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    expect_error(cut, "truncated or corrupt")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored


def test_corrupt_png_data(tmp_path):
    data = bytearray(save(Image.fromarray(rgb_array(64, 64)), tmp_path / "ok.png").read_bytes())
    start = data.index(b"IDAT") + 40
    data[start:start + 64] = bytes(64)  # garbage inside the compressed stream (CRC now wrong)
    bad = tmp_path / "flipped.png"
    bad.write_bytes(bytes(data))
    expect_error(bad, "truncated or corrupt")


def test_unsupported_layouts(tmp_path):
    five = tmp_path / "five-channels.tif"
    five.write_bytes(tiff_bytes(4, 3, 5))
    expect_error(five, "more than 4 channels")
    zero = tmp_path / "zero-width.tif"
    zero.write_bytes(tiff_bytes(0, 3, 1))
    expect_error(zero, "zero size")
    ok = tmp_path / "ok.tif"
    ok.write_bytes(tiff_bytes(4, 3, 3))  # the helper itself writes valid files
    assert torch.equal(load_image(ok, 3), torch.zeros(3, 3, 4))


@pytest.mark.parametrize("limit", [1000, 3000])  # 64x64 = 4096 px: above 2x limit / above limit
def test_decompression_bomb_guard(tmp_path, monkeypatch, limit):
    p = save(Image.fromarray(rgb_array(64, 64)), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", limit)
    expect_error(p, "decompression bomb", "allow_large=True")
    assert load_image(p, 3, allow_large=True).shape == (3, 64, 64)
    assert Image.MAX_IMAGE_PIXELS == limit  # restored
    monkeypatch.setattr(image_module, "LARGE_IMAGE_PIXELS", limit)
    expect_error(p, "too large even with allow_large=True", allow_large=True)


# ---- listing -----------------------------------------------------------------------------


def test_image_files(tmp_path):
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for name in ["b.PNG", "a.jpg", "c.JPEG", "d.tif", "e.TIFF", "f.bmp", "g.webp", "notes.txt",
                 ".hidden.png", "sub/inner.png"]:
        (folder / name).write_bytes(b"x")
    explicit = tmp_path / "missing.png"
    found = image_files([explicit, str(folder)])
    assert found[0] == explicit
    assert [p.name for p in found[1:]] == ["a.jpg", "b.PNG", "c.JPEG", "d.tif", "e.TIFF", "f.bmp", "g.webp"]
    assert all(p.parent == folder for p in found[1:])
    assert image_files([folder / "sub" / "inner.png"]) == [folder / "sub" / "inner.png"]
    (tmp_path / "void").mkdir()
    with pytest.raises(FoveateError, match="void: directory has no image files"):
        image_files([tmp_path / "void"])

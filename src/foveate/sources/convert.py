"""`foveate convert`: any large image -> a tiled, compressed, pyramidal TIFF that foveate (and QuPath,
OpenSlide, OME tools) read lazily.

The output holds full resolution in the first IFD and 2x-downsampled levels (2x2 mean) as its
SubIFDs, down to `min_side` px. Tiled inputs (a TIFF, tiled or in strips, or an OpenSlide slide)
are streamed: level 0 band by band (one row of tiles at a time), each coarser level from the one
before it through a temporary tiled TIFF, so memory follows a band, never the image. A plain
PNG/JPEG/... cannot be read in parts and is decoded once. The file appears atomically (temporary
file + rename): an interrupted convert leaves no half-written TIFF under the output name.
"""
from __future__ import annotations

import os
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FoveateError
from ..fileio import _fsync_directory
from .image import _decode, _pixels
from .openslide import OPENSLIDE_EXTENSIONS, OpenSlideSource
from .region import Size, pyramid_sizes
from .tiff import TiffSource

COMPRESSIONS = ("zlib", "jpeg", "zstd", "none")
_OPENSLIDE_COLUMNS = 8192  # columns per OpenSlide read while streaming a band (bounds its RGBA buffer)

ReadRows = Callable[[int, int], np.ndarray]  # (y0, y1) -> rows y0:y1, (y1 - y0, W) or (y1 - y0, W, 3)


@dataclass
class ConvertResult:
    """What `convert` wrote: level sizes (H, W), full resolution first."""

    path: Path
    levels: list[Size]
    tile: int
    compression: str
    decoded_whole: bool  # the input could not be read in parts (plain formats, single-strip TIFFs)
    bytes: int
    seconds: float


@dataclass
class PixelReader:
    """An image as bands of rows of native pixels: shape (H, W), 1 or 3 samples, uint8/uint16/float32."""

    height: int
    width: int
    samples: int
    dtype: np.dtype
    read_rows: ReadRows
    decoded_whole: bool = False


def downsample2(band: np.ndarray) -> np.ndarray:
    """(h, w[, S]) -> (ceil(h/2), ceil(w/2)[, S]): 2x2 mean over the pixels inside the image (an odd
    last row/column is averaged alone), integers rounded half up."""
    h, w = band.shape[:2]
    if h % 2 or w % 2:
        pad = [(0, h % 2), (0, w % 2)] + [(0, 0)] * (band.ndim - 2)
        band = np.pad(band, pad, mode="edge")  # a replicated edge averages to the valid pixels' mean
    if not band.any():
        return np.zeros((band.shape[0] // 2, band.shape[1] // 2, *band.shape[2:]), band.dtype)
    # 4 x 255 fits 16 bits: half the memory traffic of 32-bit sums for the common 8-bit case
    acc = band.astype(np.uint16 if band.dtype == np.uint8 else np.uint32 if band.dtype.kind in "ub" else np.float64)
    s = acc[0::2, 0::2] + acc[1::2, 0::2] + acc[0::2, 1::2] + acc[1::2, 1::2]
    return ((s + 2) // 4 if band.dtype.kind in "ub" else s / 4).astype(band.dtype)


def _tiles(read_rows: ReadRows, height: int, width: int, tile: int) -> Iterator[np.ndarray]:
    """Row-major tiles of an image read one band of `tile` rows at a time (edge tiles partial)."""
    for y in range(0, height, tile):
        band = read_rows(y, min(y + tile, height))
        for x in range(0, width, tile):
            yield np.ascontiguousarray(band[:, x:x + tile])


def _half(read_rows: ReadRows, height: int) -> ReadRows:
    """Rows of the 2x-downsampled image of `read_rows` (an image `height` rows high)."""
    return lambda y0, y1: downsample2(read_rows(2 * y0, min(2 * y1, height)))


def _write_options(compression: str, dtype: np.dtype, samples: int, tile: int, quality: int) -> dict[str, Any]:
    opts: dict[str, Any] = {"tile": (tile, tile), "photometric": "rgb" if samples == 3 else "minisblack",
                            "dtype": dtype, "software": "foveate"}
    if compression == "jpeg":
        if dtype != np.uint8:
            raise FoveateError(f"jpeg compression needs 8-bit pixels, the image has {dtype}: use zlib or zstd")
        opts.update(compression="jpeg", compressionargs={"level": quality})
    elif compression in ("zlib", "zstd"):
        opts.update(compression=compression, predictor=dtype.kind in "ui")
    return opts


def write_pyramid(out: str | os.PathLike[str], image: PixelReader, *, tile: int = 256, compression: str = "zlib",
                  min_side: int = 256, quality: int = 90) -> list[Size]:
    """Write `image` as a tiled pyramidal BigTIFF at `out` (atomically), streaming band by band.

    Coarser levels are built first into temporary tiled TIFFs beside `out` (each from the one
    before, so the input is read twice in all: once for them, once for level 0).
    returns the level sizes (H, W), full resolution first.
    """
    import tifffile
    import zarr

    _check_options(tile, compression, min_side, quality)
    out = Path(out)
    sizes = pyramid_sizes(image.height, image.width, min_side)
    opts = _write_options(compression, np.dtype(image.dtype), image.samples, tile, quality)
    shape = lambda hw: (*hw, 3) if image.samples == 3 else tuple(hw)
    parent = out.resolve().parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.levels-", dir=parent))
    try:
        readers: list[ReadRows] = [image.read_rows]
        for k in range(1, len(sizes)):  # level k from level k-1, kept on disk (lossless, fast zlib)
            path = tmp / f"level{k}.tif"
            rows = _half(readers[k - 1], sizes[k - 1][0])
            tifffile.imwrite(path, _tiles(rows, *sizes[k], tile), shape=shape(sizes[k]), dtype=image.dtype,
                             tile=(tile, tile), compression="zlib", compressionargs={"level": 1}, bigtiff=True)
            array = zarr.open(tifffile.imread(path, aszarr=True), mode="r")
            readers.append(lambda y0, y1, a=array: np.asarray(a[y0:y1]))
        final = tmp / "pyramid.tif"  # same filesystem as `out`: the rename below is atomic
        with tifffile.TiffWriter(final, bigtiff=True) as tw:
            for k, (size, rows) in enumerate(zip(sizes, readers)):
                level_opts = {"subifds": len(sizes) - 1} if k == 0 else {"subfiletype": 1}
                tw.write(_tiles(rows, *size, tile), shape=shape(size), **opts, **level_opts)
        with open(final, "rb+") as f:
            os.fsync(f.fileno())
        with suppress(FileNotFoundError):  # replacing a file keeps its permission bits
            os.chmod(final, stat.S_IMODE(os.stat(out).st_mode))
        os.replace(final, out)
        _fsync_directory(parent)
    except OSError as e:
        raise FoveateError(f"{out}: cannot write: {e.strerror or e}") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return sizes


def _check_options(tile: int, compression: str, min_side: int, quality: int) -> None:
    if not isinstance(tile, int) or tile < 16 or tile % 16:
        raise FoveateError(f"--tile must be a multiple of 16 (TIFF tiles), got {tile}")
    if compression not in COMPRESSIONS:
        raise FoveateError(f"--compression must be one of {', '.join(COMPRESSIONS)}, got {compression!r}")
    if min_side < 1:
        raise FoveateError(f"--min-side must be >= 1, got {min_side}")
    if not 1 <= quality <= 100:
        raise FoveateError(f"--quality must be in 1..100, got {quality}")


def open_pixels(path: str | os.PathLike[str], *, allow_large: bool = False, tile: int = 256) -> PixelReader:
    """The native pixels of any image foveate reads: TIFF (tiled or strips) and OpenSlide slides
    band by band, plain formats decoded whole (with `load_image`'s checks and bomb guard)."""
    from .files import is_tiff

    path = Path(path)
    if path.suffix.lower() in OPENSLIDE_EXTENSIONS:
        slide = OpenSlideSource(path, 3, allow_large=allow_large)
        (height, width) = slide.size

        def slide_rows(y0: int, y1: int) -> np.ndarray:
            band = np.empty((y1 - y0, width, 3), np.uint8)
            for x in range(0, width, _OPENSLIDE_COLUMNS):
                band[:, x:x + _OPENSLIDE_COLUMNS] = slide.read_rgb(0, y0, x, y1, min(x + _OPENSLIDE_COLUMNS, width))
            return band

        return PixelReader(height, width, 3, np.dtype(np.uint8), slide_rows)
    if is_tiff(path):
        try:
            src = TiffSource(path, 1, allow_large=allow_large, tiled_only=False)
        except FoveateError as e:
            if "truncated or corrupt TIFF" not in str(e):
                raise
            src = None  # tifffile cannot parse it: Pillow may (and reports it if not)
        if src is not None:
            return _tiff_pixels(src, tile)
    img = _decode(path, allow_large)
    arr, white = _pixels(img, path)
    return _whole(arr, white)


def _tiff_pixels(src: TiffSource, tile: int) -> PixelReader:
    height, width = src.size
    chunk_rows = src._array(0).chunks[src._axes.index("Y")]

    def to_native(arr: np.ndarray) -> np.ndarray:
        if src._white == 1.0 and arr.dtype == np.uint8:  # 1-bit: 0/1 -> 0/255
            return arr * np.uint8(255)
        return arr.astype(np.float32) if arr.dtype.kind == "f" else arr

    probe = to_native(src._read_window(0, 0, 0, 1, 1))
    samples = 3 if probe.ndim == 3 else 1
    if chunk_rows > 4 * tile:  # one or a few huge strips: reading bands would decode them again and again
        arr = to_native(src._read_window(0, 0, 0, height, width))
        return PixelReader(height, width, samples, arr.dtype, lambda y0, y1: arr[y0:y1], decoded_whole=True)
    return PixelReader(height, width, samples, probe.dtype,
                       lambda y0, y1: to_native(src._read_window(0, y0, 0, y1, width)))


def _whole(arr: np.ndarray, white: float) -> PixelReader:
    if white == 65535.0:
        arr = arr.astype(np.uint16, copy=False)  # Pillow's "I" mode holds 0..65535 in int32
    elif white == 1.0:
        arr = arr.astype(np.float32, copy=False)
    height, width = arr.shape[:2]
    return PixelReader(height, width, 3 if arr.ndim == 3 else 1, arr.dtype, lambda y0, y1: arr[y0:y1],
                       decoded_whole=True)


def convert(image: str | os.PathLike[str], out: str | os.PathLike[str], *, tile: int = 256,
            compression: str = "zlib", min_side: int = 256, quality: int = 90,
            allow_large: bool = False) -> ConvertResult:
    """Write `image` as a tiled, compressed pyramidal TIFF at `out` (see the module docstring).

    compression: zlib (lossless, default), zstd (lossless, smaller and faster; fewer readers),
    jpeg (lossy, 8-bit only, `quality`), none. Grey stays grey, RGB stays RGB, 16-bit stays
    16-bit; alpha is dropped if opaque and refused otherwise, as `load_image` does.
    """
    start = time.perf_counter()
    image, out = Path(image), Path(out)
    _check_options(tile, compression, min_side, quality)
    if out.exists() and image.exists() and out.resolve() == image.resolve():
        raise FoveateError(f"{out}: the output must not be the input image")
    pixels = open_pixels(image, allow_large=allow_large, tile=tile)
    sizes = write_pyramid(out, pixels, tile=tile, compression=compression, min_side=min_side, quality=quality)
    return ConvertResult(out, sizes, tile, compression, pixels.decoded_whole, out.stat().st_size,
                         time.perf_counter() - start)

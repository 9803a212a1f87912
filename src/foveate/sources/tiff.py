"""Tiled and pyramidal TIFF (OME-TIFF, BigTIFF, SubIFD or series pyramids) read lazily, tile by tile.

`TiffSource` opens the file's first series with tifffile and reads each pyramid level as a zarr
array (`aszarr`), slicing only the tiles a read touches: a 100,000 x 100,000 px slide costs
the tiles a model attends, not 10 GB. Pixels are converted exactly as `load_image` converts the
same pixels (grey = ITU-R 601 luma in float, 16-bit divided by 65535, alpha refused unless
opaque), so a TIFF gives the same tensor whichever way it is read.

Counters (`tiles_decoded`, `bytes_decoded`, `pixels_read`) say what the reads cost, for benchmarks.
"""
from __future__ import annotations

import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

import numpy as np
import torch
from torch import Tensor

from ..errors import FoveateError
from .image import LARGE_IMAGE_PIXELS, _one_line, _to_tensor
from .region import RegionSource, Size

MAX_LAZY_PIXELS = LARGE_IMAGE_PIXELS  # declared pixels above this need allow_large (a bomb guard)
MAX_TILE_PIXELS = 2**26  # one tile (64 Mpx) above this needs allow_large: each read decodes whole tiles
MERGE_FACTOR = 2.0  # read the k regions' bounding box once when it is at most this x their summed area

# TIFF tag values (baseline TIFF 6.0)
_MINISWHITE, _MINISBLACK, _RGB, _PALETTE, _YCBCR = 0, 1, 2, 3, 6
_UNSPECIFIED_EXTRA = 0  # an extra sample that is not alpha (Pillow's "RGBX": ignored)
_WHITE = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0, np.dtype(bool): 1.0,
          np.dtype(np.float32): 1.0, np.dtype(np.float64): 1.0}

_LOG_LOCK = threading.Lock()


@contextmanager
def _quiet_tifffile() -> Iterator[None]:
    """tifffile logs (not raises) what it had to guess while parsing; errors are ours to report."""
    logger = logging.getLogger("tifffile")
    with _LOG_LOCK:
        saved = logger.level
        logger.setLevel(logging.CRITICAL)
        try:
            yield
        finally:
            logger.setLevel(saved)


def _error(path: Path | str, problem: str) -> FoveateError:
    return FoveateError(f"{path}: {problem}")


def open_tiff(path: Path) -> Any:
    """tifffile.TiffFile of `path`, with a one-line error for anything that is not a readable TIFF."""
    import tifffile

    try:
        with _quiet_tifffile():
            tif = tifffile.TiffFile(path)
            if not tif.series:
                tif.close()
                raise _error(path, "TIFF has no image data")
    except FoveateError:
        raise
    except FileNotFoundError:
        raise _error(path, "no such file") from None
    except IsADirectoryError:
        raise _error(path, "is a directory, not an image file") from None
    except Exception as e:  # noqa: BLE001  TiffFileError, struct.error, ValueError... (corrupt or truncated header)
        raise _error(path, f"truncated or corrupt TIFF ({_one_line(e)})") from None
    return tif


def is_tiled(tif: Any) -> bool:
    """Whether the first series' full-resolution level is stored in tiles."""
    return bool(tif.series[0].levels[0].keyframe.is_tiled)


class _CountingStore:
    """Wraps tifffile's zarr store to count the chunks (tiles) it decodes and their bytes."""

    @staticmethod
    def wrap(store: Any, owner: TiffSource) -> Any:
        from zarr.storage import WrapperStore

        class Counting(WrapperStore):  # defined here: zarr is imported only when a TIFF is read
            async def get(self, key: str, prototype: Any, byte_range: Any = None) -> Any:
                value = await self._store.get(key, prototype, byte_range)
                if value is not None and not key.rsplit("/", 1)[-1].startswith((".z", "zarr.json")):
                    owner.tiles_decoded += 1
                    owner.bytes_decoded += len(value)
                return value

        return Counting(store)


class TiffSource(RegionSource):
    """One tiled (optionally pyramidal) TIFF image, read by region without decoding the rest.

    Levels are the first series' pyramid (SubIFDs, OME-TIFF or SVS-style series levels), full
    resolution first. Reads go through zarr, which decodes only the intersecting tiles; the k
    regions of one call are read as their bounding box when that is compact (overlapping grid
    cells share tiles), else one by one. Regions partly or wholly outside the image read 0 there.
    Only the crops reach `device`.

    Counters since opening: `tiles_decoded`, `bytes_decoded` (decompressed bytes), `pixels_read`
    (in-image pixels of the regions asked for, at the level read).
    """

    def __init__(self, path: str | os.PathLike[str], channels: int, *, allow_large: bool = False,
                 device: str | torch.device = "cpu", tiled_only: bool = True, tif: Any = None) -> None:
        self.path = Path(path)
        self.tiled_only = tiled_only  # False: strips too (`foveate convert` reads them band by band)
        self.name = str(self.path)
        if channels not in (1, 3):
            raise _error(self.path, f"channels must be 1 or 3, got {channels}")
        self.channels, self.batch = channels, 1
        self.device = torch.device(device)
        self.allow_large = allow_large
        self.tiles_decoded = self.bytes_decoded = self.pixels_read = 0
        self._tif: Any = tif  # an open tifffile.TiffFile of `path` (open_source passes its own: parsed once)
        self._arrays: dict[int, Any] = {}
        self._pid = -1 if tif is None else os.getpid()
        tif = self._open()
        try:
            self._inspect(tif)
        except BaseException:
            self.close()
            raise

    # -- opening and checks ---------------------------------------------------------------------
    def _open(self) -> Any:
        """The open TiffFile of this process (a forked DataLoader worker reopens: no shared offsets)."""
        if self._tif is None or self._pid != os.getpid():
            self._tif, self._arrays, self._pid = open_tiff(self.path), {}, os.getpid()
        return self._tif

    def _inspect(self, tif: Any) -> None:
        series = tif.series[0]
        levels = list(series.levels)
        page = levels[0].keyframe
        axes = series.axes.upper()
        if "Y" not in axes or "X" not in axes:
            raise _error(self.path, f"TIFF series has axes {axes!r}, not an image (no Y and X axes)")
        self._axes = axes
        self._sample_axis = next((a for a in "SC" if a in axes and series.shape[axes.index(a)] > 1), None)
        samples = series.shape[axes.index(self._sample_axis)] if self._sample_axis else 1
        sizes = [(int(lv.shape[lv.axes.upper().index("Y")]), int(lv.shape[lv.axes.upper().index("X")]))
                 for lv in levels]
        height, width = sizes[0]
        if height < 1 or width < 1:
            raise _error(self.path, f"TIFF image has zero size ({width}x{height})")
        limit = None if self.allow_large else MAX_LAZY_PIXELS
        if limit is not None and height * width > limit:
            raise _error(self.path, f"declares {width}x{height} = {width * height:,} pixels, above the "
                                    f"{limit:,}-pixel limit for a lazily read TIFF (a possible decompression "
                                    "bomb); if you trust this file, open it with allow_large=True")
        if not page.is_tiled and self.tiled_only:
            raise _error(self.path, f"{width}x{height} TIFF is not tiled: every read would decode whole "
                                    "strips; convert it once with `foveate convert IN OUT.tif`")
        tile_pixels = int(page.tilelength) * int(page.tilewidth) if page.is_tiled else 0
        if not self.allow_large and tile_pixels > MAX_TILE_PIXELS:
            raise _error(self.path, f"declares {page.tilewidth}x{page.tilelength} px tiles, above the "
                                    f"{MAX_TILE_PIXELS:,}-pixel limit per tile (each read decodes whole "
                                    "tiles); if you trust this file, open it with allow_large=True")
        self.level_sizes: list[Size] = sizes
        self._white, self._colour, self._alpha, self._invert = self._pixel_format(page, samples)
        self._check_complete(levels)
        if self._alpha:
            self._check_opaque_level(len(levels) - 1)

    def _pixel_format(self, page: Any, samples: int) -> tuple[float, int, bool, bool]:
        """(white, colour bands, has alpha, invert) of the pixels, refusing what load_image refuses."""
        dtype = np.dtype(page.dtype)
        if dtype not in _WHITE:
            raise _error(self.path, f"unsupported TIFF sample type {dtype} (use 8- or 16-bit unsigned, "
                                    "1-bit, or floats in [0, 1])")
        photometric = int(page.photometric)
        if photometric == _PALETTE:
            raise _error(self.path, "palette (indexed-colour) TIFF: save it as RGB or greyscale first")
        if photometric == _YCBCR and int(page.compression) not in (7, 33007):  # JPEG decodes to RGB
            raise _error(self.path, "YCbCr TIFF without JPEG compression is not supported: save it as RGB")
        if photometric not in (_MINISWHITE, _MINISBLACK, _RGB, _YCBCR):
            raise _error(self.path, f"unsupported TIFF colour space (photometric {photometric}); "
                                    "save it as RGB or greyscale first")
        colour = 3 if photometric in (_RGB, _YCBCR) else 1
        extra = samples - colour
        extrasamples = tuple(int(e) for e in (page.extrasamples or ()))
        if extra not in (0, 1) or (extra == 1 and len(extrasamples) != 1):
            raise _error(self.path, f"unsupported TIFF layout: {samples} samples per pixel for photometric "
                                    f"{photometric} (expected grey, grey+alpha, RGB or RGBA)")
        alpha = extra == 1 and extrasamples[0] != _UNSPECIFIED_EXTRA
        return _WHITE[dtype], colour, alpha, photometric == _MINISWHITE

    def _check_complete(self, levels: list[Any]) -> None:
        """A file cut short (an interrupted copy) fails here, by name, rather than as a bad tile later."""
        size = os.path.getsize(self.path)
        for i, lv in enumerate(levels):
            for page in lv.pages[:1]:
                offsets = np.asarray(page.dataoffsets, dtype=np.int64)
                ends = offsets + np.asarray(page.databytecounts, dtype=np.int64)
                end = int(ends.max()) if ends.size else 0
                if end > size:
                    raise _error(self.path, f"truncated: level {i} tile data ends at byte {end:,} but the file "
                                            f"has {size:,} bytes")

    def _check_opaque_level(self, level: int) -> None:
        """Transparency anywhere shows in a coarse level (averaged or subsampled); read its alpha."""
        h, w = self.level_sizes[level]
        if h * w <= 2**22:
            self._read_window(level, 0, 0, h, w)
            self.tiles_decoded = self.bytes_decoded = 0  # counters are for the caller's reads

    # -- reading --------------------------------------------------------------------------------
    def _array(self, level: int) -> Any:
        import zarr

        tif = self._open()
        if level not in self._arrays:
            try:
                with _quiet_tifffile():
                    store = tif.series[0].aszarr(level=level, fillvalue=0)
                    self._arrays[level] = zarr.open(_CountingStore.wrap(store, self), mode="r")
            except Exception as e:  # noqa: BLE001  whatever tifffile/zarr raise: one line naming the file
                raise _error(self.path, f"cannot read pyramid level {level} ({_one_line(e)})") from None
        return self._arrays[level]

    def _index(self, y0: int, x0: int, y1: int, x1: int) -> tuple[Any, ...]:
        """zarr selection of rows y0:y1, cols x0:x1 of the first plane (other axes at index 0)."""
        out: list[Any] = []
        for a in self._axes:
            out.append(slice(y0, y1) if a == "Y" else slice(x0, x1) if a == "X"
                       else slice(None) if a == self._sample_axis else 0)
        return tuple(out)

    def _read_window(self, level: int, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        """In-image window of `level` as (h, w) or (h, w, colour) pixels, alpha checked and dropped."""
        try:
            arr = np.asarray(self._array(level)[self._index(y0, x0, y1, x1)])
        except FoveateError:
            raise
        except MemoryError:
            raise _error(self.path, f"level {level} region rows {y0}:{y1}, cols {x0}:{x1} does not fit in "
                                    "memory") from None
        except Exception as e:  # noqa: BLE001  a codec error, a short read past EOF, a bad tile size...
            raise _error(self.path, f"corrupt or truncated tile data at level {level}, region rows {y0}:{y1}, "
                                    f"cols {x0}:{x1} ({_one_line(e)})") from None
        kept = [a for a in self._axes if a in ("Y", "X") or a == self._sample_axis]
        order = [kept.index("Y"), kept.index("X")] + ([kept.index(self._sample_axis)] if self._sample_axis else [])
        arr = arr.transpose(order)  # (h, w[, S])
        if self._alpha:
            if arr[..., -1].min() < self._white:
                raise _error(self.path, "has transparency; flatten it onto a background first")
            arr = arr[..., 0] if self._colour == 1 else arr[..., :3]
        elif arr.ndim == 3 and self._colour == 1:
            arr = arr[..., 0]  # grey + an unspecified extra sample
        elif arr.ndim == 3 and arr.shape[-1] > 3:
            arr = arr[..., :3]  # RGB + an unspecified extra sample (Pillow's RGBX)
        if arr.dtype == bool:
            arr = arr.view(np.uint8)
        elif arr.dtype.kind == "f":
            lo, hi = float(arr.min()), float(arr.max())
            if np.isnan(lo) or lo < 0 or hi > 1:
                raise _error(self.path, f"floating-point pixels range over [{lo:g}, {hi:g}] at level {level}, "
                                        "outside [0, 1]; rescale it first")
        if self._invert:
            arr = (self._white - arr).astype(arr.dtype) if arr.dtype.kind != "f" else 1.0 - arr
        return arr

    def _crop_level(self, level: int, top: Tensor, left: Tensor, size: Size) -> Tensor:
        """(1, k) corners at `level` -> (k, C, h, w) float32 in [0, 1] on `device`, zeros outside."""
        (h, w), (height, width) = size, self.level_sizes[level]
        tops, lefts = top.reshape(-1).tolist(), left.reshape(-1).tolist()
        out = np.zeros((len(tops), self.channels, h, w), np.float32)
        windows = []  # in-image part of each region: (i, y0, x0, y1, x1) in level pixels
        for i, (t, lf) in enumerate(zip(tops, lefts)):
            y0, x0, y1, x1 = max(t, 0), max(lf, 0), min(t + h, height), min(lf + w, width)
            if y1 > y0 and x1 > x0:
                windows.append((i, y0, x0, y1, x1))
        if windows:
            by0, bx0 = min(wd[1] for wd in windows), min(wd[2] for wd in windows)
            by1, bx1 = max(wd[3] for wd in windows), max(wd[4] for wd in windows)
            area = sum((y1 - y0) * (x1 - x0) for _, y0, x0, y1, x1 in windows)
            merged = len(windows) > 1 and (by1 - by0) * (bx1 - bx0) <= MERGE_FACTOR * area
            box = self._read_window(level, by0, bx0, by1, bx1) if merged else None
            for i, y0, x0, y1, x1 in windows:
                pixels = (box[y0 - by0:y1 - by0, x0 - bx0:x1 - bx0] if box is not None
                          else self._read_window(level, y0, x0, y1, x1))
                t, lf = tops[i], lefts[i]
                out[i, :, y0 - t:y1 - t, x0 - lf:x1 - lf] = _to_tensor(pixels, self._white, self.channels).numpy()
            self.pixels_read += area
        return torch.from_numpy(out).to(self.device)

    # -- lifetime ---------------------------------------------------------------------------------
    def close(self) -> None:
        if self._tif is not None and self._pid == os.getpid():
            self._tif.close()
        self._tif, self._arrays = None, {}

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        """Picklable (spawned DataLoader workers): the file is reopened on first read."""
        state = self.__dict__.copy()
        state.update(_tif=None, _arrays={}, _pid=-1)
        return state

    def io_stats(self) -> dict[str, int]:
        return {"tiles_decoded": self.tiles_decoded, "bytes_decoded": self.bytes_decoded,
                "pixels_read": self.pixels_read}

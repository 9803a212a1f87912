"""Whole-slide formats (SVS, NDPI, MRXS, SCN, VMS/VMU, BIF) read lazily through OpenSlide.

Needs the optional extra: `pip install 'foveate[openslide]'` (openslide-python + openslide-bin).
OpenSlide returns RGBA regions whose alpha is 0 where the slide has no data (outside the image,
or between scanned areas); those pixels read as 0, the same zero padding as outside any image.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..errors import FoveateError
from .image import _one_line, _to_tensor
from .region import RegionSource, Size
from .tiff import MAX_LAZY_PIXELS

OPENSLIDE_EXTENSIONS = frozenset({".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif"})
INSTALL_HINT = "pip install 'foveate[openslide]'"


def import_openslide(path: Path) -> Any:
    """The openslide module, or a one-line error naming the extra that provides it."""
    try:
        import openslide
    except ImportError as e:  # the Python package missing, or its shared library
        raise FoveateError(f"{path}: reading {path.suffix.lower() or 'whole-slide'} files needs OpenSlide, "
                           f"which is not installed ({_one_line(e)}); install it with: {INSTALL_HINT}") from None
    return openslide


class OpenSlideSource(RegionSource):
    """One whole-slide image, its pyramid levels as OpenSlide reports them, read by region.

    Counters: `pixels_read` (level pixels of the regions asked for), `bytes_decoded` (RGBA bytes
    OpenSlide returned); OpenSlide does not say how many tiles it decoded (`tiles_decoded` stays 0).
    """

    def __init__(self, path: str | os.PathLike[str], channels: int, *, allow_large: bool = False,
                 device: str | torch.device = "cpu") -> None:
        self.path = Path(path)
        self.name = str(self.path)
        if channels not in (1, 3):
            raise FoveateError(f"{self.path}: channels must be 1 or 3, got {channels}")
        self.channels, self.batch, self.device = channels, 1, torch.device(device)
        self.tiles_decoded = self.bytes_decoded = self.pixels_read = 0
        self._module = import_openslide(self.path)
        self._slide: Any = None
        self._pid = -1
        slide = self._open()
        self.level_sizes: list[Size] = [(int(h), int(w)) for w, h in slide.level_dimensions]
        self._downsamples = [float(d) for d in slide.level_downsamples]
        height, width = self.level_sizes[0]
        if not allow_large and height * width > MAX_LAZY_PIXELS:
            self.close()
            raise FoveateError(f"{self.path}: declares {width}x{height} = {width * height:,} pixels, above the "
                               f"{MAX_LAZY_PIXELS:,}-pixel limit (a possible decompression bomb); if you trust "
                               "this file, open it with allow_large=True")

    def _open(self) -> Any:
        if self._slide is None or self._pid != os.getpid():  # forked workers open their own handle
            if not self.path.exists():
                raise FoveateError(f"{self.path}: no such file")
            try:
                self._slide = self._module.OpenSlide(str(self.path))
            except Exception as e:  # noqa: BLE001  OpenSlideUnsupportedFormatError, OpenSlideError, ...
                raise FoveateError(f"{self.path}: OpenSlide cannot read this file ({_one_line(e)})") from None
            self._pid = os.getpid()
        return self._slide

    def read_rgb(self, level: int, y0: int, x0: int, y1: int, x1: int) -> np.ndarray:
        """In-image window rows y0:y1, cols x0:x1 of `level` -> (h, w, 3) uint8, no-data pixels 0."""
        location = (round(x0 * self._downsamples[level]), round(y0 * self._downsamples[level]))  # level-0 px
        try:
            rgba = np.asarray(self._open().read_region(location, level, (x1 - x0, y1 - y0)))  # (h, w, 4)
        except FoveateError:
            raise
        except Exception as e:  # noqa: BLE001  OpenSlideError on a corrupt tile, ...
            raise FoveateError(f"{self.path}: cannot read level {level}, region rows {y0}:{y1}, cols "
                               f"{x0}:{x1} ({_one_line(e)})") from None
        self.bytes_decoded += rgba.nbytes
        self.pixels_read += (y1 - y0) * (x1 - x0)
        rgb = rgba[..., :3]
        if rgba[..., 3].min() < 255:  # no data there: 0, like outside the image
            rgb = np.where(rgba[..., 3:] == 0, 0, rgb).astype(np.uint8)
        return rgb

    def _crop_level(self, level: int, top: Tensor, left: Tensor, size: Size) -> Tensor:
        """(1, k) corners at `level` -> (k, C, h, w) float32 in [0, 1] on `device`, zeros outside."""
        (h, w), (height, width) = size, self.level_sizes[level]
        tops, lefts = top.reshape(-1).tolist(), left.reshape(-1).tolist()
        out = np.zeros((len(tops), self.channels, h, w), np.float32)
        for i, (t, lf) in enumerate(zip(tops, lefts)):
            y0, x0, y1, x1 = max(t, 0), max(lf, 0), min(t + h, height), min(lf + w, width)
            if y1 > y0 and x1 > x0:
                rgb = self.read_rgb(level, y0, x0, y1, x1)
                out[i, :, y0 - t:y1 - t, x0 - lf:x1 - lf] = _to_tensor(rgb, 255.0, self.channels).numpy()
        return torch.from_numpy(out).to(self.device)

    def close(self) -> None:
        if self._slide is not None and self._pid == os.getpid():
            self._slide.close()
        self._slide = None

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.update(_slide=None, _pid=-1, _module=None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._module = import_openslide(self.path)

    def io_stats(self) -> dict[str, int]:
        return {"tiles_decoded": self.tiles_decoded, "bytes_decoded": self.bytes_decoded,
                "pixels_read": self.pixels_read}

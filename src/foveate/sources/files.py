"""Open an image file as a `RegionSource`, choosing the reader by format.

- tiled TIFF / OME-TIFF / BigTIFF (recognised by content, any extension): `TiffSource`, lazy,
  pyramid levels from SubIFDs or series levels, only the tiles a read touches are decoded;
- OpenSlide formats (.svs .ndpi .mrxs .scn .vms .vmu .bif): `OpenSlideSource`, lazy, with the
  optional extra (`pip install 'foveate[openslide]'`), else a one-line error naming it;
- a TIFF that is not tiled: decoded whole (as a PNG) up to NON_TILED_MAX_SIDE px per side;
  above that an error suggesting `foveate convert` (allow_large=True decodes it whole anyway);
- plain formats (PNG, JPEG, ...): decoded whole by `load_image`, without a pyramid: the decode
  already touched every pixel, and views resized from full resolution give exactly what the
  model sees from a decoded tensor (`foveate predict` agrees with `foveate test`).
"""
from __future__ import annotations

import os
from pathlib import Path

import torch

from ..errors import FoveateError
from .image import load_image
from .openslide import OPENSLIDE_EXTENSIONS, OpenSlideSource
from .region import RegionSource, TensorSource
from .tiff import TiffSource, is_tiled, open_tiff

NON_TILED_MAX_SIDE = 4096  # a strip-based TIFF larger than this is worth converting once
TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF, both byte orders


def is_tiff(path: Path) -> bool:
    """Whether `path` starts like a TIFF (unreadable or missing files: False; load_image reports them)."""
    try:
        with open(path, "rb") as f:
            return f.read(4) in TIFF_MAGIC
    except OSError:
        return False


def open_source(path: str | os.PathLike[str], channels: int, *, allow_large: bool = False,
                device: str | torch.device = "cpu") -> RegionSource:
    """A source of one image (batch 1) from `path`, with `channels` channels (1: grey, 3: RGB).

    Lazy sources (tiled TIFF, OpenSlide) expose `tiles_decoded`, `bytes_decoded` and
    `pixels_read`. allow_large lifts the decompression-bomb guards (Pillow's pixel limit for plain
    files, the declared-size and tile-size limits of lazy files) for a file you trust.
    """
    path = Path(path)
    if path.suffix.lower() in OPENSLIDE_EXTENSIONS:
        return OpenSlideSource(path, channels, allow_large=allow_large, device=device)
    if is_tiff(path):
        try:
            tif = open_tiff(path)
        except FoveateError:
            tif = None  # let Pillow try (and report) the files tifffile cannot parse
        if tif is not None:
            if is_tiled(tif):  # the source keeps the parsed file (a big pyramid's IFDs are megabytes)
                return TiffSource(path, channels, allow_large=allow_large, device=device, tif=tif)
            page = tif.series[0].levels[0].keyframe
            height, width = int(page.imagelength), int(page.imagewidth)
            tif.close()
            if max(height, width) > NON_TILED_MAX_SIDE and not allow_large:
                raise FoveateError(f"{path}: {width}x{height} TIFF is not tiled, so any read decodes it whole; "
                                   f"convert it once with `foveate convert {path} OUT.tif` (tiled, pyramidal) "
                                   "or pass allow_large=True to decode it whole")
    x = load_image(path, channels, allow_large=allow_large)[None].to(device)  # (1, C, H, W)
    return TensorSource(x, name=str(path))

"""Open an image file as a `RegionSource`, choosing the reader by format.

Plain formats (PNG, JPEG, ...) are decoded whole by `load_image`; tiled and pyramidal files are
read lazily, tile by tile, where the format allows it.
"""
from __future__ import annotations

import os
from pathlib import Path

from .image import load_image
from .region import RegionSource, TensorSource, build_pyramid


def open_source(path: str | os.PathLike[str], channels: int, *, allow_large: bool = False,
                device: str = "cpu") -> RegionSource:
    """A source of one image (batch 1) from `path`, with `channels` channels (1: grey, 3: RGB)."""
    path = Path(path)
    x = load_image(path, channels, allow_large=allow_large)[None].to(device)  # (1, C, H, W)
    return TensorSource(x, build_pyramid(x), name=str(path))

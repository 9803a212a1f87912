"""TIFFs written directly with tifffile (not with `foveate convert`), so the reader is checked against an
independent writer."""
from pathlib import Path

import numpy as np
import tifffile


def tiles(arr: np.ndarray, tile: int):
    """Row-major tiles of arr (H, W[, S]), edge tiles partial (tifffile pads them)."""
    for y in range(0, arr.shape[0], tile):
        for x in range(0, arr.shape[1], tile):
            yield arr[y:y + tile, x:x + tile]


def write_pyramid(path: Path, levels: list[np.ndarray], tile: int = 64, compression="zlib", **kw) -> Path:
    """levels[0] in the first IFD, the others as its SubIFDs, all tiled."""
    with tifffile.TiffWriter(path, bigtiff=True) as tw:
        for k, arr in enumerate(levels):
            extra = {"subifds": len(levels) - 1} if k == 0 else {"subfiletype": 1}
            tw.write(tiles(arr, tile), shape=arr.shape, dtype=arr.dtype, tile=(tile, tile),
                     compression=compression, **kw, **extra)
    return path


def halve(arr: np.ndarray) -> np.ndarray:
    """Any coarser level will do for the reader: a 2x subsampling."""
    return np.ascontiguousarray(arr[::2, ::2])

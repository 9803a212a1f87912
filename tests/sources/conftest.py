"""Fixtures of the region-source tests; tests/sources is put on sys.path for tiff_helpers."""
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from tiff_helpers import halve, write_pyramid


@pytest.fixture
def grey_pyramid(tmp_path):
    """A 300 x 200 grey image (random, so every pixel counts) in 64-px tiles with 2 coarser levels."""
    rng = np.random.default_rng(0)
    a = rng.integers(0, 256, (300, 200), dtype=np.uint8)
    levels = [a, halve(a), halve(halve(a))]
    return write_pyramid(tmp_path / "grey.tif", levels, photometric="minisblack"), levels

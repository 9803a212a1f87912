import gzip
import os
from pathlib import Path

import numpy as np
import pytest

from foveate.data import DigitPool, load_digits

REPO = Path(__file__).resolve().parents[2]
REAL_MNIST = Path(os.environ.get("FOVEATE_MNIST_DIR", REPO / ".." / "shared" / "data" / "mnist"))


def _write_idx(path: Path, array: np.ndarray, magic: int | None = None, compress: bool | None = None) -> Path:
    """Write a uint8 IDX file (gzip if the name ends in .gz); magic defaults to the array's rank."""
    magic = magic if magic is not None else {1: 2049, 3: 2051}[array.ndim]
    data = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    data += np.ascontiguousarray(array, np.uint8).tobytes()
    compress = path.name.endswith(".gz") if compress is None else compress
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def _tiny_digits(n: int = 60, seed: int = 0, classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(n, 28, 28) random uint8 images and (n,) labels cycling through `classes` classes."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8), (np.arange(n) % classes).astype(np.uint8)


@pytest.fixture(scope="session")
def real_mnist_dir() -> Path:
    if not REAL_MNIST.is_dir():
        pytest.skip(f"real MNIST digits not found at {REAL_MNIST} (set FOVEATE_MNIST_DIR)")
    return REAL_MNIST


@pytest.fixture(scope="session")
def real_pools(real_mnist_dir) -> dict[str, DigitPool]:
    return load_digits(real_mnist_dir)


@pytest.fixture(scope="session")
def builtin_pools() -> dict[str, DigitPool]:
    return load_digits()


@pytest.fixture
def write_idx():
    return _write_idx


@pytest.fixture
def tiny_digits():
    return _tiny_digits


@pytest.fixture(scope="session")
def pools(request) -> dict[str, DigitPool]:
    """Real digits when available, else the built-in ones: generator checks need not skip."""
    return request.getfixturevalue("real_pools" if REAL_MNIST.is_dir() else "builtin_pools")

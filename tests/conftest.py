import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # tests/support.py
SHARED_MNIST = Path(os.environ.get("FOVEATE_MNIST_DIR", REPO.parent / "shared" / "data" / "mnist"))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _one_thread():
    """Test tensors are small: intra-op threads only add synchronisation, which on a shared 2-core
    machine cost up to 70x the work itself when measured. Tests that time or size things set
    their own thread count (the benchmark settings do); it is restored after every test."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def mnist_dir() -> Path:
    if not (SHARED_MNIST / "digits-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST digits not found at {SHARED_MNIST} (set FOVEATE_MNIST_DIR)")
    return SHARED_MNIST

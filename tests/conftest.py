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


@pytest.fixture
def mnist_dir() -> Path:
    if not (SHARED_MNIST / "digits-images-idx3-ubyte.gz").is_file():
        pytest.skip(f"real MNIST digits not found at {SHARED_MNIST} (set FOVEATE_MNIST_DIR)")
    return SHARED_MNIST

"""Lightning data modules: the loaders every data set shares, and Megapixel MNIST.

Arguments are plain ints and strings so `save_hyperparameters` records them in every
checkpoint, and the data set can be rebuilt from a checkpoint alone.
"""
from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from ..errors import FoveateError
from .megapixel_mnist import MegapixelConfig, MegapixelMNIST
from .mnist import NUM_CLASSES, DigitPool, load_digits


class SplitDataModule(L.LightningDataModule):
    """Train / val / test loaders over `dataset(split)`: shuffled and seeded for training, in order
    otherwise. Subclasses set seed, batch_size, num_workers and pin_memory."""

    seed: int
    batch_size: int
    num_workers: int
    pin_memory: bool

    def dataset(self, split: str) -> Dataset:
        raise NotImplementedError

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        generator = torch.Generator().manual_seed(self.seed) if shuffle else None
        return DataLoader(self.dataset(split), batch_size=self.batch_size, shuffle=shuffle, generator=generator,
                          num_workers=self.num_workers, pin_memory=self.pin_memory,
                          persistent_workers=self.num_workers > 0)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)


class MegapixelMNISTDataModule(SplitDataModule):
    """Train/val/test Megapixel MNIST splits over disjoint digit pools, rendered lazily.

    digits: an MNIST IDX directory (see `load_digits`) or None for the built-in digits.
    n_noise: scribble patches per canvas (50 defines the benchmark; fewer makes an easier task).
    pin_memory: None pins only when CUDA is available.
    """

    def __init__(self, digits: str | None = None, canvas_size: int | list[int] = 1500, n_train: int = 5000,
                 n_val: int = 500, n_test: int = 1000, profile: str = "ats", label: str = "majority",
                 n_noise: int = 50, seed: int = 0, batch_size: int = 8, num_workers: int = 0,
                 pin_memory: bool | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.config = MegapixelConfig(canvas_size=canvas_size, profile=profile, label=label, seed=seed,
                                      n_noise=n_noise, n_patterns=n_noise if profile == "ips" else 50)
        for name, value in (("batch_size", batch_size), ("num_workers", num_workers), ("n_train", n_train),
                            ("n_val", n_val), ("n_test", n_test)):
            if not isinstance(value, int) or isinstance(value, bool) or value < (1 if name == "batch_size" else 0):
                raise FoveateError(f"{name} must be an integer >= {1 if name == 'batch_size' else 0}, got {value!r}")
        self.digits, self.seed = digits, seed
        self.sizes = {"train": n_train, "val": n_val, "test": n_test}
        self.batch_size, self.num_workers = batch_size, num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self.pools: dict[str, DigitPool] | None = None
        self.datasets: dict[str, MegapixelMNIST] = {}

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES

    def setup(self, stage: str | None = None) -> None:
        """Load the digit pools once; the datasets themselves render on demand."""
        if self.pools is None:
            self.pools = load_digits(self.digits)
            self.datasets = {split: MegapixelMNIST(self.pools[split], n, split, self.config)
                             for split, n in self.sizes.items()}

    def dataset(self, split: str) -> MegapixelMNIST:
        if self.pools is None:
            self.setup()
        return self.datasets[split]

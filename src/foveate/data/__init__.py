"""Data sets: MNIST digit pools and the Megapixel MNIST benchmark."""
from .datamodule import MegapixelMNISTDataModule
from .megapixel_mnist import (
    LABELS,
    PROFILES,
    MegapixelConfig,
    MegapixelMNIST,
    MegapixelRenderer,
    MegapixelSample,
    write_megapixel_mnist,
)
from .mnist import DigitPool, load_digits, read_idx

__all__ = ["LABELS", "PROFILES", "DigitPool", "MegapixelConfig", "MegapixelMNIST", "MegapixelMNISTDataModule",
           "MegapixelRenderer", "MegapixelSample", "load_digits", "read_idx", "write_megapixel_mnist"]

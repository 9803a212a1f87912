"""Data sets: MNIST digit pools, the Megapixel MNIST benchmark, and labelled image files (folder, CSV, fMoW)."""
from .datamodule import MegapixelMNISTDataModule
from .fmow import FMOW_CLASSES, FMoWDataModule, FMoWDataset
from .folder import (
    CSVDataModule,
    FolderDataModule,
    ImageDataModule,
    ImageDataset,
    ImageRecord,
)
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
from .views import ViewConfig

# data.name -> data module (foveate.training.create_datamodule)
DATA_MODULES = {"megapixel_mnist": MegapixelMNISTDataModule, "folder": FolderDataModule, "csv": CSVDataModule,
                "fmow": FMoWDataModule}

__all__ = ["DATA_MODULES", "FMOW_CLASSES", "LABELS", "PROFILES", "CSVDataModule", "DigitPool", "FMoWDataModule",
           "FMoWDataset", "FolderDataModule", "ImageDataModule", "ImageDataset", "ImageRecord", "MegapixelConfig",
           "MegapixelMNIST", "MegapixelMNISTDataModule", "MegapixelRenderer", "MegapixelSample", "ViewConfig",
           "load_digits", "read_idx", "write_megapixel_mnist"]

"""Labelled high-resolution images from a folder per class or a CSV file, read lazily by region.

    root/cat/a.jpg, root/cat/b.tif, root/dog/c.png ...        -> data.name: folder
    labels.csv:  path,label[,split]   (paths relative to the CSV)  -> data.name: csv

Constructing a data set only lists files (no image is opened); each item opens its file through
`open_source` inside `__getitem__` (so in the DataLoader worker), reads one region (see `views`),
and drops the source: no file handle lives across a fork. Classes are names, sorted, unless the
config gives `classes`; `fit` records them in the checkpoint's config so `test` and `predict` map
indices to the same names.
"""
from __future__ import annotations

import csv
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import FoveateError
from ..sources import open_source
from ..sources.image import IMAGE_EXTENSIONS
from .datamodule import SplitDataModule
from .views import Box, ViewConfig, check_not_upsampled, read_view, sample_crop

log = logging.getLogger(__name__)
SPLITS = ("train", "val", "test")
ON_ERROR = ("raise", "skip")


@dataclass(frozen=True)
class ImageRecord:
    """One labelled image file. boxes: annotated objects (x1, y1, x2, y2) in full-res px, if any;
    meta: a metadata file read lazily per item (fMoW's JSON), None if none."""

    path: Path
    label: int
    meta: Path | None = None
    boxes: tuple[Box, ...] = field(default=())


def _is_image(p: Path) -> bool:
    return p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()


class ImageDataset(Dataset):
    """Items (x (C, H, W) float in [0, 1], label int) of `records`, each opened lazily.

    train: random crop + flips + jitter (`views.ViewConfig`); else the whole region.
    on_error: "raise" (default) fails on the first unreadable/too-small image with its one-line
    error; "skip" logs that line as a warning and returns the next readable item instead.
    """

    def __init__(self, records: Sequence[ImageRecord], classes: Sequence[str], view: ViewConfig, channels: int = 3,
                 train: bool = False, allow_large: bool = False, on_error: str = "raise") -> None:
        if channels not in (1, 3):
            raise FoveateError(f"channels must be 1 or 3, got {channels!r}")
        if on_error not in ON_ERROR:
            raise FoveateError(f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
        self.records, self.classes = list(records), list(classes)
        self.view, self.channels, self.train = view, channels, train
        self.allow_large, self.on_error = allow_large, on_error

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        for attempt in range(min(len(self.records), 20)):
            record = self.records[(index + attempt) % len(self.records)]
            try:
                return self.load(record), record.label
            except FoveateError as e:
                if self.on_error == "raise":
                    raise
                log.warning("skipping unreadable image (data.on_error: skip): %s", e)
        raise FoveateError(f"{self.records[index].path}: this and the next images are all unreadable; giving up")

    # -- one item -----------------------------------------------------------------------------
    def region(self, record: ImageRecord, size: tuple[int, int]) -> tuple[Box, tuple[Box, ...]]:
        """The part of the image an item shows, and the annotated boxes for box-aware crops.
        Here the whole image; fMoW may crop to its box."""
        h, w = size
        return (0.0, 0.0, float(w), float(h)), record.boxes

    def load(self, record: ImageRecord) -> Tensor:
        """(C, H, W): open, choose the box in full-res px, read it, drop the source."""
        try:
            source = open_source(record.path, self.channels, allow_large=self.allow_large)
        except OSError as e:  # readers below open_source may raise plain I/O errors
            raise FoveateError(f"{record.path}: cannot read ({' '.join(str(e).split())})") from None
        try:
            region, boxes = self.region(record, source.size)
            check_not_upsampled(str(record.path), (region[3] - region[1], region[2] - region[0]), self.view)
            box = sample_crop(region, self.view, boxes) if self.train else region
            try:
                return read_view(source, box, self.view, self.train)
            except FoveateError as e:
                raise FoveateError(e if str(record.path) in str(e) else f"{record.path}: {e}") from None
            except OSError as e:
                raise FoveateError(f"{record.path}: cannot read ({' '.join(str(e).split())})") from None
        finally:
            close = getattr(source, "close", None)
            if callable(close):
                close()
            del source


# -- listing files --------------------------------------------------------------------------
def scan_folder(root: str | os.PathLike[str]) -> dict[str, list[Path]]:
    """{class name: sorted image files} of a folder-per-class tree (files at any depth below a class
    folder; hidden files and folders skipped). Errors for a missing/empty tree or an empty class."""
    root = Path(root)
    if not root.is_dir():
        raise FoveateError(f"{root}: data folder not found")
    classes = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise FoveateError(f"{root}: no class folders (expected {root}/CLASS_NAME/IMAGE files)")
    out = {}
    for d in classes:
        files = sorted(p for p in d.rglob("*") if _is_image(p)
                       and not any(part.startswith(".") for part in p.relative_to(d).parts))
        if not files:
            raise FoveateError(f"{d}: class folder has no image files "
                               f"({', '.join(sorted(e.lstrip('.') for e in IMAGE_EXTENSIONS))})")
        out[d.name] = files
    return out


def _int_label(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdigit() else None


def read_csv(path: str | os.PathLike[str]) -> list[tuple[Path, str, str | None, int]]:
    """Rows (file, label text, split or None, line number) of a `path,label[,split]` CSV.

    Paths are relative to the CSV's folder (absolute ones are kept). Missing files, empty labels
    and unknown splits are one-line errors naming the CSV line.
    """
    path = Path(path)
    if not path.is_file():
        raise FoveateError(f"{path}: CSV file not found")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = [h.strip() for h in reader.fieldnames or []]
            if "path" not in header or "label" not in header:
                raise FoveateError(f"{path}: CSV needs a header with 'path' and 'label' columns, got {header}")
            reader.fieldnames = header
            rows = []
            for row in reader:
                line = reader.line_num
                file, label = (row.get("path") or "").strip(), (row.get("label") or "").strip()
                if not file and not label:
                    continue
                if not file or not label:
                    raise FoveateError(f"{path}:{line}: empty path or label")
                split = (row.get("split") or "").strip() or None if "split" in header else None
                if split is not None and split not in SPLITS:
                    raise FoveateError(f"{path}:{line}: split {split!r} is not one of {', '.join(SPLITS)}")
                image = Path(file) if Path(file).is_absolute() else path.parent / file
                if not image.is_file():
                    raise FoveateError(f"{image}: no such file (listed in {path}:{line})")
                rows.append((image, label, split, line))
    except UnicodeDecodeError:
        raise FoveateError(f"{path}: not a UTF-8 text CSV") from None
    except csv.Error as e:
        raise FoveateError(f"{path}: malformed CSV ({e})") from None
    if not rows:
        raise FoveateError(f"{path}: CSV lists no images")
    return rows


# -- data modules ---------------------------------------------------------------------------
class ImageDataModule(SplitDataModule):
    """Train/val/test splits of labelled image files; subclasses list the files (`_scan`).

    Every argument is a plain value (recorded in checkpoints). View arguments: see
    `views.ViewConfig` (image_size is an int or [H, W]). classes: fixed class names (index order);
    None derives them from the training split. Splits the layout does not give are carved out of
    the training images, per class and seeded: val_fraction / test_fraction of each class.
    """

    def __init__(self, image_size: int | list[int] = 512, channels: int = 3, resize: str = "pad",
                 crop_scale: list[float] = (0.35, 1.0), crop_ratio: list[float] | None = None, hflip: float = 0.5,
                 vflip: float = 0.0, brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2,
                 min_box_covered: float = 0.0, upsample: bool = False, allow_large: bool = False,
                 on_error: str = "raise", classes: list[str] | None = None, val_fraction: float = 0.1,
                 test_fraction: float = 0.0, seed: int = 0, batch_size: int = 8, num_workers: int = 0,
                 pin_memory: bool | None = None) -> None:
        super().__init__()
        self.view = ViewConfig(size=image_size, resize=resize, crop_scale=crop_scale, crop_ratio=crop_ratio,
                               hflip=hflip, vflip=vflip, brightness=brightness, contrast=contrast,
                               saturation=saturation, min_box_covered=min_box_covered, upsample=upsample)
        for name, value in (("batch_size", batch_size), ("num_workers", num_workers), ("seed", seed)):
            if not isinstance(value, int) or isinstance(value, bool) or value < (1 if name == "batch_size" else 0):
                raise FoveateError(f"{name} must be an integer >= {1 if name == 'batch_size' else 0}, got {value!r}")
        for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
                raise FoveateError(f"{name} must be a number in [0, 1), got {value!r}")
        if val_fraction + test_fraction >= 1:
            raise FoveateError(f"val_fraction + test_fraction must be < 1, got {val_fraction + test_fraction:g}")
        if classes is not None and (not isinstance(classes, (list, tuple)) or not classes
                                    or len(set(map(str, classes))) != len(classes)):
            raise FoveateError(f"classes must be a non-empty list of distinct names, got {classes!r}")
        if on_error not in ON_ERROR:
            raise FoveateError(f"on_error must be one of {', '.join(ON_ERROR)}, got {on_error!r}")
        if channels not in (1, 3):
            raise FoveateError(f"channels must be 1 or 3, got {channels!r}")
        self.channels, self.allow_large, self.on_error = channels, allow_large, on_error
        self.fixed_classes = [str(c) for c in classes] if classes is not None else None
        self.fractions = {"val": float(val_fraction), "test": float(test_fraction)}
        self.seed, self.batch_size, self.num_workers = seed, batch_size, num_workers
        self.pin_memory = torch.cuda.is_available() if pin_memory is None else bool(pin_memory)
        self._records: dict[str, list[ImageRecord]] | None = None
        self._classes: list[str] = []

    # -- what subclasses implement ------------------------------------------------------------
    def _scan(self) -> tuple[dict[str, list[tuple[Path, str, Path | None]]], str]:
        """({split: [(file, label text, meta file or None)]}, where) for the splits the layout gives
        (at least train); `where` names the source in error messages."""
        raise NotImplementedError

    def _classes_from(self, labels: list[str]) -> list[str]:
        """Class names from the training labels (when the config does not fix them): sorted names,
        or "0".."max" when every label is an integer."""
        ints = [_int_label(t) for t in labels]
        if all(i is not None for i in ints):
            return [str(i) for i in range(max(ints) + 1)]
        return sorted(set(labels))

    def _index(self, label: str, where: str) -> int:
        """A label's class index: its name, or (only when the config fixes `classes`) an integer index."""
        if label in self._lookup:
            return self._lookup[label]
        i = _int_label(label)
        if i is not None and self.fixed_classes is not None and i < len(self._classes):
            return i
        shown = ", ".join(self._classes[:20]) + (" ..." if len(self._classes) > 20 else "")
        raise FoveateError(f"{where}: unknown class {label!r} (classes: {shown})")

    # -- listing ------------------------------------------------------------------------------
    def _build(self) -> None:
        scanned, where = self._scan()
        if not scanned.get("train"):
            raise FoveateError(f"{where}: no training images")
        self._classes = self.fixed_classes or self._classes_from([t for _, t, _ in scanned["train"]])
        self._lookup = {c: i for i, c in enumerate(self._classes)}
        records = {split: [ImageRecord(f, self._index(t, str(f)), m) for f, t, m in rows]
                   for split, rows in scanned.items()}
        missing = [s for s in ("val", "test") if s not in records]
        if missing:
            records.update(self._carve(records, missing))
        self._records = records

    def _carve(self, records: dict[str, list[ImageRecord]], splits: list[str]) -> dict[str, list[ImageRecord]]:
        """Move a seeded fraction of every class's training images to each missing split."""
        rng = np.random.default_rng([self.seed, 6])
        by_class: dict[int, list[ImageRecord]] = {}
        for r in records["train"]:
            by_class.setdefault(r.label, []).append(r)
        out: dict[str, list[ImageRecord]] = {s: [] for s in splits}
        train: list[ImageRecord] = []
        for label in sorted(by_class):
            items = by_class[label]
            order = rng.permutation(len(items))
            start = 0
            for s in splits:
                n = round(self.fractions[s] * len(items))
                out[s] += [items[j] for j in order[start:start + n]]
                start += n
            train += [items[j] for j in sorted(order[start:])]
        out["train"] = train
        return {s: sorted(v, key=lambda r: str(r.path)) if s != "train" else v for s, v in out.items()}

    @property
    def records(self) -> dict[str, list[ImageRecord]]:
        if self._records is None:
            self._build()
        return self._records  # type: ignore[return-value]

    @property
    def classes(self) -> list[str]:
        """Class names in index order."""
        if self._records is None:
            self._build()
        return list(self._classes)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    # -- Lightning ------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        self.records  # noqa: B018 (list files once; no image is opened here)

    def dataset(self, split: str) -> ImageDataset:
        """The split's Dataset (training augmentation only for "train")."""
        if not self.records.get(split):
            hint = {"val": "give a validation split or val_fraction > 0",
                    "test": "give a test split or test_fraction > 0"}.get(split, "")
            raise FoveateError(f"no {split} images in this data set{'; ' + hint if hint else ''}")
        return ImageDataset(self.records[split], self.classes, self.view, self.channels, train=split == "train",
                            allow_large=self.allow_large, on_error=self.on_error)


class FolderDataModule(ImageDataModule):
    """data.name: folder. Either `root` (one folder-per-class tree; val/test carved out by
    val_fraction/test_fraction) or `train` plus optional `val` and `test` trees (a split not
    given is carved out of train). Class folders hold images at any depth."""

    def __init__(self, root: str | None = None, train: str | None = None, val: str | None = None,
                 test: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        if (root is None) == (train is None):
            raise FoveateError("folder data: give either root (one tree) or train (plus optional val, test)")
        if root is not None and (val is not None or test is not None):
            raise FoveateError("folder data: val/test trees go with train, not root")
        self.trees = {"train": root or train, "val": val, "test": test}

    def _classes_from(self, labels: list[str]) -> list[str]:
        return sorted(set(labels))  # folder names are names, even when they are digits

    def _scan(self):
        out = {}
        for split, tree in self.trees.items():
            if tree is not None:
                out[split] = [(f, name, None) for name, files in scan_folder(tree).items() for f in files]
        return out, str(self.trees["train"])


class CSVDataModule(ImageDataModule):
    """data.name: csv. Either `csv` (one file; a `split` column, when present, assigns every row to
    train/val/test, and splits it leaves empty are carved out of train) or `train` plus optional
    `val` and `test` CSVs. Labels are class names, or integers (indices; classes "0".."max")."""

    def __init__(self, csv: str | None = None, train: str | None = None, val: str | None = None,
                 test: str | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        self.save_hyperparameters()
        if (csv is None) == (train is None):
            raise FoveateError("csv data: give either csv (one file, optional split column) or train "
                               "(plus optional val, test)")
        if csv is not None and (val is not None or test is not None):
            raise FoveateError("csv data: val/test files go with train, not csv")
        self.csv, self.files = csv, {"train": train, "val": val, "test": test}

    def _scan(self):
        out: dict[str, list] = {}
        if self.csv is not None:
            for file, label, split, _ in read_csv(self.csv):
                out.setdefault(split or "train", []).append((file, label, None))
            return out, str(self.csv)
        for split, path in self.files.items():
            if path is not None:
                out[split] = [(f, t, None) for f, t, _, _ in read_csv(path)]
        return out, str(self.files["train"])

"""A folder of labelled images as a test set: what `foveate bench --data DIR` reads.

The layout is the one `foveate data megapixel-mnist --out DIR` writes: DIR/labels.csv with a
header row, a `path` column (file names relative to DIR, or absolute paths) and one column of
class indices per label definition -- `label` (Megapixel MNIST: the majority digit; any other
folder: its class), and for Megapixel MNIST folders also `max` and `top`. DIR/parameters.json,
if present, records how the canvases were generated and goes into the report header.

Every image must have the same size (batches are stacked, latency is measured at batch N);
sizes are read from the file headers when the folder is opened, pixels only when an image is used.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import FoveateError
from ..sources import load_image

LABEL_COLUMNS = {"majority": "label", "max": "max", "top": "top"}
"""data.label of a Megapixel MNIST checkpoint -> the labels.csv column holding its class indices."""


def label_column(label: str | None) -> str:
    """The labels.csv column for a checkpoint's data.label (None: a task without label variants)."""
    if label is None:
        return "label"
    if label not in LABEL_COLUMNS:
        raise FoveateError(f"the checkpoints were trained for label {label!r}; a benchmark needs one class index "
                           f"per image (label {', '.join(LABEL_COLUMNS)})")
    return LABEL_COLUMNS[label]


class LabeledImageFolder(Dataset):
    """(image (channels, H, W) float32 in [0, 1], class index int64) for every row of DIR/labels.csv.

    column: which labels.csv column holds the class indices; num_classes: indices must lie in
    [0, num_classes); channels: images are loaded with this many channels (see `load_image`).
    """

    def __init__(self, root: str | Path, column: str = "label", num_classes: int | None = None,
                 channels: int = 1) -> None:
        self.root, self.column, self.channels = Path(root), column, int(channels)
        csv_path = self.root / "labels.csv"
        if not self.root.is_dir():
            raise FoveateError(f"{self.root}: not a directory")
        if not csv_path.is_file():
            raise FoveateError(f"{self.root}: no labels.csv (expected the layout `foveate data megapixel-mnist` "
                               "writes: labels.csv with columns path,label)")
        try:
            with open(csv_path, newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                fields = reader.fieldnames or []
                rows = list(reader)
        except (OSError, UnicodeDecodeError, csv.Error) as e:
            raise FoveateError(f"{csv_path}: cannot read ({e})") from None
        if "path" not in fields or column not in fields:
            raise FoveateError(f"{csv_path}: needs columns 'path' and {column!r}, has {', '.join(fields) or 'none'}")
        if not rows:
            raise FoveateError(f"{csv_path}: the data set is empty (no rows)")
        self.files, self.labels = [], []
        for line, row in enumerate(rows, start=2):
            name, raw = (row.get("path") or "").strip(), (row.get(column) or "").strip()
            try:
                label = int(raw)
            except ValueError:
                raise FoveateError(f"{csv_path}, line {line}: {column} {raw!r} is not a class index") from None
            if label < 0 or (num_classes is not None and label >= num_classes):
                raise FoveateError(f"{csv_path}, line {line}: class {label} outside 0..{(num_classes or 1) - 1} "
                                   "(the models' classes)")
            if not name:
                raise FoveateError(f"{csv_path}, line {line}: empty path")
            path = Path(name) if Path(name).is_absolute() else self.root / name
            self.files.append(path)
            self.labels.append(label)
        self.size = self._common_size()
        params = self.root / "parameters.json"
        try:
            self.parameters: dict[str, Any] | None = json.loads(params.read_text()) if params.is_file() else None
        except (OSError, ValueError) as e:
            raise FoveateError(f"{params}: not readable JSON ({e})") from None

    def _common_size(self) -> tuple[int, int]:
        """(H, W) shared by every image, from the file headers; an error naming the first file that differs."""
        size = None
        for path in self.files:
            try:
                with Image.open(path) as img:
                    w, h = img.size
            except FileNotFoundError:
                raise FoveateError(f"{path}: no such file (listed in labels.csv)") from None
            except (UnidentifiedImageError, OSError) as e:
                raise FoveateError(f"{path}: not an image Pillow can read ({e})") from None
            if size is None:
                size, first = (h, w), path
            elif (h, w) != size:
                raise FoveateError(f"{path} is {w}x{h} px but {first} is {size[1]}x{size[0]}: a benchmark needs "
                                   "images of one size")
        assert size is not None
        return size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        image = load_image(self.files[i], self.channels, allow_large=True)
        return image, torch.tensor(self.labels[i], dtype=torch.int64)

    def describe(self) -> dict[str, Any]:
        """The report header's data section."""
        params = self.parameters or {}
        # generator settings comparable with a checkpoint's data config (the engine notes differences)
        same = {k: params[k] for k in ("canvas_size", "profile", "n_noise", "seed") if k in params}
        return {"name": "image_folder", "path": str(self.root.resolve()), "n_test": len(self),
                "image_size": list(self.size), "channels": self.channels, "label_column": self.column,
                "generator": self.parameters, **same}

"""functional Map of the World (fMoW): satellite images labelled by the category of one object.

Layout (fMoW-rgb and fMoW-full):

    ROOT/<split>/<category>/<category>_<id>/<category>_<id>_<n>_rgb.jpg    (fMoW-full: .tif;
    ROOT/<split>/<category>/<category>_<id>/<category>_<id>_<n>_rgb.json    variant msrgb: _msrgb)

Each image's JSON holds `bounding_boxes`: [{"box": [x, y, w, h], "category": ..., "ID": ...}, ...]
in the image's pixels. The label is the <category> folder; the 62 categories are `FMOW_CLASSES`
(sorted; indices stay the same for any subset), or classes="data" takes them from the training
split. Split folder names are configurable (e.g. test: test_gt).

What TNet does on fMoW (see configs/tnet_fmow*.yaml), and what is optional here:
- whole images with image-level labels (crop: image, the default); crop: box shows the object's
  box plus `box_context` of its side on each side (the fMoW baseline's "crop" setting);
- training crop covering 85-100 % of the area, aspect ratio (w/h) 0.5-2, containing at least 10 %
  of the object's box (min_box_covered), then resized to a square ignoring aspect
  (resize: stretch), horizontal flip and colour jitter; evaluation: the whole image resized to
  the square, no centre crop. The paper pre-shrinks images to a shorter side of 1,000 px; here
  each item is read once at the resolution the output needs, which has the same effect.
JSON files are listed at construction (a missing one is an error then) but read per item, and
only when the item needs its box (crop: box, or a training crop with min_box_covered > 0).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from ..errors import FoveateError
from ..sources.image import IMAGE_EXTENSIONS
from .folder import ImageDataModule, ImageDataset, ImageRecord
from .views import Box

FMOW_CLASSES = (
    "airport", "airport_hangar", "airport_terminal", "amusement_park", "aquaculture", "archaeological_site", "barn",
    "border_checkpoint", "burial_site", "car_dealership", "construction_site", "crop_field", "dam",
    "debris_or_rubble", "educational_institution", "electric_substation", "factory_or_powerplant", "fire_station",
    "flooded_road", "fountain", "gas_station", "golf_course", "ground_transportation_station", "helipad",
    "hospital", "impoverished_settlement", "interchange", "lake_or_pond", "lighthouse", "military_facility",
    "multi-unit_residential", "nuclear_powerplant", "office_building", "oil_or_gas_facility", "park",
    "parking_lot_or_garage", "place_of_worship", "police_station", "port", "prison", "race_track",
    "railway_bridge", "recreational_facility", "road_bridge", "runway", "shipyard", "shopping_mall",
    "single-unit_residential", "smokestack", "solar_farm", "space_facility", "stadium", "storage_tank",
    "surface_mine", "swimming_pool", "toll_booth", "tower", "tunnel_opening", "waste_disposal",
    "water_treatment_facility", "wind_farm", "zoo",
)
VARIANTS = ("rgb", "msrgb")
CROPS = ("image", "box")


def read_boxes(meta: Path, category: str) -> tuple[Box, ...]:
    """The boxes (x1, y1, x2, y2) of `category` in an fMoW JSON file (all boxes if none has it)."""
    try:
        data = json.loads(meta.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise FoveateError(f"{meta}: metadata file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FoveateError(f"{meta}: not a readable JSON file ({' '.join(str(e).split())})") from None
    entries = data.get("bounding_boxes") if isinstance(data, dict) else None
    if not isinstance(entries, list):
        raise FoveateError(f"{meta}: no 'bounding_boxes' list")
    boxes, own = [], []
    for entry in entries:
        box = entry.get("box") if isinstance(entry, dict) else None
        if not (isinstance(box, list) and len(box) == 4 and all(isinstance(v, (int, float)) for v in box)
                and box[2] > 0 and box[3] > 0):
            raise FoveateError(f"{meta}: bad bounding box {box!r} (expected [x, y, w, h] with w, h > 0)")
        x, y, w, h = map(float, box)
        boxes.append((x, y, x + w, y + h))
        if entry.get("category") == category:
            own.append(boxes[-1])
    return tuple(own or boxes)


class FMoWDataset(ImageDataset):
    """ImageDataset whose items read their boxes from the JSON (lazily) and may crop to them."""

    def __init__(self, *args, crop: str = "image", box_context: float = 0.5, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.crop, self.box_context = crop, box_context

    def region(self, record: ImageRecord, size: tuple[int, int]) -> tuple[Box, tuple[Box, ...]]:
        h, w = size
        if self.crop == "image" and not (self.train and self.view.min_box_covered > 0):
            return (0.0, 0.0, float(w), float(h)), ()  # no box needed: the JSON is not read
        boxes = read_boxes(record.meta, self.classes[record.label]) if record.meta is not None else ()
        boxes = tuple((max(0.0, x1), max(0.0, y1), min(float(w), x2), min(float(h), y2)) for x1, y1, x2, y2 in boxes)
        boxes = tuple(b for b in boxes if b[2] > b[0] and b[3] > b[1])
        if self.crop == "image":
            return (0.0, 0.0, float(w), float(h)), boxes
        if not boxes:
            raise FoveateError(f"{record.meta}: no bounding box inside the {w}x{h} image to crop to")
        x1, y1 = min(b[0] for b in boxes), min(b[1] for b in boxes)
        x2, y2 = max(b[2] for b in boxes), max(b[3] for b in boxes)
        cx, cy = self.box_context * (x2 - x1), self.box_context * (y2 - y1)
        region = (max(0.0, x1 - cx), max(0.0, y1 - cy), min(float(w), x2 + cx), min(float(h), y2 + cy))
        return region, boxes


class FMoWDataModule(ImageDataModule):
    """data.name: fmow. root: the folder holding the split folders; splits: {train, val, test} ->
    folder names (a split without a folder is carved out of train by val/test_fraction);
    variant: "rgb" | "msrgb"; classes: "fmow" (the 62 names), "data" (sorted training
    categories) or a list; crop: "image" | "box" with box_context (fraction of the box's side
    added on each side, clipped to the image). Other arguments: `ImageDataModule`."""

    def __init__(self, root: str | None = None, splits: dict[str, str] | None = None, variant: str = "rgb",
                 classes: str | list[str] = "fmow", crop: str = "image", box_context: float = 0.5,
                 **kwargs) -> None:
        if classes == "fmow":
            fixed = list(FMOW_CLASSES)
        elif classes == "data":
            fixed = None
        else:
            fixed = classes
        super().__init__(classes=fixed, **kwargs)
        self.save_hyperparameters()
        if root is None:
            raise FoveateError("fmow data: root (the folder with train/, val/, ...) is required")
        if variant not in VARIANTS:
            raise FoveateError(f"fmow variant must be one of {', '.join(VARIANTS)}, got {variant!r}")
        if crop not in CROPS:
            raise FoveateError(f"fmow crop must be one of {', '.join(CROPS)}, got {crop!r}")
        if not isinstance(box_context, (int, float)) or isinstance(box_context, bool) or box_context < 0:
            raise FoveateError(f"box_context must be a number >= 0, got {box_context!r}")
        splits = {"train": "train", "val": "val", "test": "test"} if splits is None else dict(splits)
        unknown = set(splits) - {"train", "val", "test"}
        if unknown or "train" not in splits:
            raise FoveateError(f"fmow splits maps train (required), val, test to folder names, got {splits!r}")
        self.root, self.splits, self.variant = Path(root), splits, variant
        self.crop, self.box_context = crop, float(box_context)

    def _scan(self):
        if not self.root.is_dir():
            raise FoveateError(f"{self.root}: fMoW root folder not found")
        out = {}
        for split, name in self.splits.items():
            folder = self.root / name
            if not folder.is_dir():
                if split == "train":
                    raise FoveateError(f"{folder}: fMoW training folder not found")
                continue  # carved out of train
            rows = scan_fmow_split(folder, self.variant)
            if not rows:
                raise FoveateError(f"{folder}: no fMoW images (*_{self.variant}.jpg/.tif with their .json)")
            out[split] = rows
        return out, str(self.root)

    def dataset(self, split: str) -> FMoWDataset:
        base = super().dataset(split)
        return FMoWDataset(base.records, base.classes, base.view, base.channels, train=base.train,
                           allow_large=base.allow_large, on_error=base.on_error, crop=self.crop,
                           box_context=self.box_context)


def scan_fmow_split(folder: Path, variant: str = "rgb") -> list[tuple[Path, str, Path]]:
    """[(image, category, json)] of one split folder, sorted; one directory listing per instance."""
    suffix = f"_{variant}"
    rows = []
    for category in sorted(os.scandir(folder), key=lambda e: e.name):
        if not category.is_dir() or category.name.startswith("."):
            continue
        for instance in sorted(os.scandir(category.path), key=lambda e: e.name):
            if not instance.is_dir() or instance.name.startswith("."):
                continue
            names = {e.name for e in os.scandir(instance.path)}
            for name in sorted(names):
                stem, ext = os.path.splitext(name)
                if not stem.endswith(suffix) or ext.lower() not in IMAGE_EXTENSIONS or name.startswith("."):
                    continue
                image = Path(instance.path) / name
                if stem + ".json" not in names:
                    raise FoveateError(f"{image}: its metadata file {stem}.json is missing")
                rows.append((image, category.name, image.with_name(stem + ".json")))
    return rows

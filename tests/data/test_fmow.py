"""fMoW layout on a tiny generated tree: labels by category, lazy JSON and image reads, whole-image
and box crops, TNet's box-aware training crop, the configs, and bad input."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import foveate.data.fmow as fmow_mod
import foveate.data.folder as folder_mod
from foveate.config import apply_overrides, load_config
from foveate.data import FMOW_CLASSES, FMoWDataModule
from foveate.errors import FoveateError
from foveate.sources import RegionSource
from foveate.training.run import create_datamodule

REPO = Path(__file__).resolve().parents[2]
# (category, instance, (H, W), box [x, y, w, h]) per split
TREE = {
    "train": [("airport", 0, (120, 160), [40, 30, 60, 40]), ("airport", 1, (100, 100), [10, 10, 30, 30]),
              ("zoo", 0, (90, 150), [100, 20, 40, 50]), ("zoo", 1, (128, 128), [0, 0, 64, 64])],
    "val": [("airport", 2, (110, 130), [20, 20, 50, 50]), ("zoo", 2, (100, 140), [60, 40, 70, 50])],
}


def _write_fmow(root, tree=TREE, ext="jpg"):
    rng = np.random.default_rng(0)
    for split, items in tree.items():
        for category, i, (h, w), box in items:
            folder = root / split / category / f"{category}_{i}"
            folder.mkdir(parents=True, exist_ok=True)
            for n, variant in ((0, "rgb"), (0, "msrgb"), (1, "rgb")):
                stem = folder / f"{category}_{i}_{n}_{variant}"
                Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(f"{stem}.{ext}")
                meta = {"img_width": w, "img_height": h, "gsd": 0.5,
                        "bounding_boxes": [{"box": box, "category": category, "ID": 7 + i},
                                           {"box": [0, 0, 5, 5], "category": "false_detection", "ID": 1}]}
                Path(f"{stem}.json").write_text(json.dumps(meta))
    return root


@pytest.fixture
def fmow(tmp_path):
    return _write_fmow(tmp_path / "fmow")


def _module(root, **kw):
    kw = {"image_size": 64, "upsample": True, "batch_size": 2, **kw}
    return FMoWDataModule(root=str(root), **kw)


def test_fmow_classes_and_labels(fmow):
    assert len(FMOW_CLASSES) == 62 and list(FMOW_CLASSES) == sorted(FMOW_CLASSES)
    dm = _module(fmow)
    assert dm.classes == list(FMOW_CLASSES)
    train = dm.records["train"]
    assert len(train) == 8 and len(dm.records["val"]) == 4  # two _rgb images per instance; msrgb ignored
    assert all(r.path.name.endswith("_rgb.jpg") and r.meta == r.path.with_suffix(".json") for r in train)
    assert {(r.path.parent.parent.name, FMOW_CLASSES[r.label]) for r in train} == {("airport", "airport"),
                                                                                  ("zoo", "zoo")}
    data = _module(fmow, classes="data")
    assert data.classes == ["airport", "zoo"] and [r.label for r in data.records["val"]] == [0, 0, 1, 1]
    msrgb = _module(fmow, variant="msrgb")
    assert all(r.path.name.endswith("_msrgb.jpg") for r in msrgb.records["train"]) and len(msrgb.records["train"]) == 4
    x, y = next(iter(dm.val_dataloader()))
    assert x.shape == (2, 3, 64, 64) and y.tolist() == [FMOW_CLASSES.index("airport")] * 2


def test_lazy_json_and_image(fmow, monkeypatch):
    opened, parsed = [], []
    real_open, real_boxes = folder_mod.open_source, fmow_mod.read_boxes
    monkeypatch.setattr(folder_mod, "open_source", lambda p, c, **kw: opened.append(p) or real_open(p, c, **kw))
    monkeypatch.setattr(fmow_mod, "read_boxes", lambda m, c: parsed.append(m) or real_boxes(m, c))
    dm = create_datamodule({"name": "fmow", "root": str(fmow), "image_size": 64, "upsample": True,
                            "min_box_covered": 0.1})
    dm.setup("fit")
    ds = dm.dataset("train")
    assert opened == [] and parsed == []
    ds[3]
    assert opened == [ds.records[3].path] and parsed == [ds.records[3].meta]
    dm.dataset("val")[0]
    assert len(opened) == 2 and len(parsed) == 1  # evaluating the whole image needs no box


def test_box_crop_with_context(fmow, monkeypatch):
    reads = []
    real = RegionSource.read
    monkeypatch.setattr(RegionSource, "read", lambda s, b, o: reads.append(b.clone()) or real(s, b, o))
    ds = _module(fmow, crop="box", box_context=0.5).dataset("val")
    x, _ = ds[0]  # airport_2: 130x110 image, box [20, 20, 50, 50] (the false detection is ignored)
    assert reads[-1].tolist() == [[[0.0, 0.0, 95.0, 95.0]]]  # +25 px each side, clipped at 0
    assert x.shape == (3, 64, 64)
    ds[2]  # zoo_2: 140x100, box [60, 40, 70, 50] -> [25, 15, 165, 115] clipped to the image
    assert reads[-1].tolist() == [[[25.0, 15.0, 140.0, 100.0]]]
    whole = _module(fmow).dataset("val")
    whole[0]
    assert reads[-1].tolist() == [[[0.0, 0.0, 130.0, 110.0]]]


def test_tnet_box_aware_training_crop(fmow, monkeypatch):
    reads = []
    real = RegionSource.read
    monkeypatch.setattr(RegionSource, "read", lambda s, b, o: reads.append((b.clone(), o)) or real(s, b, o))
    ds = _module(fmow, resize="stretch", crop_scale=[0.85, 1.0], crop_ratio=[0.5, 2.0], min_box_covered=0.1,
                 vflip=0.0).dataset("train")
    torch.manual_seed(0)
    for _ in range(5):
        for i in range(len(ds)):
            x, _ = ds[i]
            assert x.shape == (3, 64, 64)
            boxes, out = reads[-1]
            assert out == (64, 64)  # stretched to the square
            x1, y1, x2, y2 = boxes[0, 0].tolist()
            meta = json.loads(ds.records[i].meta.read_text())
            h, w = meta["img_height"], meta["img_width"]
            bx, by, bw, bh = meta["bounding_boxes"][0]["box"]
            area = (x2 - x1) * (y2 - y1) / (w * h)
            assert 0 <= x1 < x2 <= w + 1e-6 and 0 <= y1 < y2 <= h + 1e-6 and 0.85 - 1e-6 <= area <= 1 + 1e-6
            inter = max(0, min(x2, bx + bw) - max(x1, bx)) * max(0, min(y2, by + bh) - max(y1, by))
            assert inter >= 0.1 * bw * bh - 1e-6


def test_split_names_and_carving(fmow):
    (fmow / "val").rename(fmow / "test_gt")
    dm = _module(fmow, splits={"train": "train", "val": "val", "test": "test_gt"}, val_fraction=0.5)
    assert len(dm.records["test"]) == 4 and len(dm.records["val"]) == 4 and len(dm.records["train"]) == 4


def test_fmow_bad_input(fmow, tmp_path):
    with pytest.raises(FoveateError, match="fMoW root folder not found"):
        _module(tmp_path / "nowhere").setup()
    (tmp_path / "empty" / "train").mkdir(parents=True)
    with pytest.raises(FoveateError, match=r"empty/train: no fMoW images"):
        _module(tmp_path / "empty").setup()
    with pytest.raises(FoveateError, match="unknown class 'dragon'"):
        _module(_write_fmow(tmp_path / "odd", {"train": [("dragon", 0, (80, 80), [0, 0, 10, 10])]})).setup()
    for bad in ({"variant": "pan"}, {"crop": "object"}, {"box_context": -1}, {"splits": {"val": "val"}}):
        with pytest.raises(FoveateError):
            _module(fmow, **bad)

    meta = fmow / "val" / "zoo" / "zoo_2" / "zoo_2_0_rgb.json"
    meta.write_text("{not json")
    ds = _module(fmow, min_box_covered=0.1).dataset("val")
    ds.train = True  # a training view of the val records: the box-aware crop reads the JSON
    index = [r.meta for r in ds.records].index(meta)
    with pytest.raises(FoveateError) as e:
        ds[index]
    assert str(meta) in str(e.value) and "\n" not in str(e.value)
    meta.write_text(json.dumps({"bounding_boxes": [{"box": [0, 0, -3, 4], "category": "zoo"}]}))
    with pytest.raises(FoveateError, match="bad bounding box"):
        ds[index]
    meta.write_text(json.dumps({"bounding_boxes": [{"box": [500, 500, 4, 4], "category": "zoo"}]}))
    ds.train = False
    ds[index]  # the whole image needs no box
    with pytest.raises(FoveateError, match="no bounding box inside"):
        _module(fmow, crop="box").dataset("val")[index]
    meta.unlink()
    with pytest.raises(FoveateError, match="zoo_2_0_rgb.jpg: its metadata file zoo_2_0_rgb.json is missing"):
        _module(fmow).setup()
    meta.write_text(json.dumps({"bounding_boxes": []}))

    image = fmow / "train" / "zoo" / "zoo_1" / "zoo_1_0_rgb.jpg"
    image.write_bytes(b"\xff\xd8\xff garbage")
    ds = _module(fmow).dataset("train")
    with pytest.raises(FoveateError) as e:
        ds[[r.path for r in ds.records].index(image)]
    assert str(image) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(FoveateError, match="smaller than the output"):
        _module(fmow, upsample=False, image_size=200).dataset("train")[0]


@pytest.mark.parametrize("name", ["tnet_fmow", "tnet_folder"])
def test_configs_build_their_data(name, fmow, tmp_path):
    """The shipped configs are valid: their data section builds on a tiny tree (root overridden)."""
    if name == "tnet_folder":
        root = tmp_path / "folder"
        for c in ("a", "b"):
            (root / c).mkdir(parents=True)
            for i in range(10):
                Image.new("RGB", (1100, 1030 + i)).save(root / c / f"{i}.png")
    else:
        root = fmow
    cfg = load_config(REPO / "configs" / f"{name}.yaml", [f"data.root={root}", "data.num_workers=0"])
    dm = create_datamodule(cfg["data"], cfg["seed"])
    assert len(dm.classes) == cfg["model"].get("num_classes", len(dm.classes))
    x, _ = dm.dataset("val")[0]
    assert x.shape == (3, cfg["data"]["image_size"], cfg["data"]["image_size"])
    for stage in cfg.get("stages", []):  # tnet_fmow: 448 px, then 896 px with 3 levels
        overrides = [f"{k}={json.dumps(v)}" for k, v in stage.items() if k != "name"]
        staged = apply_overrides(cfg, overrides)
        x, _ = create_datamodule(staged["data"], 0).dataset("train")[0]
        assert x.shape == (3, staged["data"]["image_size"], staged["data"]["image_size"])
    if name == "tnet_fmow":
        assert [s["name"] for s in cfg["stages"]] == ["stage1_448", "stage2_896"] and staged["model"]["levels"] == 3

"""Folder-per-class and CSV data sets: lazy per-item reads, aspect-keeping crops, augmentation only
in training, labels, workers, a CLI round trip (predict prints class names), and every bad input
as a one-line error."""
import csv
import logging

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as TF
from PIL import Image

import foveate.data.folder as folder_mod
from foveate.data import (
    CSVDataModule,
    FolderDataModule,
    ImageDataset,
    ImageRecord,
    ViewConfig,
)
from foveate.errors import FoveateError
from foveate.sources import RegionSource, load_image
from foveate.training.run import create_datamodule

SIZES = {"cat": [(90, 120), (100, 100), (80, 160)], "dog": [(120, 90), (96, 128), (110, 110)]}  # (H, W)


def _write_tree(root, sizes=SIZES, ext="png"):
    """root/class/i.ext with random RGB pixels of the given (H, W); returns {path: class}."""
    rng = np.random.default_rng(0)
    out = {}
    for name, shapes in sizes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i, (h, w) in enumerate(shapes):
            path = root / name / f"{i}.{ext}"
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
            out[path] = name
    return out


def _write_csv(path, rows, header=("path", "label")):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "images"
    return root, _write_tree(root)


def _module(root, **kw):
    kw = {"image_size": 64, "val_fraction": 0.34, "batch_size": 2, **kw}
    return FolderDataModule(root=str(root), **kw)


def _content_box(x):
    """(top, left, h, w) of the non-zero part of a (C, H, W) padded output."""
    rows, cols = torch.nonzero(x.abs().sum(0) > 0, as_tuple=True)
    return int(rows.min()), int(cols.min()), int(rows.max() - rows.min() + 1), int(cols.max() - cols.min() + 1)


class ReadSpy:
    """Records every RegionSource.read (boxes, out_size) while the test runs."""

    def __init__(self, monkeypatch):
        self.calls = []
        original = RegionSource.read

        def read(source, boxes, out_size):
            self.calls.append((boxes.clone(), tuple(out_size), source.size))
            return original(source, boxes, out_size)

        monkeypatch.setattr(RegionSource, "read", read)


def test_shapes_labels_and_classes(tree):
    root, files = tree
    dm = _module(root, image_size=[48, 64])
    assert dm.classes == ["cat", "dog"] and dm.num_classes == 2
    records = [r for split in dm.records.values() for r in split]
    assert sorted(str(r.path) for r in records) == sorted(map(str, files))
    assert all(dm.classes[r.label] == files[r.path] for r in records)
    assert {k: len(v) for k, v in dm.records.items()} == {"train": 4, "val": 2, "test": 0}  # 1 of 3 per class
    for split in ("train", "val"):
        x, y = next(iter(dm._loader(split, shuffle=False)))
        assert x.shape == (2, 3, 48, 64) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
        assert y.dtype == torch.int64


def test_eval_is_the_whole_image_letterboxed(tree, monkeypatch):
    root, _ = tree
    spy = ReadSpy(monkeypatch)
    ds = _module(root).dataset("val")
    for i, record in enumerate(ds.records):
        x, _ = ds[i]
        boxes, out_size, (h, w) = spy.calls[-1]
        assert boxes.tolist() == [[[0, 0, w, h]]]  # one read of the whole image at the content size
        s = min(64 / h, 64 / w)
        assert out_size == (round(h * s), round(w * s)) and max(out_size) == 64
        top, left, ch, cw = _content_box(x)
        assert (ch, cw) == out_size and top == (64 - ch) // 2 and left == (64 - cw) // 2  # centred, zero padding
        image = load_image(record.path, 3)[None]
        expected = TF.resize(image, list(out_size), antialias=True)[0]
        assert torch.allclose(x[:, top:top + ch, left:left + cw], expected, atol=0.03)


def test_stretch_fills_the_output(tree):
    root, _ = tree
    ds = _module(root, resize="stretch").dataset("val")
    x, _ = ds[0]
    assert x.shape == (3, 64, 64) and _content_box(x) == (0, 0, 64, 64)


def test_training_crop_keeps_the_image_aspect(tree, monkeypatch):
    root, _ = tree
    spy = ReadSpy(monkeypatch)
    ds = _module(root, crop_scale=[0.2, 0.6], brightness=0, contrast=0, saturation=0, hflip=0).dataset("train")
    areas = []
    for _ in range(3):
        for i in range(len(ds)):
            ds[i]
            boxes, out_size, (h, w) = spy.calls[-1]
            x1, y1, x2, y2 = boxes[0, 0].tolist()
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
            assert abs((x2 - x1) / (y2 - y1) - w / h) < 1e-6  # same aspect as the image: nothing stretched
            assert abs(out_size[1] / out_size[0] - w / h) < 2 / min(out_size)
            areas.append((x2 - x1) * (y2 - y1) / (w * h))
    assert 0.2 - 1e-6 <= min(areas) and max(areas) <= 0.6 + 1e-6 and max(areas) - min(areas) > 0.1


def test_flips_and_jitter_only_in_training(tree):
    root, _ = tree
    kw = {"crop_scale": [1.0, 1.0], "brightness": 0, "contrast": 0, "saturation": 0}
    dm = _module(root, hflip=1.0, vflip=1.0, **kw)
    train, val = dm.dataset("train"), _module(root, hflip=1.0, vflip=1.0, **kw).dataset("train")
    val.train = False  # the same records, evaluation view
    x_train, _ = train[0]
    x_eval, _ = val[0]
    top, left, h, w = _content_box(x_eval)
    flipped = x_eval[:, top:top + h, left:left + w].flip(-1).flip(-2)
    assert torch.allclose(x_train[:, top:top + h, left:left + w], flipped, atol=1e-6)

    jittered = _module(root, crop_scale=[1.0, 1.0], hflip=0.0, brightness=0.5, contrast=0.5,
                       saturation=0.5).dataset("train")
    x_jit, _ = jittered[0]
    assert not torch.allclose(x_jit, x_eval, atol=1e-3)
    assert (x_jit[:, :top] == 0).all() and (x_jit[:, top + h:] == 0).all()  # padding stays zero
    plain_eval = _module(root, brightness=0.5, contrast=0.5, saturation=0.5, hflip=1.0, vflip=1.0).dataset("val")
    a, _ = plain_eval[0]
    b, _ = plain_eval[0]
    assert torch.equal(a, b)  # evaluation is deterministic: no flips, no jitter


def test_lazy_nothing_opened_until_an_item_is_read(tree, monkeypatch):
    root, _ = tree
    calls = []
    original = folder_mod.open_source

    def counting(path, channels, **kw):
        calls.append(path)
        return original(path, channels, **kw)

    monkeypatch.setattr(folder_mod, "open_source", counting)
    dm = create_datamodule({"name": "folder", "root": str(root), "image_size": 64, "val_fraction": 0.34})
    dm.setup("fit")
    train = dm.dataset("train")
    assert dm.classes == ["cat", "dog"] and calls == []
    train[1]
    assert calls == [train.records[1].path]  # one open per item, in __getitem__


def test_csv_equals_folder(tree, tmp_path):
    root, files = tree
    rows = [(str(p.relative_to(root)), name) for p, name in files.items()]
    csv_path = _write_csv(root / "labels.csv", rows)
    folder, table = _module(root), CSVDataModule(csv=str(csv_path), image_size=64, val_fraction=0.34, batch_size=2)
    assert table.classes == folder.classes
    for split in ("train", "val"):
        assert [(str(r.path), r.label) for r in table.records[split]] == \
               [(str(r.path), r.label) for r in folder.records[split]]
    a, b = folder.dataset("val"), table.dataset("val")
    assert torch.equal(a[0][0], b[0][0])

    # a split column and integer labels (with class names from the config)
    split_rows = [(str(p.relative_to(root)), folder.classes.index(n), "val" if p.stem == "0" else "train")
                  for p, n in files.items()]
    csv2 = _write_csv(root / "split.csv", split_rows, ("path", "label", "split"))
    dm = create_datamodule({"name": "csv", "csv": str(csv2), "image_size": 64, "classes": ["cat", "dog"]})
    assert [r.path.stem for r in dm.records["val"]] == ["0", "0"]
    assert [dm.classes[r.label] for r in dm.records["val"]] == ["cat", "dog"]
    ints = create_datamodule({"name": "csv", "csv": str(csv2), "image_size": 64})
    assert ints.classes == ["0", "1"]


def test_separate_split_trees_and_csvs(tmp_path):
    train = _write_tree(tmp_path / "train")
    _write_tree(tmp_path / "val", {"dog": [(100, 100)]})
    dm = FolderDataModule(train=str(tmp_path / "train"), val=str(tmp_path / "val"), image_size=64, test_fraction=0.34)
    assert len(dm.records["val"]) == 1 and dm.classes[dm.records["val"][0].label] == "dog"
    assert len(dm.records["test"]) == 2 and len(dm.records["train"]) == 4
    t = _write_csv(tmp_path / "train.csv", [(str(p), n) for p, n in train.items()])  # absolute paths work too
    v = _write_csv(tmp_path / "val.csv", [("val/dog/0.png", "dog")])
    table = CSVDataModule(train=str(t), val=str(v), image_size=64)
    assert len(table.records["train"]) == 6 and table.records["val"][0].path == tmp_path / "val/dog/0.png"


def test_workers_read_in_parallel(tree):
    root, _ = tree
    dm = _module(root, num_workers=2, batch_size=2)
    batches = list(dm.train_dataloader())
    assert sum(len(y) for _, y in batches) == 4 and all(x.shape[1:] == (3, 64, 64) for x, _ in batches)
    again = [y.tolist() for _, y in _module(root, num_workers=2, batch_size=2).train_dataloader()]
    assert again == [y.tolist() for _, y in batches]  # seeded shuffle


# -- bad input --------------------------------------------------------------------------------
def _one_line(excinfo, *needles):
    msg = str(excinfo.value)
    assert "\n" not in msg, msg
    for n in needles:
        assert str(n) in msg, msg


def test_empty_or_missing_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(FoveateError) as e:
        FolderDataModule(root=str(tmp_path / "empty")).setup()
    _one_line(e, tmp_path / "empty", "no class folders")
    (tmp_path / "empty" / "cat").mkdir()
    (tmp_path / "empty" / "cat" / "notes.txt").write_text("x")
    with pytest.raises(FoveateError) as e:
        FolderDataModule(root=str(tmp_path / "empty")).setup()
    _one_line(e, tmp_path / "empty" / "cat", "no image files")
    with pytest.raises(FoveateError) as e:
        FolderDataModule(root=str(tmp_path / "nowhere")).setup()
    _one_line(e, "nowhere", "not found")


def test_csv_errors(tree):
    root, files = tree
    good = [(str(p.relative_to(root)), n) for p, n in files.items()]
    with pytest.raises(FoveateError) as e:
        CSVDataModule(csv=str(_write_csv(root / "a.csv", [*good, ("cat/0.png", "bird")], ("path", "label", "split")
                                         )), image_size=64, classes=["cat", "dog"]).setup()
    _one_line(e, "cat/0.png", "unknown class 'bird'")
    with pytest.raises(FoveateError) as e:  # a test label the training split never had
        CSVDataModule(train=str(_write_csv(root / "t.csv", good)),
                      test=str(_write_csv(root / "u.csv", [("cat/1.png", "bird")])), image_size=64).setup()
    _one_line(e, "unknown class 'bird'")
    with pytest.raises(FoveateError) as e:
        CSVDataModule(csv=str(_write_csv(root / "b.csv", [*good, ("cat/missing.png", "cat")])), image_size=64).setup()
    _one_line(e, "missing.png", "no such file", "b.csv:8")
    with pytest.raises(FoveateError) as e:
        CSVDataModule(csv=str(_write_csv(root / "c.csv", good, ("file", "label"))), image_size=64).setup()
    _one_line(e, "c.csv", "'path' and 'label'")
    with pytest.raises(FoveateError) as e:
        CSVDataModule(csv=str(_write_csv(root / "d.csv", [("cat/0.png", "cat", "holdout")],
                                         ("path", "label", "split"))), image_size=64).setup()
    _one_line(e, "d.csv:2", "holdout")
    with pytest.raises(FoveateError) as e:
        CSVDataModule(csv=str(_write_csv(root / "e.csv", [])), image_size=64).setup()
    _one_line(e, "e.csv", "no images")


def test_too_small_image(tree):
    root, _ = tree
    ds = _module(root, image_size=170).dataset("val")
    with pytest.raises(FoveateError) as e:
        ds[0]
    _one_line(e, ds.records[0].path, "smaller than the output", "upsample")
    x, _ = _module(root, image_size=170, upsample=True).dataset("val")[0]
    assert x.shape == (3, 170, 170)


def test_corrupt_image_fails_or_is_skipped_with_a_warning(tree, caplog):
    _, files = tree
    bad = next(p for p in files if p.parent.name == "cat" and p.stem == "2")
    bad.write_bytes(bad.read_bytes()[:200])  # truncated PNG
    records = [ImageRecord(p, ["cat", "dog"].index(n)) for p, n in files.items()]
    view = ViewConfig(size=64)
    index = [r.path for r in records].index(bad)
    with pytest.raises(FoveateError) as e:
        ImageDataset(records, ["cat", "dog"], view, train=True)[index]
    _one_line(e, bad)
    skipping = ImageDataset(records, ["cat", "dog"], view, train=True, on_error="skip")
    with caplog.at_level(logging.WARNING, logger="foveate.data.folder"):
        x, y = skipping[index]
    assert x.shape == (3, 64, 64) and y == records[index + 1].label
    assert str(bad) in caplog.text and "skipping" in caplog.text


def test_bad_config_values(tree):
    root, _ = tree
    for kw, needle in [({"image_size": 4}, "image_size"), ({"resize": "crop"}, "resize"),
                       ({"crop_scale": [0.5, 0.2]}, "crop_scale"), ({"hflip": 2}, "hflip"),
                       ({"on_error": "ignore"}, "on_error"), ({"val_fraction": 1.0}, "val_fraction"),
                       ({"classes": ["a", "a"]}, "classes"), ({"channels": 2}, "channels")]:
        with pytest.raises(FoveateError) as e:
            _module(root, **kw)
        _one_line(e, needle)
    with pytest.raises(FoveateError, match="either root"):
        FolderDataModule(root=str(root), train=str(root))
    with pytest.raises(FoveateError, match="bad data arguments"):
        create_datamodule({"name": "folder", "root": str(root), "imagesize": 64})
    with pytest.raises(FoveateError, match="known: megapixel_mnist, folder, csv, fmow"):
        create_datamodule({"name": "imagenet"})
    with pytest.raises(FoveateError, match="no test images"):
        _module(root).test_dataloader()


# -- CLI round trip ---------------------------------------------------------------------------
def test_cli_fit_test_predict_on_a_folder(tree, tmp_path, capsys):
    import yaml

    from foveate.cli import main
    from foveate.training import load_checkpoint

    root, _ = tree
    cfg = {
        "seed": 0, "output_dir": str(tmp_path / "run"),
        "model": {"name": "tnet", "in_chans": 3, "backbone": "tiny_cnn", "levels": 2, "grid": 2, "overlap": 0.6,
                  "base_resolution": 24, "locations": 1},
        "data": {"name": "folder", "root": str(root), "image_size": 48, "val_fraction": 0.34, "test_fraction": 0.34,
                 "batch_size": 2},
        "trainer": {"max_epochs": 1, "max_steps": 2, "enable_progress_bar": False, "enable_model_summary": False,
                    "log_every_n_steps": 1},
        "eval": {"locations": [1, 2]},
    }
    path = tmp_path / "folder.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["fit", "--config", str(path)]) == 0
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    module = load_checkpoint(ckpt)
    assert module.config["data"]["classes"] == ["cat", "dog"] and module.config["model"]["num_classes"] == 2
    capsys.readouterr()
    assert main(["test", "--checkpoint", str(ckpt)]) == 0
    out = dict(line.split(": ") for line in capsys.readouterr().out.splitlines() if line.startswith("test/"))
    assert set(out) == {"test/acc@1", "test/acc@2"} and all(0 <= float(v) <= 1 for v in out.values())
    preds = tmp_path / "preds.csv"
    assert main(["predict", "--checkpoint", str(ckpt), "--input", str(root / "dog"), "--output", str(preds)]) == 0
    with open(preds) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and all(r["class"] == ["cat", "dog"][int(r["predicted"])] for r in rows)

    cfg["model"]["num_classes"] = 5
    path.write_text(yaml.safe_dump(cfg))
    assert main(["fit", "--config", str(path)]) == 2
    assert "model.num_classes is 5 but the data has 2 classes" in capsys.readouterr().err

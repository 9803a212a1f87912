import csv
import json
import pickle
import time

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from foveate.data import (
    LABELS,
    PROFILES,
    DigitPool,
    MegapixelConfig,
    MegapixelMNIST,
    write_megapixel_mnist,
)
from foveate.data.megapixel_mnist import downscale_matrix, task_labels, to_uint8
from foveate.errors import FoveateError


def dataset(pools, n=10, split="test", **config) -> MegapixelMNIST:
    return MegapixelMNIST(pools[split], n, split, MegapixelConfig(**config))


def box_mask(shape, boxes) -> np.ndarray:
    mask = np.zeros(shape, bool)
    for x1, y1, x2, y2 in boxes:
        mask[y1:y2, x1:x2] = True
    return mask


def boxes_intersect(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@pytest.mark.parametrize("size", [1500, 300, (200, 700), 138])
def test_digit_boxes_never_overlap_and_stay_inside(pools, size):
    ds = dataset(pools, canvas_size=size)
    h, w = ds.config.shape
    for i in range(100):
        corners = ds.renderer.layout(i).digit_corners  # (5, 2) row, col
        assert corners.min() >= 0 and corners[:, 0].max() <= h - 28 and corners[:, 1].max() <= w - 28
        close = (np.abs(corners[:, None] - corners[None]) < 28).all(-1)
        assert not (close & ~np.eye(5, dtype=bool)).any()


@pytest.mark.parametrize("size", [1500, (300, 500)])
def test_noise_corners_in_range(pools, size):
    ds = dataset(pools, canvas_size=size)
    h, w = ds.config.shape
    corners = np.concatenate([ds.renderer.layout(i).noise_corners for i in range(200)])  # (10000, 2)
    assert corners.min() >= 28 and corners[:, 0].max() <= h - 29 and corners[:, 1].max() <= w - 29
    if h < 1500:  # dense enough to reach both ends of [28, S-29]
        assert corners.min(0).tolist() == [28, 28] and corners.max(0).tolist() == [h - 29, w - 29]


@pytest.mark.parametrize("profile", PROFILES)
def test_four_labels_match_the_sample_record(pools, profile):
    ds = dataset(pools, 30, canvas_size=300, profile=profile)
    for i in range(30):
        s = ds.sample(i)
        cls = s.digit_classes
        np.testing.assert_array_equal(cls, pools["test"].labels[s.digit_ids])
        t = s.labels["majority"]
        counts = np.bincount(cls, minlength=10)
        assert (cls[:3] == t).all() and (cls[3:] != t).all()
        assert counts[t] == 3 and np.delete(counts, t).max() <= 2  # strict majority
        assert s.labels["max"] == cls.max()
        rows = s.digit_boxes[:, 1]
        assert s.labels["top"] == cls[np.flatnonzero(rows == rows.min())[0]]
        np.testing.assert_array_equal(s.labels["multi"], np.isin(np.arange(10), cls).astype(np.float32))


def test_top_label_ties_go_to_the_first_stored_digit():
    classes = np.array([4, 4, 4, 7, 1])
    assert task_labels(4, classes, np.array([[50, 0], [90, 0], [60, 0], [50, 200], [300, 0]]))["top"] == 4
    assert task_labels(4, classes, np.array([[50, 0], [90, 0], [60, 0], [10, 200], [300, 0]]))["top"] == 7


@pytest.mark.parametrize("profile", PROFILES)
def test_vertical_flips_only_when_fixed(pools, profile):
    """Q2: under "ats"/"ips" each second segment B_i is some A_j, possibly mirrored left-right,
    never upside down; "fixed" flips rows, so some B_i is no such segment."""
    noise = dataset(pools, 1, profile=profile).renderer.noise
    a, b = noise.segments[:, 0], noise.segments[:, 1]  # (50, 28, 28) each
    assert a[:, 0, 0].all()  # every A starts at the top-left corner
    allowed = np.concatenate([a, a[:, :, ::-1]])
    upright = np.array([(allowed == bi).all(axis=(1, 2)).any() for bi in b])
    assert upright.all() == (profile != "fixed")
    np.testing.assert_array_equal(noise.patterns > 0, a | b)
    lit = noise.patterns[noise.patterns > 0]
    assert lit.min() >= 0.8 and lit.max() <= 1.0


def test_uint8_truncates_under_ats_and_rounds_when_fixed(pools):
    ats, fixed = (dataset(pools, 1, profile=p).renderer for p in ("ats", "fixed"))
    np.testing.assert_array_equal(ats.noise_u8, (ats.noise.patterns * 255).astype(np.uint8))
    np.testing.assert_array_equal(fixed.noise_u8, np.rint(fixed.noise.patterns * 255).astype(np.uint8))
    assert (ats.noise_u8 <= 254).all() and (fixed.noise_u8 == 255).any()
    np.testing.assert_array_equal(to_uint8(np.float32([0.5, 0.999]), truncate=True), [127, 254])
    np.testing.assert_array_equal(to_uint8(np.float32([0.5, 0.999]), truncate=False), [128, 255])


def test_reproducible_from_seed_split_and_index_alone(pools):
    after_others = [dataset(pools, canvas_size=500).sample(i) for i in range(8)][7]
    for s in (dataset(pools, canvas_size=500).sample(7), dataset(pools, 1000, canvas_size=500).sample(7),
              pickle.loads(pickle.dumps(dataset(pools, canvas_size=500))).sample(7)):
        np.testing.assert_array_equal(s.canvas, after_others.canvas)
        np.testing.assert_array_equal(s.digit_boxes, after_others.digit_boxes)
        assert s.labels["majority"] == after_others.labels["majority"]
    other_seed = dataset(pools, canvas_size=500, seed=1).sample(7)
    other_split = MegapixelMNIST(pools["test"], 10, "val", MegapixelConfig(canvas_size=500))
    assert not np.array_equal(other_seed.canvas, after_others.canvas)
    assert not np.array_equal(other_split.sample(7).canvas, after_others.canvas)
    # Q6: each split has its own noise patterns.
    assert not np.array_equal(other_split.renderer.noise.patterns, dataset(pools, 1).renderer.noise.patterns)


def test_pixel_statistics_match_spec(real_pools):
    """Spec section 5 over 50 canvases of 1500x1500 (MNIST digits)."""
    pool = real_pools["test"]
    ds = MegapixelMNIST(pool, 50, "test", MegapixelConfig())
    area = 1500 * 1500
    ink, union, touched = [], [], 0
    for i in range(50):
        s = ds.sample(i)
        ink.append((pool.images[s.digit_ids] > 0).sum(axis=(1, 2)))
        union.append(box_mask(s.canvas.shape, s.noise_boxes).mean())
        touched += sum(any(boxes_intersect(d, n) for n in s.noise_boxes) for d in s.digit_boxes)
    ink_per_digit = np.mean(ink)
    assert 135 < ink_per_digit < 165  # spec: ~149 px
    assert 0.030 < 100 * 5 * ink_per_digit / area < 0.037  # spec: ~0.033 % of the canvas
    assert 1.69 < 100 * np.mean(union) <= 100 * 50 * 784 / area  # spec: union ~1.73 %, at most 1.74 %
    assert 0.02 < touched / 250 < 0.13  # Q1: ~6.7 % of digits touch a noise box
    patterns = ds.renderer.noise.patterns
    assert 55 < (patterns > 0).sum(axis=(1, 2)).mean() < 75  # spec: ~65 lit pixels per pattern


def test_ips_order_keeps_digits_intact(pools):
    pool = pools["test"]
    ds = dataset(pools, canvas_size=300, profile="ips", n_noise=200, n_patterns=200)  # dense noise
    hit = 0
    for i in range(10):
        s = ds.sample(i)
        for box, idx in zip(s.digit_boxes, s.digit_ids):
            x1, y1, x2, y2 = box
            np.testing.assert_array_equal(s.canvas[y1:y2, x1:x2], pool.images[idx])
            hit += any(boxes_intersect(box, n) for n in s.noise_boxes)
    assert hit > 0


def test_ats_order_lets_noise_boxes_erase_digits(pools):
    pool = pools["test"]
    ds = dataset(pools, canvas_size=300, n_noise=200)
    damaged = 0
    for i in range(10):
        s = ds.sample(i)
        x1, y1, x2, y2 = s.noise_boxes[-1]  # pasted last: its whole box, zeros included, survives
        np.testing.assert_array_equal(s.canvas[y1:y2, x1:x2], ds.renderer.noise_u8[s.noise_ids[-1]])
        covered = box_mask(s.canvas.shape, np.concatenate([s.digit_boxes, s.noise_boxes]))
        assert s.canvas[~covered].max() == 0
        damaged += sum(not np.array_equal(s.canvas[b[1]:b[3], b[0]:b[2]], pool.images[k])
                       for b, k in zip(s.digit_boxes, s.digit_ids))
    assert damaged > 0


@pytest.mark.parametrize("label", LABELS)
def test_dataset_items(pools, label):
    ds = dataset(pools, 4, canvas_size=(200, 300), label=label)
    image, target = ds[2]
    assert image.shape == (1, 200, 300) and image.dtype == torch.float32
    assert image.min() >= 0 and 0 < image.max() <= 1
    torch.testing.assert_close(image[0], torch.from_numpy(ds.sample(2).canvas).float() / 255)
    if label == "multi":
        assert target.shape == (10,) and target.dtype == torch.float32 and 2 <= target.sum() <= 3
    else:
        assert target.shape == () and target.dtype == torch.int64 and target.item() == ds.sample(2).labels[label]
    assert len(ds) == 4 and torch.equal(ds[-1][0], ds[3][0])
    with pytest.raises(IndexError):
        ds[4]


def test_full_size_canvas_and_render_time(pools):
    ds = dataset(pools, 20)
    image, _ = ds[0]
    assert image.shape == (1, 1500, 1500)
    times = []
    for i in range(20):
        start = time.perf_counter()
        ds.renderer.render_canvas(ds.renderer.layout(i))
        times.append(time.perf_counter() - start)
    assert np.median(times) < 0.020


def test_dataloader_workers_match_main_process(pools):
    ds = dataset(pools, 8, canvas_size=200, label="multi")

    def batches(workers):
        return list(DataLoader(ds, batch_size=4, num_workers=workers))

    for (x0, y0), (x2, y2) in zip(batches(0), batches(2), strict=True):
        assert torch.equal(x0, x2) and torch.equal(y0, y2)


def test_lowres_view(pools):
    ds = dataset(pools, 3)
    s = ds.sample(1, lowres=True)
    assert s.lowres.shape == (180, 180) and s.lowres.dtype == np.uint8
    np.testing.assert_array_equal(s.canvas, ds.sample(1).canvas)  # the canvas never depends on it
    m = downscale_matrix(28, 3, sigma=(1 / 0.12 - 1) / 2)
    r, c = np.floor(0.12 * s.noise_boxes[-1, [1, 0]]).astype(int)  # pasted last
    expect = to_uint8(m @ ds.renderer.noise.patterns[s.noise_ids[-1]] @ m.T, truncate=True)
    np.testing.assert_array_equal(s.lowres[r:r + 3, c:c + 3], expect)


def test_downscale_is_gaussian_then_bilinear_at_pixel_centres():
    ndimage = pytest.importorskip("scipy.ndimage")
    x = np.random.default_rng(0).random((28, 28))
    sigma = (1 / 0.12 - 1) / 2
    blurred = ndimage.gaussian_filter(x, sigma, mode="constant", cval=0.0, truncate=4.0)
    centres = (np.arange(3) + 0.5) * 28 / 3 - 0.5
    rows, cols = np.meshgrid(centres, centres, indexing="ij")
    expect = ndimage.map_coordinates(blurred, [rows, cols], order=1, mode="constant")
    m = downscale_matrix(28, 3, sigma)
    np.testing.assert_allclose(m @ x @ m.T, expect, atol=1e-12)


def test_write_megapixel_mnist(tmp_path, pools):
    config = MegapixelConfig(canvas_size=200, profile="fixed", seed=3)
    out = tmp_path / "out"
    csv_path = write_megapixel_mnist(out, 3, split="val", pool=pools["val"], config=config)
    assert csv_path == out / "labels.csv"
    assert sorted(p.name for p in out.iterdir()) == ["000000.png", "000001.png", "000002.png",
                                                     "labels.csv", "parameters.json"]
    ds = MegapixelMNIST(pools["val"], 3, "val", config)
    with open(csv_path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3
    for i, row in enumerate(rows):
        s = ds.sample(i)
        with Image.open(out / row["path"]) as img:
            assert img.mode == "L"
            np.testing.assert_array_equal(np.asarray(img), s.canvas)
        assert (int(row["label"]), int(row["max"]), int(row["top"])) == \
               (s.labels["majority"], s.labels["max"], s.labels["top"])
        assert row["multi"] == "".join(str(int(v)) for v in s.labels["multi"]) and len(row["multi"]) == 10
    params = json.loads((out / "parameters.json").read_text())
    assert params["profile"] == "fixed" and params["seed"] == 3 and params["split"] == "val"


def test_write_defaults_to_builtin_digits(tmp_path):
    csv_path = write_megapixel_mnist(tmp_path, 1, config=MegapixelConfig(canvas_size=200))
    assert (tmp_path / "000000.png").is_file() and csv_path.read_text().startswith("path,label,max,top,multi")


@pytest.mark.parametrize("kwargs", [
    dict(canvas_size=100), dict(canvas_size=137), dict(canvas_size=(56, 2000)), dict(canvas_size="big"),
    dict(canvas_size=(300,)), dict(canvas_size=300.0), dict(canvas_size=True),
    dict(n_target=2, n_other=2), dict(n_other=-1), dict(n_noise=-1), dict(n_noise=5, n_patterns=0),
    dict(n_target=2.5), dict(profile="ATS"), dict(label="minority"), dict(lowres_scale=0),
    dict(lowres_scale=1.5), dict(lowres_scale=0.01), dict(seed=-1), dict(seed=1.5),
    dict(profile="ips", n_patterns=10),
])
def test_bad_config_values(kwargs):
    with pytest.raises(FoveateError) as info:
        MegapixelConfig(**kwargs)
    assert "\n" not in str(info.value)


def test_bad_dataset_arguments(pools):
    with pytest.raises(FoveateError, match="n must be"):
        MegapixelMNIST(pools["test"], -1, "test")
    with pytest.raises(FoveateError, match="split 'dev'"):
        MegapixelMNIST(pools["test"], 1, "dev")
    no_nines = DigitPool(np.zeros((9, 28, 28), np.uint8), np.arange(9), "nines missing")
    with pytest.raises(FoveateError, match=r"lacks class\(es\) \[9\]"):
        MegapixelMNIST(no_nines, 1, "test")
    assert MegapixelConfig(canvas_size=[300, 400]).shape == (300, 400)

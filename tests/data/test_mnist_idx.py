import gzip

import numpy as np
import pytest

from foveate.data import DigitPool, load_digits, read_idx
from foveate.errors import FoveateError


@pytest.mark.parametrize("name", ["images-idx3-ubyte", "images-idx3-ubyte.gz"])
def test_idx_round_trip(tmp_path, write_idx, tiny_digits, name):
    images, labels = tiny_digits(12)
    got_images = read_idx(write_idx(tmp_path / name, images))
    got_labels = read_idx(write_idx(tmp_path / ("labels-" + name), labels))
    assert got_images.dtype == np.uint8 and got_images.shape == (12, 28, 28)
    np.testing.assert_array_equal(got_images, images)
    np.testing.assert_array_equal(got_labels, labels)


def test_gzip_detected_by_content_not_name(tmp_path, write_idx, tiny_digits):
    images, _ = tiny_digits(3)
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "plain-name", images, compress=True)), images)


def _one_line_error(path, match):
    with pytest.raises(FoveateError, match=match) as info:
        read_idx(path)
    message = str(info.value)
    assert "\n" not in message and path.name in message
    return message


def test_truncated_raw_file(tmp_path, write_idx, tiny_digits):
    path = write_idx(tmp_path / "t-images-idx3-ubyte", tiny_digits(5)[0])
    path.write_bytes(path.read_bytes()[:-100])
    _one_line_error(path, "truncated")


def test_truncated_header(tmp_path):
    path = tmp_path / "short-idx3-ubyte"
    path.write_bytes((2051).to_bytes(4, "big") + b"\x00\x00")
    _one_line_error(path, "truncated IDX header")


def test_truncated_gzip(tmp_path, write_idx, tiny_digits):
    path = write_idx(tmp_path / "t-images-idx3-ubyte.gz", tiny_digits(5)[0])
    path.write_bytes(path.read_bytes()[:-40])
    _one_line_error(path, "gzip")


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "bad.gz"
    path.write_bytes(b"\x1f\x8b" + bytes(range(200)))
    _one_line_error(path, "gzip")


def test_wrong_magic(tmp_path, write_idx, tiny_digits):
    path = write_idx(tmp_path / "x-idx3-ubyte", tiny_digits(2)[0], magic=2052)
    assert "2052" in _one_line_error(path, "magic")


def test_trailing_bytes(tmp_path, write_idx, tiny_digits):
    path = write_idx(tmp_path / "x-idx1-ubyte", tiny_digits(4)[1])
    path.write_bytes(path.read_bytes() + b"\x00")
    _one_line_error(path, "unexpected bytes")


def test_missing_file(tmp_path):
    _one_line_error(tmp_path / "nope.gz", "no such file")


def _pair(tmp_path, write_idx, images, labels, prefix="set"):
    return (write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", images),
            write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", labels))


def test_mismatched_counts(tmp_path, write_idx, tiny_digits):
    images, labels = tiny_digits(40)
    pair = _pair(tmp_path, write_idx, images, labels[:39])
    with pytest.raises(FoveateError, match="39 labels for 40 images"):
        load_digits(pair)


def test_swapped_pair(tmp_path, write_idx, tiny_digits):
    images_path, labels_path = _pair(tmp_path, write_idx, *tiny_digits(40))
    with pytest.raises(FoveateError, match="expected 28x28 images"):
        load_digits((labels_path, images_path))


def test_pool_lacking_a_class(tmp_path, write_idx, tiny_digits):
    pair = _pair(tmp_path, write_idx, *tiny_digits(90, classes=9))
    with pytest.raises(FoveateError, match=r"lacks digit class\(es\) \[9\]"):
        load_digits(pair)


@pytest.mark.parametrize("fractions", [(0.7, 0.3), (0.7, 0.2, 0.2), (0.8, 0.0, 0.2), (0.5, -0.1, 0.2), ("a", 1, 1)])
def test_bad_fractions(fractions):
    with pytest.raises(FoveateError, match="fractions"):
        load_digits(fractions=fractions)


def test_bad_split_seed():
    with pytest.raises(FoveateError, match="split_seed"):
        load_digits(split_seed=-1)


def test_pair_split_is_disjoint_and_seeded(tmp_path, write_idx, tiny_digits):
    pair = _pair(tmp_path, write_idx, *tiny_digits(1000))
    pools = load_digits(pair, fractions=(0.5, 0.2, 0.3), split_seed=3)
    assert {k: len(v) for k, v in pools.items()} == {"train": 500, "val": 200, "test": 300}
    idx = np.concatenate([p.file_indices for p in pools.values()])
    assert len(np.unique(idx)) == 1000
    again = load_digits(pair, fractions=(0.5, 0.2, 0.3), split_seed=3)
    other = load_digits(pair, fractions=(0.5, 0.2, 0.3), split_seed=4)
    np.testing.assert_array_equal(again["test"].file_indices, pools["test"].file_indices)
    assert not np.array_equal(other["test"].file_indices, pools["test"].file_indices)


@pytest.mark.parametrize("gz", [".gz", ""])
def test_standard_layout_keeps_original_protocol(tmp_path, write_idx, tiny_digits, gz):
    train, test = tiny_digits(800, seed=1), tiny_digits(30, seed=2)
    for prefix, (images, labels) in (("train", train), ("t10k", test)):
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{gz}", images)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{gz}", labels)
    pools = load_digits(tmp_path)
    np.testing.assert_array_equal(pools["test"].images, test[0])  # the whole t10k file
    assert len(pools["train"]) == 700 and len(pools["val"]) == 100  # train:val = 0.7:0.1 of the train file
    assert not set(pools["train"].file_indices) & set(pools["val"].file_indices)
    np.testing.assert_array_equal(pools["val"].images, train[0][pools["val"].file_indices])


def test_torchvision_layout(tmp_path, write_idx, tiny_digits):
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for prefix, seed in (("train", 1), ("t10k", 2)):
        images, labels = tiny_digits(400, seed=seed)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", labels)
    assert len(load_digits(tmp_path)["test"]) == 400


def test_directory_errors(tmp_path, write_idx, tiny_digits):
    with pytest.raises(FoveateError, match="no MNIST IDX files"):
        load_digits(tmp_path)
    with pytest.raises(FoveateError, match="not a directory"):
        load_digits(tmp_path / "missing")
    write_idx(tmp_path / "digits-images-idx3-ubyte.gz", tiny_digits(20)[0])
    with pytest.raises(FoveateError, match="not digits-labels-idx1-ubyte"):
        load_digits(tmp_path)


def test_digit_pool_class_indices():
    labels = np.array([3, 1, 3, 0, 1, 3])
    pool = DigitPool(np.zeros((6, 28, 28), np.uint8), labels, "test")
    np.testing.assert_array_equal(pool.indices_of(3), [0, 2, 5])
    np.testing.assert_array_equal(pool.indices_not(3), [1, 3, 4])
    assert pool.indices_of(3) is pool.indices_of(3) and pool.indices_not(3) is pool.indices_not(3)
    assert len(pool) == 6 and pool.labels.dtype == np.int64
    with pytest.raises(FoveateError, match="labels must be in 0..9"):
        DigitPool(np.zeros((1, 28, 28), np.uint8), np.array([10]), "bad")
    with pytest.raises(FoveateError, match=r"\(N, 28, 28\) uint8"):
        DigitPool(np.zeros((1, 28, 28), np.float32), np.array([1]), "bad")


def test_real_digits_load_into_disjoint_pools(real_pools):
    assert set(real_pools) == {"train", "val", "test"}
    for pool in real_pools.values():
        assert pool.images.shape[1:] == (28, 28) and pool.images.dtype == np.uint8
        assert not pool.missing_classes()
    if "t10k" in real_pools["test"].source:  # FOVEATE_MNIST_DIR points at the standard files
        pairs = [("train", "val")]
    else:  # one file cut three ways: no digit of the file may be in two pools
        pairs = [("train", "val"), ("train", "test"), ("val", "test")]
        assert sum(len(p) for p in real_pools.values()) == 8000
    for a, b in pairs:
        assert not set(real_pools[a].file_indices.tolist()) & set(real_pools[b].file_indices.tolist())


def test_real_digits_are_the_shared_file(real_mnist_dir, real_pools):
    path = real_mnist_dir / "digits-images-idx3-ubyte.gz"
    if not path.is_file():
        pytest.skip("FOVEATE_MNIST_DIR is not the shared digits set")
    file_images = np.frombuffer(gzip.decompress(path.read_bytes()), np.uint8, offset=16).reshape(-1, 28, 28)
    for pool in real_pools.values():
        np.testing.assert_array_equal(pool.images, file_images[pool.file_indices])


def test_builtin_digits(builtin_pools):
    assert sum(len(p) for p in builtin_pools.values()) == 1797
    for pool in builtin_pools.values():
        assert not pool.missing_classes()
        assert pool.images.dtype == np.uint8 and pool.images.shape[1:] == (28, 28)
        assert pool.images[:, :4].max() == 0 and pool.images[:, :, 24:].max() == 0  # 20x20 box, centred
    assert builtin_pools["train"].images.max() == 255

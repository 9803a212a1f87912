"""MNIST digits for Megapixel MNIST: IDX files in, three disjoint digit pools out.

A test canvas must never reuse a training digit, so every digit source becomes disjoint
"train", "val" and "test" pools. With the standard MNIST files the original protocol holds
(train and val pools from the train file, test pool from the t10k file); any single file set is
split by a seeded permutation. Every pool holds every class, because each canvas needs
three digits of its target class and two of other classes.
"""
from __future__ import annotations

import gzip
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import FoveateError

IMAGES_MAGIC = 2051  # 0x00000803: unsigned bytes, 3 dims
LABELS_MAGIC = 2049  # 0x00000801: unsigned bytes, 1 dim
DIGIT_SIZE = 28
NUM_CLASSES = 10
POOL_NAMES = ("train", "val", "test")
SHARED_FILES = ("digits-images-idx3-ubyte", "digits-labels-idx1-ubyte")
TRAIN_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte")
TEST_FILES = ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")

Source = str | Path | Sequence[str | Path] | None


def read_idx(path: str | Path) -> np.ndarray:
    """Read an MNIST IDX file (gzip or raw): (N, rows, cols) uint8 images or (N,) uint8 labels.

    The header is checked against the file length so a truncated download fails loudly
    instead of producing a short or garbled pool. The result is a read-only view.
    """
    path = Path(path)
    raw = _read_bytes(path)
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        raw = _gunzip(path, raw)
    if len(raw) < 4:
        raise FoveateError(f"{path}: too short for an IDX header ({len(raw)} bytes)")
    magic = int.from_bytes(raw[:4], "big")
    if magic not in (IMAGES_MAGIC, LABELS_MAGIC):
        raise FoveateError(f"{path}: not an MNIST IDX file (magic {magic}, expected "
                           f"{IMAGES_MAGIC} for images or {LABELS_MAGIC} for labels)")
    ndim = raw[3]
    offset = 4 + 4 * ndim
    if len(raw) < offset:
        raise FoveateError(f"{path}: truncated IDX header ({len(raw)} of {offset} bytes)")
    dims = tuple(int.from_bytes(raw[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim))
    size = math.prod(dims)
    have = len(raw) - offset
    if have < size:
        raise FoveateError(f"{path}: truncated: header promises shape {dims} ({size} bytes) "
                           f"but only {have} bytes follow")
    if have > size:
        raise FoveateError(f"{path}: {have - size} unexpected bytes after the data of shape {dims}")
    return np.frombuffer(raw, dtype=np.uint8, count=size, offset=offset).reshape(dims)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise FoveateError(f"{path}: no such file") from None
    except OSError as e:
        raise FoveateError(f"{path}: cannot read ({e.strerror or e})") from None


def _gunzip(path: Path, raw: bytes) -> bytes:
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise FoveateError(f"{path}: corrupt or truncated gzip data ({e})") from None


@dataclass(eq=False)
class DigitPool:
    """Digits a split may draw from, with per-class index lists cached for fast sampling."""

    images: np.ndarray  # (N, 28, 28) uint8
    labels: np.ndarray  # (N,) int64, 0..9
    source: str  # where the digits came from, for provenance in configs and reports
    file_indices: np.ndarray | None = None  # (N,) positions in the source file, to prove disjointness
    _of: dict[int, np.ndarray] = field(default_factory=dict, init=False, repr=False)
    _not: dict[int, np.ndarray] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        images, labels = np.asarray(self.images), np.asarray(self.labels)
        if images.dtype != np.uint8 or images.ndim != 3 or images.shape[1:] != (DIGIT_SIZE, DIGIT_SIZE):
            raise FoveateError(f"digit pool {self.source!r}: images must be (N, 28, 28) uint8, "
                               f"got {images.shape} {images.dtype}")
        if labels.shape != (len(images),):
            raise FoveateError(f"digit pool {self.source!r}: {len(images)} images but labels of shape {labels.shape}")
        if labels.size and (labels.min() < 0 or labels.max() >= NUM_CLASSES):
            raise FoveateError(f"digit pool {self.source!r}: labels must be in 0..9, "
                               f"got {labels.min()}..{labels.max()}")
        self.images, self.labels = images, labels.astype(np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def indices_of(self, c: int) -> np.ndarray:
        """(n_c,) indices of the digits of class c."""
        if c not in self._of:
            self._of[c] = np.flatnonzero(self.labels == c)
        return self._of[c]

    def indices_not(self, c: int) -> np.ndarray:
        """(N - n_c,) indices of the digits of every class but c."""
        if c not in self._not:
            self._not[c] = np.flatnonzero(self.labels != c)
        return self._not[c]

    def missing_classes(self) -> list[int]:
        return sorted(set(range(NUM_CLASSES)) - set(np.unique(self.labels).tolist()))


def load_digits(source: Source = None, *, fractions: Sequence[float] = (0.7, 0.1, 0.2),
                split_seed: int = 0) -> dict[str, DigitPool]:
    """Disjoint "train", "val" and "test" digit pools from `source`.

    source: None for the offline scikit-learn digits (upsampled to MNIST geometry); a directory
    holding `digits-*-idx?-ubyte.gz`, the standard `train-*`/`t10k-*` files (optionally gzipped)
    or torchvision's `MNIST/raw/`; or an (images_path, labels_path) pair.
    fractions: train/val/test shares used when one file set is split (sum <= 1; with train+t10k
    files only the train:val ratio is used and the whole t10k file is the test pool).
    """
    fractions = _check_fractions(fractions)
    if not isinstance(split_seed, int) or isinstance(split_seed, bool) or split_seed < 0:
        raise FoveateError(f"split_seed must be an integer >= 0, got {split_seed!r}")
    if source is None:
        images, labels = _builtin_digits()
        return _split_one(images, labels, "scikit-learn digits (8x8 upsampled to 20x20 in 28x28)",
                          fractions, split_seed)
    if isinstance(source, (str, Path)):
        return _load_dir(Path(source), fractions, split_seed)
    if len(source) != 2:
        raise FoveateError(f"digit source {source!r}: expected a directory or an (images, labels) pair of IDX files")
    images, labels = _read_pair(Path(source[0]), Path(source[1]))
    return _split_one(images, labels, str(source[0]), fractions, split_seed)


def _check_fractions(fractions: Sequence[float]) -> tuple[float, float, float]:
    try:
        f = tuple(float(x) for x in fractions)
    except (TypeError, ValueError):
        raise FoveateError(f"pool fractions {fractions!r}: expected three numbers (train, val, test)") from None
    if len(f) != 3 or not all(math.isfinite(x) and x > 0 for x in f) or sum(f) > 1 + 1e-9:
        raise FoveateError(f"pool fractions {fractions!r}: need three positive shares "
                           "(train, val, test) summing to <= 1")
    return f  # type: ignore[return-value]


def _load_dir(root: Path, fractions: tuple[float, float, float], split_seed: int) -> dict[str, DigitPool]:
    if not root.is_dir():
        raise FoveateError(f"{root}: digit source is not a directory (expected a directory "
                           "or an (images, labels) pair of IDX files)")
    train, test, shared = (_find_pair(root, names) for names in (TRAIN_FILES, TEST_FILES, SHARED_FILES))
    if train and test:
        return _split_protocol(_read_pair(*train), _read_pair(*test), train[0], test[0], fractions, split_seed)
    for pair in (shared, train, test):
        if pair:
            return _split_one(*_read_pair(*pair), str(pair[0]), fractions, split_seed)
    if (root / "MNIST" / "raw").is_dir():
        return _load_dir(root / "MNIST" / "raw", fractions, split_seed)
    raise FoveateError(f"{root}: no MNIST IDX files (expected {SHARED_FILES[0]}.gz + {SHARED_FILES[1]}.gz, "
                       "train-/t10k-images-idx3-ubyte[.gz] + labels, or MNIST/raw/)")


def _find_pair(root: Path, stems: tuple[str, str]) -> tuple[Path, Path] | None:
    """The (images, labels) files for these stems, raw or .gz; None if neither exists."""
    found = [next((root / n for n in (s + ".gz", s) if (root / n).is_file()), None) for s in stems]
    if found[0] is None and found[1] is None:
        return None
    if found[0] is None or found[1] is None:
        have, missing = (found[1], stems[0]) if found[0] is None else (found[0], stems[1])
        raise FoveateError(f"{root}: found {have.name} but not {missing}[.gz] next to it")
    return found[0], found[1]


def _read_pair(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.shape[1:] != (DIGIT_SIZE, DIGIT_SIZE):
        raise FoveateError(f"{images_path}: expected 28x28 images (magic {IMAGES_MAGIC}), got shape {images.shape}")
    if labels.ndim != 1:
        raise FoveateError(f"{labels_path}: expected a label file (magic {LABELS_MAGIC}), got shape {labels.shape}")
    if len(images) != len(labels):
        raise FoveateError(f"{labels_path}: {len(labels)} labels for {len(images)} images in {images_path.name}")
    if labels.size and labels.max() >= NUM_CLASSES:
        raise FoveateError(f"{labels_path}: labels must be 0..9, found {labels.max()}")
    return images, labels


def _split_one(images: np.ndarray, labels: np.ndarray, origin: str,
               fractions: tuple[float, float, float], split_seed: int) -> dict[str, DigitPool]:
    """Cut one file set into three disjoint pools after a seeded permutation."""
    n = len(labels)
    perm = np.random.default_rng(split_seed).permutation(n)
    bounds = np.round(np.cumsum((0.0,) + fractions) * n).astype(int)  # (4,)
    note = f"of {n} digits from {origin} (fractions {'/'.join(f'{f:g}' for f in fractions)}, split_seed {split_seed})"
    return {name: _pool(name, images, labels, np.sort(perm[a:b]), note)
            for name, a, b in zip(POOL_NAMES, bounds[:-1], bounds[1:])}


def _split_protocol(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                    train_path: Path, test_path: Path, fractions: tuple[float, float, float],
                    split_seed: int) -> dict[str, DigitPool]:
    """Original protocol: train/val pools from MNIST-train (train:val ratio), test pool = MNIST-test."""
    n = len(train[1])
    perm = np.random.default_rng(split_seed).permutation(n)
    cut = round(n * fractions[0] / (fractions[0] + fractions[1]))
    note = f"of {n} digits from {train_path} (train:val {fractions[0]:g}:{fractions[1]:g}, split_seed {split_seed})"
    return {"train": _pool("train", *train, np.sort(perm[:cut]), note),
            "val": _pool("val", *train, np.sort(perm[cut:]), note),
            "test": _pool("test", *test, np.arange(len(test[1])), f"of {len(test[1])} digits from {test_path}")}


def _pool(name: str, images: np.ndarray, labels: np.ndarray, idx: np.ndarray, note: str) -> DigitPool:
    pool = DigitPool(images[idx], labels[idx], f"{name} pool: {len(idx)} {note}", file_indices=idx)
    if missing := pool.missing_classes():
        raise FoveateError(f"{pool.source}: lacks digit class(es) {missing}; every pool needs all of 0-9 "
                           "(use more digits or larger fractions)")
    return pool


def _builtin_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 1797 bundled 8x8 digits in MNIST geometry: (N, 28, 28) uint8, (N,) labels.

    Offline and tiny, so examples and CI run without any download. Each digit is upsampled
    (antialiased bilinear) to a 20x20 box centred in a zero 28x28 frame, as MNIST digits are.
    """
    import torch
    import torch.nn.functional as F
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    small = torch.from_numpy(bunch.images.astype(np.float32))[:, None]  # (N, 1, 8, 8), values 0..16
    box = F.interpolate(small, size=(20, 20), mode="bilinear", align_corners=False, antialias=True)
    box = (box[:, 0].numpy() * (255 / 16)).round().clip(0, 255).astype(np.uint8)  # (N, 20, 20)
    images = np.zeros((len(box), DIGIT_SIZE, DIGIT_SIZE), np.uint8)
    images[:, 4:24, 4:24] = box
    return images, bunch.target.astype(np.int64)

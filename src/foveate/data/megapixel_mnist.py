"""Megapixel MNIST: five native-size digits and scribble noise on a huge, mostly empty canvas.

A re-implementation of the Attention Sampling generator (and its IPS variant), with one change
of design: every canvas is a function of (seed, split, index) alone. Each image has its own
NumPy stream `default_rng([seed, split_id, 1, index])` and each split its noise patterns from
`default_rng([seed, split_id, 0])`, so a Dataset renders any canvas lazily, in any order, in
any worker. Profiles select the reference quirks: "ats" keeps them all, "ips" is the IPS variant
(noise pasted first, digits intact), "fixed" mirrors noise vertically as intended and rounds
instead of truncating to uint8.
"""
from __future__ import annotations

import csv
import io
import json
import operator
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import Dataset

from ..errors import FoveateError
from .mnist import DIGIT_SIZE, NUM_CLASSES, DigitPool, load_digits

PROFILES = ("ats", "ips", "fixed")
LABELS = ("majority", "max", "top", "multi")
SPLIT_IDS = {"train": 0, "val": 1, "test": 2}
NOISE_MARGIN = 28  # noise corners start 28 px in from the top/left edge (quirk Q3)
BLOCKED = 2 * DIGIT_SIZE - 1  # corners closer than 28 px on both axes overlap: 55 per axis


def _is_int(x: object) -> bool:
    return isinstance(x, (int, np.integer)) and not isinstance(x, bool)


@dataclass(frozen=True)
class MegapixelConfig:
    """What a Megapixel MNIST split looks like; record it (with the digit source) with every result."""

    canvas_size: int | tuple[int, int] = 1500  # side, or (H, W)
    n_target: int = 3  # digits of the target class
    n_other: int = 2  # digits of other classes (fewer than n_target: the majority is strict)
    n_noise: int = 50  # noise patches per canvas
    n_patterns: int = 50  # distinct noise patterns per split ("ips": must equal n_noise)
    profile: str = "ats"  # "ats" | "ips" | "fixed"
    label: str = "majority"  # the Dataset target: "majority" | "max" | "top" | "multi"
    lowres_scale: float = 0.12  # scale of the optional rendered low-resolution view
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.canvas_size, (list, tuple)):
            object.__setattr__(self, "canvas_size", tuple(self.canvas_size))
        self._check_counts()
        self._check_canvas()
        if self.profile not in PROFILES:
            raise FoveateError(f"profile {self.profile!r} unknown; choose one of {', '.join(PROFILES)}")
        if self.label not in LABELS:
            raise FoveateError(f"label {self.label!r} unknown; choose one of {', '.join(LABELS)}")
        if self.profile == "ips" and self.n_patterns != self.n_noise:
            raise FoveateError(f"profile 'ips' uses one count for patterns and patches: n_patterns "
                               f"({self.n_patterns}) must equal n_noise ({self.n_noise})")
        s = self.lowres_scale
        if not isinstance(s, (int, float)) or isinstance(s, bool) or not 0 < s <= 1 or round(DIGIT_SIZE * s) < 1:
            raise FoveateError(f"lowres_scale must be in [1/56, 1] so a digit covers at least one "
                               f"low-resolution pixel, got {s!r}")
        if not _is_int(self.seed) or self.seed < 0:
            raise FoveateError(f"seed must be an integer >= 0 (it seeds NumPy streams), got {self.seed!r}")

    def _check_counts(self) -> None:
        for name in ("n_target", "n_other", "n_noise", "n_patterns"):
            value = getattr(self, name)
            if not _is_int(value) or value < 0:
                raise FoveateError(f"{name} must be an integer >= 0, got {value!r}")
        if not 0 <= self.n_other < self.n_target:
            raise FoveateError(f"n_target ({self.n_target}) must exceed n_other ({self.n_other}) "
                               "so the target class is a strict majority")
        if self.n_noise > 0 and self.n_patterns < 1:
            raise FoveateError(f"n_patterns must be >= 1 when n_noise > 0, got {self.n_patterns}")

    def _check_canvas(self) -> None:
        size = self.canvas_size
        hw = (size, size) if _is_int(size) else size
        if not (isinstance(hw, tuple) and len(hw) == 2 and all(_is_int(v) for v in hw)):
            raise FoveateError(f"canvas_size must be an int or (H, W) ints, got {size!r}")
        h, w = hw
        # Side >= 57 keeps the noise-corner range [28, S-29] non-empty; the area bound guarantees
        # that n-1 placed digits can never block every corner, so rejection sampling terminates.
        need = (self.n_digits - 1) * BLOCKED ** 2
        if min(h, w) < 2 * NOISE_MARGIN + 1 or (h - DIGIT_SIZE + 1) * (w - DIGIT_SIZE + 1) <= need:
            raise FoveateError(f"canvas_size {h}x{w} too small for {self.n_digits} non-overlapping digits: "
                               f"need sides >= {2 * NOISE_MARGIN + 1} and (H-27)*(W-27) > {need}")

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of the canvas."""
        s = self.canvas_size
        return (s, s) if _is_int(s) else s  # type: ignore[return-value]

    @property
    def n_digits(self) -> int:
        return self.n_target + self.n_other

    @property
    def lowres_shape(self) -> tuple[int, int]:
        """(h, w) of the low-resolution view: int(H * scale), as the reference truncates."""
        h, w = self.shape
        return int(h * self.lowres_scale), int(w * self.lowres_scale)


@dataclass(frozen=True)
class NoisePatterns:
    """A split's scribble patterns and the two line segments each one is made of."""

    patterns: np.ndarray  # (P, 28, 28) float32: lit pixels in [0.8, 1.0), others 0
    segments: np.ndarray  # (P, 2, 28, 28) bool: A_i and the shuffled, mirrored B_i


def make_noise_patterns(rng: np.random.Generator, n: int, flip_rows: bool) -> NoisePatterns:
    """Two straight segments per pattern from the top edge, with per-pixel intensities.

    flip_rows=False keeps quirk Q2: the reference's second "flip" mirrors columns again, so no
    pattern is ever flipped vertically ("ats", "ips"); True flips rows as intended ("fixed").
    """
    slopes = np.tan(rng.random(n) * np.pi / 2.5)  # (P,): angles in [0, 72) degrees
    length = 27.49 / np.maximum(slopes, 1.0)  # min(27.49, 27.49 / m), no division by zero
    steps = np.linspace(0.0, length, 2 * DIGIT_SIZE)  # (56, P) row coordinates
    rows, cols = np.round(steps).astype(int), np.round(slopes * steps).astype(int)
    a = np.zeros((n, DIGIT_SIZE, DIGIT_SIZE), bool)
    a[np.arange(n), rows, cols] = True
    b = a[rng.permutation(n)]
    flip_x, flip_y = rng.random(n) < 0.33, rng.random(n) < 0.33
    b[flip_x] = b[flip_x][:, :, ::-1]
    b[flip_y] = b[flip_y][:, ::-1, :] if flip_rows else b[flip_y][:, :, ::-1]
    intensity = rng.random((n, DIGIT_SIZE, DIGIT_SIZE)) * 0.2 + 0.8
    patterns = ((a | b) * intensity).astype(np.float32)
    return NoisePatterns(patterns, np.stack([a, b], axis=1))


def to_uint8(values: np.ndarray, truncate: bool) -> np.ndarray:
    """uint8(255 * values): truncating like the reference (Q5) or rounding ("fixed")."""
    scaled = values * 255
    return (scaled if truncate else np.rint(scaled)).astype(np.uint8)


def place_non_overlapping(rng: np.random.Generator, n: int, shape: tuple[int, int]) -> np.ndarray:
    """(n, 2) (row, col) digit corners, round(U * (S - 28)) per axis, redrawn while a box overlaps."""
    span = np.array(shape) - DIGIT_SIZE
    corners = np.empty((n, 2), np.int64)
    k = 0
    while k < n:
        cand = np.round(rng.random(2) * span).astype(np.int64)
        if not (np.abs(corners[:k] - cand) < DIGIT_SIZE).all(axis=1).any():
            corners[k] = cand
            k += 1
    return corners


@dataclass(frozen=True)
class Layout:
    """Every random draw of one canvas; the pixels and the labels are functions of it."""

    target: int
    digit_ids: np.ndarray  # (D,) pool indices, stored order: n_target of the target class, then others
    digit_corners: np.ndarray  # (D, 2) (row, col)
    noise_corners: np.ndarray  # (K, 2) (row, col)
    noise_ids: np.ndarray  # (K,) pattern indices


@dataclass
class MegapixelSample:
    """One canvas with everything needed to check or visualise it."""

    index: int
    canvas: np.ndarray  # (H, W) uint8
    digit_boxes: np.ndarray  # (D, 4) int64 x1, y1, x2, y2
    digit_classes: np.ndarray  # (D,) int64
    digit_ids: np.ndarray  # (D,) indices into the digit pool
    noise_boxes: np.ndarray  # (K, 4) int64 x1, y1, x2, y2, in paste order
    noise_ids: np.ndarray  # (K,) pattern indices
    labels: dict[str, int | np.ndarray]  # majority, max, top: int; multi: (10,) float32 presence
    lowres: np.ndarray | None = None  # (h, w) uint8 rendered low-resolution view, if asked for


def corner_boxes(corners: np.ndarray) -> np.ndarray:
    """(n, 2) (row, col) corners -> (n, 4) x1, y1, x2, y2 boxes of 28x28 objects."""
    rows, cols = corners[:, 0], corners[:, 1]
    return np.stack([cols, rows, cols + DIGIT_SIZE, rows + DIGIT_SIZE], axis=1)


def task_labels(target: int, classes: np.ndarray, corners: np.ndarray) -> dict[str, int | np.ndarray]:
    """The four IPS tasks; "top" ties go to the first digit in stored order, as in the reference."""
    multi = np.zeros(NUM_CLASSES, np.float32)
    multi[classes] = 1.0
    return {"majority": int(target), "max": int(classes.max()),
            "top": int(classes[np.argmin(corners[:, 0])]), "multi": multi}


def downscale_matrix(size_in: int, size_out: int, sigma: float) -> np.ndarray:
    """(size_out, size_in) linear map along one axis: Gaussian prefilter (zero padding, 4-sigma
    kernel, as scipy) then bilinear sampling at output-pixel centres. This re-implements the
    reference's skimage `rescale(order=1, anti_aliasing=True, mode="constant")`, whose call no
    longer runs (quirk Q9); the caller picks sigma (the spec's (1/scale - 1) / 2)."""
    radius = int(4 * sigma + 0.5)
    taps = np.exp(-0.5 * (np.arange(-radius, radius + 1) / sigma) ** 2) if sigma > 0 else np.ones(1)
    taps /= taps.sum()
    offset = np.arange(size_in)[:, None] - np.arange(size_in)[None, :]  # (in, in)
    blur = np.where(np.abs(offset) <= radius, taps[np.clip(offset + radius, 0, 2 * radius)], 0.0)
    centres = (np.arange(size_out) + 0.5) * (size_in / size_out) - 0.5  # (out,)
    lo = np.floor(centres).astype(int)
    frac = centres - lo
    sample = np.zeros((size_out, size_in))
    for i0, w in ((lo, 1 - frac), (lo + 1, frac)):
        inside = (i0 >= 0) & (i0 < size_in)  # outside samples read the zero padding
        sample[np.flatnonzero(inside), i0[inside]] += w[inside]
    return sample @ blur


class MegapixelRenderer:
    """Renders canvas `index` of one split from (config.seed, split_id, index) alone."""

    def __init__(self, pool: DigitPool, config: MegapixelConfig, split_id: int) -> None:
        if missing := pool.missing_classes():
            raise FoveateError(f"digit pool {pool.source!r} lacks class(es) {missing}; "
                               "Megapixel MNIST needs every class 0-9")
        self.pool, self.config, self.split_id = pool, config, split_id
        self.truncate = config.profile != "fixed"  # Q5
        self.noise_first = config.profile == "ips"
        rng = np.random.default_rng([config.seed, split_id, 0])
        self.noise = make_noise_patterns(rng, config.n_patterns, flip_rows=config.profile == "fixed")
        self.noise_u8 = to_uint8(self.noise.patterns, self.truncate)  # (P, 28, 28)
        scale = config.lowres_scale
        self.lowres_side = round(DIGIT_SIZE * scale)
        self.downscale = downscale_matrix(DIGIT_SIZE, self.lowres_side, sigma=(1 / scale - 1) / 2)  # (s, 28)

    def layout(self, index: int) -> Layout:
        """The draws of canvas `index`, in the order of the spec's generator outline."""
        cfg, pool = self.config, self.pool
        rng = np.random.default_rng([cfg.seed, self.split_id, 1, index])
        target = int(rng.integers(NUM_CLASSES))
        ids = np.concatenate([rng.choice(pool.indices_of(target), cfg.n_target),
                              rng.choice(pool.indices_not(target), cfg.n_other)])
        corners = place_non_overlapping(rng, cfg.n_digits, cfg.shape)
        h, w = cfg.shape
        noise_corners = rng.integers((NOISE_MARGIN, NOISE_MARGIN), (h - NOISE_MARGIN, w - NOISE_MARGIN),
                                     size=(cfg.n_noise, 2))  # [28, S-29]: [28, 1471] for S=1500
        noise_ids = rng.integers(cfg.n_patterns, size=cfg.n_noise)
        return Layout(target, ids, corners, noise_corners, noise_ids)

    def digit_values(self, layout: Layout) -> np.ndarray:
        """(D, 28, 28) float32 digit values x/255, as the reference stores its images."""
        return self.pool.images[layout.digit_ids].astype(np.float32) / 255.0

    def render_canvas(self, layout: Layout) -> np.ndarray:
        """(H, W) uint8 canvas: whole 28x28 boxes assigned, zeros included, in the profile's order."""
        canvas = np.zeros(self.config.shape, np.uint8)
        digits = (layout.digit_corners, to_uint8(self.digit_values(layout), self.truncate))
        noise = (layout.noise_corners, self.noise_u8[layout.noise_ids])
        for corners, boxes in (noise, digits) if self.noise_first else (digits, noise):
            for (r, c), box in zip(corners.tolist(), boxes):
                canvas[r:r + DIGIT_SIZE, c:c + DIGIT_SIZE] = box
        return canvas

    def render_lowres(self, layout: Layout) -> np.ndarray:
        """(h, w) uint8 ATS low-resolution view (quirk Q4): each object downscaled on its own to
        round(28 * scale) px and pasted at floor(scale * corner), not a downsampling of the canvas."""
        scale, side, m = self.config.lowres_scale, self.lowres_side, self.downscale
        low = np.zeros(self.config.lowres_shape, np.uint8)
        digits = (layout.digit_corners, self.digit_values(layout))
        noise = (layout.noise_corners, self.noise.patterns[layout.noise_ids])
        for corners, values in (noise, digits) if self.noise_first else (digits, noise):
            blocks = to_uint8(m @ values @ m.T, self.truncate)  # (n, s, s)
            for (r, c), block in zip(np.floor(corners * scale).astype(int).tolist(), blocks):
                part = low[r:r + side, c:c + side]  # clipped at the bottom/right edge
                part[...] = block[:part.shape[0], :part.shape[1]]
        return low

    def sample(self, index: int, lowres: bool = False) -> MegapixelSample:
        layout = self.layout(index)
        classes = self.pool.labels[layout.digit_ids]
        return MegapixelSample(
            index=index,
            canvas=self.render_canvas(layout),
            digit_boxes=corner_boxes(layout.digit_corners),
            digit_classes=classes,
            digit_ids=layout.digit_ids,
            noise_boxes=corner_boxes(layout.noise_corners),
            noise_ids=layout.noise_ids,
            labels=task_labels(layout.target, classes, layout.digit_corners),
            lowres=self.render_lowres(layout) if lowres else None,
        )


def split_id(split: str) -> int:
    if split not in SPLIT_IDS:
        raise FoveateError(f"split {split!r} unknown; choose one of {', '.join(SPLIT_IDS)}")
    return SPLIT_IDS[split]


class MegapixelMNIST(Dataset):
    """n lazily rendered canvases of one split: (image (1, H, W) float32 in [0, 1], target).

    The target is an int64 scalar, or a float32 (10,) presence vector for label="multi".
    Nothing is rendered ahead: a 1500x1500 float canvas is 9 MB, a 5,000-image split 45 GB.
    """

    def __init__(self, pool: DigitPool, n: int, split: str = "train", config: MegapixelConfig | None = None) -> None:
        if not _is_int(n) or n < 0:
            raise FoveateError(f"number of canvases n must be an integer >= 0, got {n!r}")
        self.n, self.split = int(n), split
        self.config = config or MegapixelConfig()
        self.renderer = MegapixelRenderer(pool, self.config, split_id(split))

    def __len__(self) -> int:
        return self.n

    def _index(self, i: int) -> int:
        i = operator.index(i)
        if not -self.n <= i < self.n:
            raise IndexError(f"canvas {i} out of range for {self.n} canvases")
        return i % self.n

    def sample(self, i: int, lowres: bool = False) -> MegapixelSample:
        """Canvas i with its boxes, digit classes and all four labels (for tests and figures)."""
        return self.renderer.sample(self._index(i), lowres=lowres)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        s = self.renderer.sample(self._index(i))
        image = torch.from_numpy(s.canvas).to(torch.float32).div_(255.0).unsqueeze(0)  # (1, H, W)
        label = s.labels[self.config.label]
        target = torch.from_numpy(label) if self.config.label == "multi" else torch.tensor(label, dtype=torch.int64)
        return image, target


def write_megapixel_mnist(out_dir: str | Path, n: int, split: str = "test", pool: DigitPool | None = None,
                          config: MegapixelConfig | None = None) -> Path:
    """Write canvases 0..n-1 as `000000.png`... (8-bit grey) plus `labels.csv` and `parameters.json`.

    For tools that want files. Every file is written atomically, so an interrupted run never leaves
    a half-written PNG that looks valid. pool defaults to the built-in digits' pool of `split`.
    Returns the csv path.
    """
    if pool is None:
        split_id(split)  # validate before loading digits
        pool = load_digits()[split]  # pool names are the split names
    ds = MegapixelMNIST(pool, n, split, config)
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise FoveateError(f"{out}: cannot create output directory ({e.strerror or e})") from None
    width = max(6, len(str(max(n - 1, 0))))
    rows = []
    for i in range(n):
        s = ds.sample(i)
        name = f"{i:0{width}d}.png"
        buf = io.BytesIO()
        Image.fromarray(s.canvas).save(buf, format="PNG")  # (H, W) uint8 -> 8-bit grey
        _write_atomic(out / name, buf.getvalue())
        lab = s.labels
        rows.append([name, lab["majority"], lab["max"], lab["top"], "".join(str(int(v)) for v in lab["multi"])])
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["path", "label", "max", "top", "multi"])
    writer.writerows(rows)
    params = {"n": n, "split": split, "digits": pool.source, **asdict(ds.config)}
    _write_atomic(out / "parameters.json", (json.dumps(params, indent=2) + "\n").encode())
    _write_atomic(out / "labels.csv", text.getvalue().encode())
    return out / "labels.csv"


def _write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same directory, then rename it over `path`."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise FoveateError(f"{path}: cannot write ({e.strerror or e})") from None

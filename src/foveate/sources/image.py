"""Read one image file into a float tensor, refusing anything that would be silently wrong.

Every pixel mode Pillow can produce is mapped explicitly (see `load_image`); anything a user
can get wrong (missing, empty, truncated, not an image, transparent, out-of-range values, too
large) raises a one-line `FoveateError` that starts with the file's path.
"""
from __future__ import annotations

import os
import threading
import warnings
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, UnidentifiedImageError
from torch import Tensor

from ..errors import FoveateError

# plain formats, TIFF (tiled/pyramidal read lazily) and the OpenSlide formats (with the optional extra)
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff", ".btf", ".tf8", ".bmp", ".webp",
                              ".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif"})
LARGE_IMAGE_PIXELS = 2**34  # the per-call bomb limit with allow_large=True (16 Gpixel)
_LUMA = (0.299, 0.587, 0.114)  # ITU-R 601, the weights of Pillow's "L"
_ALPHA_MODES = {"LA": 1, "La": 1, "RGBA": 3, "RGBa": 3}  # mode -> colour bands before alpha
_AS_RGB = {"P", "PA", "CMYK", "YCbCr", "LAB", "HSV", "RGBX"}
_UINT16_MODES = {"I;16", "I;16L", "I;16B", "I;16N"}

# Pillow's guards (bomb limit, strict truncation, the warnings filter) are process globals.
# One lock keeps a call's settings from leaking into another thread's load; decoding is thus
# serialised within a process (DataLoader workers are processes, so they still run in parallel).
_PILLOW_LOCK = threading.Lock()


def _error(path: Path, problem: str) -> FoveateError:
    return FoveateError(f"{path}: {problem}")


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


@contextmanager
def _strict_pillow(allow_large: bool) -> Iterator[None]:
    """Bomb warnings are errors; truncated files fail even if someone set
    LOAD_TRUNCATED_IMAGES; allow_large raises (never removes) the pixel limit. All restored."""
    with _PILLOW_LOCK, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        saved = Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES
        if allow_large and saved[0] is not None:
            Image.MAX_IMAGE_PIXELS = max(saved[0], LARGE_IMAGE_PIXELS)
        ImageFile.LOAD_TRUNCATED_IMAGES = False
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES = saved


def _decode(path: Path, allow_large: bool) -> Image.Image:
    """Open and fully decode `path` (lazy decoding would defer corruption errors to first use)."""
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise _error(path, "no such file") from None
    except IsADirectoryError:
        raise _error(path, "is a directory, not an image file") from None
    except OSError as e:
        raise _error(path, f"cannot read: {e.strerror or e}") from None
    with f:
        if os.fstat(f.fileno()).st_size == 0:
            raise _error(path, "is empty (0 bytes)")
        try:
            with _strict_pillow(allow_large):
                img = Image.open(f)
                img.load()
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            if allow_large:
                raise _error(path, f"too large even with allow_large=True ({_one_line(e)})") from None
            raise _error(path, f"{_one_line(e)} If you trust this file, load it with "
                               f"allow_large=True (up to {LARGE_IMAGE_PIXELS:,} pixels)") from None
        except UnidentifiedImageError:
            raise _error(path, "not an image Pillow can read (unknown format, corrupt header, "
                               "zero size or an unsupported variant such as more than 4 channels)") from None
        except MemoryError:
            raise _error(path, "too large to decode in the available memory") from None
        except Exception as e:  # decoders raise OSError, SyntaxError, ValueError, EOFError, struct.error...
            raise _error(path, f"truncated or corrupt image data ({_one_line(e)})") from None
    return img


def _check_opaque(path: Path, transparent: bool) -> None:
    if transparent:
        raise _error(path, "has transparency; flatten it onto a background first")


def _pixels(img: Image.Image, path: Path) -> tuple[np.ndarray, float]:
    """The pixel array, (H, W) or (H, W, 3), and the value that means full intensity."""
    if img.mode in _AS_RGB:
        # Palette indices are not intensities and the other spaces are not RGB: convert. A palette
        # with transparency (tRNS index or alpha) becomes RGBA so the alpha check below sees it.
        palette = img.mode in ("P", "PA")
        img = img.convert("RGBA" if palette and img.has_transparency_data else "RGB")
    elif img.mode == "1":
        img = img.convert("L")  # exactly 0 / 255; Pillow's colour key for "1" is also 0 / 255
    mode = img.mode
    if mode in _ALPHA_MODES:
        arr = np.asarray(img)  # (H, W, bands)
        _check_opaque(path, bool(arr[..., -1].min() < 255))  # opaque: premultiplied == straight
        bands = _ALPHA_MODES[mode]
        return (arr[..., 0] if bands == 1 else arr[..., :bands]), 255.0
    if mode in ("L", "RGB"):
        arr, white = np.asarray(img), 255.0
    elif mode in _UINT16_MODES:
        arr, white = np.asarray(img), 65535.0
    elif mode == "I":
        arr = np.asarray(img)
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi > 65535:
            raise _error(path, f"32-bit integer pixels range over {lo}..{hi}, outside 0..65535; "
                               "cannot tell what white is (save it as 8- or 16-bit)")
        white = 65535.0
    elif mode == "F":
        arr = np.asarray(img)
        lo, hi = float(arr.min()), float(arr.max())  # NaN anywhere makes both NaN
        if np.isnan(lo):
            raise _error(path, "floating-point pixels include NaN")
        if not (0.0 <= lo and hi <= 1.0):
            raise _error(path, f"floating-point pixels range over [{lo:g}, {hi:g}], outside [0, 1]; "
                               "rescale it first")
        white = 1.0
    else:
        raise _error(path, f"unsupported pixel mode {mode!r}")
    key = img.info.get("transparency")  # a colour key (PNG tRNS) on a non-palette image
    if key is not None:
        hit = arr == np.asarray(key, dtype=np.int64)  # (H, W) or (H, W, 3)
        _check_opaque(path, bool((hit.all(axis=-1) if arr.ndim == 3 else hit).any()))
    return arr, white


def _to_tensor(arr: np.ndarray, white: float, channels: int) -> Tensor:
    """(H, W) or (H, W, 3) pixels -> contiguous float32 (channels, H, W) in [0, 1], writing each
    output plane once (full-size images are large: no HWC float intermediate)."""
    h, w = arr.shape[:2]
    out = np.empty((channels, h, w), dtype=np.float32)
    scale = np.float32(white)
    if arr.ndim == 2:
        np.divide(arr, scale, out=out[0])
        out[1:] = out[0]
    elif channels == 3:
        for c in range(3):
            np.divide(arr[..., c], scale, out=out[c])
    else:
        y = out[0]
        np.multiply(arr[..., 0], np.float32(_LUMA[0]), out=y)
        for c in (1, 2):
            y += arr[..., c] * np.float32(_LUMA[c])
        y /= scale
        np.clip(y, 0.0, 1.0, out=y)  # the weights sum to 1 only up to float rounding
    return torch.from_numpy(out)


def load_image(path: str | os.PathLike[str], channels: int, *, allow_large: bool = False) -> Tensor:
    """Load an image file as a float32 tensor (channels, H, W) with values in [0, 1].

    channels: 1 (colour becomes ITU-R 601 luminance, Pillow's "L" weights, computed in float)
    or 3 (grayscale is replicated). Modes:
      "1", "L", "RGB" (and JPEG, BMP, WebP...): divided by their maximum (1 or 255).
      "P"/"PA": looked up through the palette; palette transparency counts as alpha.
      "LA"/"RGBA" (and premultiplied "La"/"RGBa") or a colour key (PNG tRNS): fully opaque
          images drop the alpha; any transparent pixel is an error (no guessed background).
      "I;16*" (16-bit PNG/TIFF/PGM) and "I" with values in 0..65535: divided by 65535.
          Pillow reads 48/64-bit RGB(A) PNGs at 8 bits per channel.
      "F": used as is if within [0, 1], else an error.
      "CMYK", "YCbCr", "LAB", "HSV", "RGBX": converted to RGB by Pillow (no ICC management).
    Multi-page files (TIFF, GIF...): the first page only. EXIF orientation is not applied (pixels
    as stored, as torchvision and Pillow do by default).

    Pillow's decompression-bomb guard stays on: an image above Image.MAX_IMAGE_PIXELS is an
    error unless allow_large=True, which raises the limit to LARGE_IMAGE_PIXELS for this call.
    Raises FoveateError (one line, starting with the path) for every problem with the file.
    """
    path = Path(path)
    if channels not in (1, 3):
        raise _error(path, f"channels must be 1 or 3, got {channels}")
    return pil_to_tensor(_decode(path, allow_large), channels, path)


def pil_to_tensor(img: Image.Image, channels: int, name: str | os.PathLike[str] = "<image>") -> Tensor:
    """A decoded Pillow image -> float32 (channels, H, W) in [0, 1], with the mode handling of
    `load_image` (16-bit is scaled, not clipped; transparency is an error). `name` labels errors."""
    path = Path(name)
    if channels not in (1, 3):
        raise _error(path, f"channels must be 1 or 3, got {channels}")
    try:
        arr, white = _pixels(img, path)
        return _to_tensor(arr, white, channels)
    except MemoryError:
        raise _error(path, f"{img.width}x{img.height} pixels do not fit in the available memory") from None


def image_files(inputs: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand directories into their image files; keep other inputs as given.

    A directory contributes its files (not subdirectories) whose extension is in
    IMAGE_EXTENSIONS (any case), sorted by name, skipping hidden files (editor and macOS
    "._" droppings). An explicit path is kept even if it does not exist, so `load_image` reports
    it by name; a directory with no image files is an error (it is almost surely the wrong one).
    """
    files: list[Path] = []
    for item in map(Path, inputs):
        if not item.is_dir():
            files.append(item)
            continue
        found = sorted(p for p in item.iterdir()
                       if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file())
        if not found:
            raise FoveateError(f"{item}: directory has no image files "
                               f"({', '.join(sorted(e.lstrip('.') for e in IMAGE_EXTENSIONS))})")
        files.extend(found)
    return files

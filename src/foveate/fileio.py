"""Atomic file writes: a result file is either its old content or its complete new content.

A run can be killed at any moment (Ctrl-C, OOM, a preempted node). Writing straight to the
destination would leave a half-written file that looks valid by name; instead every writer here
writes a temporary file in the destination's directory (same filesystem, so the rename is
atomic), flushes and fsyncs it, then `os.replace`s it over the destination. On any exception
the temporary file is removed and the destination is untouched.

OS errors of the write itself become a one-line `FoveateError` naming the destination.
"""
from __future__ import annotations

import os
import stat
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO, Any

from .errors import FoveateError

PathLike = str | os.PathLike[str]


def _write_error(path: Path, e: OSError) -> FoveateError:
    return FoveateError(f"{path}: cannot write: {e.strerror or e}")


def ensure_parent(path: PathLike) -> Path:
    """Create the directory `path` will live in (so callers can name new output folders)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise _write_error(path, e) from None
    return path


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself survive a power cut. Best effort: Windows cannot open a
    directory, and some network filesystems refuse to fsync one; the data is in place anyway."""
    with suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextmanager
def atomic_open(path: PathLike, mode: str = "w", **kw: Any) -> Iterator[IO[Any]]:
    """Open a temporary file that replaces `path` only when the block finishes without error.

    mode is "w" (text, UTF-8 unless `encoding` is given) or "wb"; `kw` goes to `open`.
    A symlink at `path` is followed, so the link survives and its target is replaced.
    An existing file keeps its permission bits; a new one gets the usual umask-based ones.
    Exceptions raised inside the block propagate unchanged after the temp file is removed.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open mode must be 'w' or 'wb', got {mode!r}")
    if mode == "w":
        kw.setdefault("encoding", "utf-8")
    dest = Path(path)  # as the user named it, for messages
    target = ensure_parent(os.path.realpath(dest))
    tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")  # hidden: listings skip it
    try:
        # O_EXCL: never clobber anything; 0o666 lets the umask apply as for a normal new file.
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    except OSError as e:
        raise _write_error(dest, e) from None
    try:
        try:
            f = os.fdopen(fd, mode, **kw)
        except BaseException:
            os.close(fd)
            raise
        with f:
            yield f
            try:
                f.flush()
                os.fsync(f.fileno())
            except OSError as e:
                raise _write_error(dest, e) from None
        try:
            with suppress(FileNotFoundError):
                os.chmod(tmp, stat.S_IMODE(os.stat(target).st_mode))
            os.replace(tmp, target)
        except OSError as e:
            raise _write_error(dest, e) from None
    except BaseException:
        with suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_directory(target.parent)


def atomic_write_bytes(path: PathLike, data: bytes) -> None:
    """Replace `path` with `data` atomically."""
    with atomic_open(path, "wb") as f:
        try:
            f.write(data)
        except OSError as e:
            raise _write_error(Path(path), e) from None


def atomic_save_figure(fig: Any, path: PathLike, **savefig_kw: Any) -> None:
    """Save a matplotlib figure atomically. The format comes from `format=` or the suffix
    (the temporary file's name says nothing), defaulting to PNG when there is no suffix."""
    path = Path(path)
    fmt = (savefig_kw.pop("format", None) or path.suffix.lstrip(".") or "png").lower()
    if fmt not in fig.canvas.get_supported_filetypes():
        raise FoveateError(f"{path}: matplotlib cannot write {fmt!r} figures (use .png, .pdf or .svg)")
    with atomic_open(path, "wb") as f:
        try:
            fig.savefig(f, format=fmt, **savefig_kw)
        except OSError as e:
            raise _write_error(path, e) from None


def atomic_save_image(pil_image: Any, path: PathLike, format: str | None = None, **params: Any) -> None:
    """Save a PIL image atomically. The format comes from `format` or the suffix; `params` are
    Pillow's save options (e.g. quality=95)."""
    from PIL import Image

    path = Path(path)
    fmt = format or Image.registered_extensions().get(path.suffix.lower())
    if fmt is None:
        raise FoveateError(f"{path}: unknown image file extension {path.suffix!r}; pass format=")
    with atomic_open(path, "wb") as f:
        try:
            pil_image.save(f, format=fmt, **params)
        except (OSError, ValueError, KeyError) as e:  # e.g. "cannot write mode RGBA as JPEG"
            msg = e.strerror if isinstance(e, OSError) and e.strerror else " ".join(str(e).split())
            raise FoveateError(f"{path}: cannot save as {fmt}: {msg}") from None

"""Atomic writes: the destination holds its old content or the complete new one, never a part."""
from __future__ import annotations

import os
import stat

import numpy as np
import pytest
from matplotlib.figure import Figure
from PIL import Image

from foveate.errors import FoveateError
from foveate.fileio import (
    atomic_open,
    atomic_save_figure,
    atomic_save_image,
    atomic_write_bytes,
    ensure_parent,
)


def leftovers(directory) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


def test_write_bytes_creates_parents_and_overwrites(tmp_path):
    path = tmp_path / "a" / "b" / "data.bin"
    atomic_write_bytes(path, b"first")
    atomic_write_bytes(path, b"second")
    assert path.read_bytes() == b"second"
    assert leftovers(path.parent) == []


def test_failure_inside_keeps_previous_content(tmp_path):
    path = tmp_path / "results.csv"
    path.write_text("old,complete\n")
    with pytest.raises(RuntimeError, match="boom"), atomic_open(path) as f:
        f.write("new,half")
        raise RuntimeError("boom")
    assert path.read_text() == "old,complete\n"
    assert leftovers(tmp_path) == []
    with pytest.raises(KeyboardInterrupt):
        with atomic_open(tmp_path / "never.bin", "wb") as f:
            f.write(b"x")
            raise KeyboardInterrupt
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv"]


def test_text_is_utf8_and_modes_are_checked(tmp_path):
    path = tmp_path / "t.txt"
    with atomic_open(path) as f:
        f.write("größe ✓\n")
    assert path.read_bytes() == "größe ✓\n".encode()
    with pytest.raises(ValueError, match="mode"), atomic_open(path, "a"):
        pass


def test_permissions_kept_or_from_umask(tmp_path):
    existing = tmp_path / "shared.txt"
    existing.write_text("x")
    existing.chmod(0o640)
    atomic_write_bytes(existing, b"y")
    assert stat.S_IMODE(existing.stat().st_mode) == 0o640
    umask = os.umask(0)
    os.umask(umask)
    fresh = tmp_path / "fresh.txt"
    atomic_write_bytes(fresh, b"z")
    assert stat.S_IMODE(fresh.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0o600


def test_symlink_is_followed(tmp_path):
    target = tmp_path / "real.txt"
    target.write_text("old")
    link = tmp_path / "link.txt"
    link.symlink_to(target)
    atomic_write_bytes(link, b"new")
    assert link.is_symlink() and target.read_text() == "new"


def test_unwritable_destination_is_one_line_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    for path in (blocker / "out.txt", tmp_path):  # parent is a file; destination is a directory
        with pytest.raises(FoveateError) as info:
            atomic_write_bytes(path, b"x")
        assert str(path) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(FoveateError, match="cannot write"):
        ensure_parent(blocker / "sub" / "x.txt")
    assert leftovers(tmp_path) == []


def test_save_image(tmp_path):
    img = Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4))
    atomic_save_image(img, tmp_path / "x.png")
    assert np.array_equal(np.asarray(Image.open(tmp_path / "x.png")), np.asarray(img))
    atomic_save_image(img, tmp_path / "no-suffix", format="PNG")
    assert Image.open(tmp_path / "no-suffix").format == "PNG"
    with pytest.raises(FoveateError, match="unknown image file extension"):
        atomic_save_image(img, tmp_path / "x.nope")
    previous = (tmp_path / "x.png").read_bytes()
    with pytest.raises(FoveateError, match="x.jpg: cannot save as JPEG"):
        atomic_save_image(Image.new("RGBA", (2, 2)), tmp_path / "x.jpg")
    with pytest.raises(FoveateError):
        atomic_save_image(Image.new("RGBA", (2, 2)), tmp_path / "x.png", format="JPEG")
    assert (tmp_path / "x.png").read_bytes() == previous
    assert not (tmp_path / "x.jpg").exists() and leftovers(tmp_path) == []


def test_save_figure(tmp_path):
    fig = Figure(figsize=(2, 1), dpi=50)
    fig.add_subplot().plot([0, 1], [1, 0])
    atomic_save_figure(fig, tmp_path / "plot.png")
    assert Image.open(tmp_path / "plot.png").size == (100, 50)
    atomic_save_figure(fig, tmp_path / "plot.svg")
    assert (tmp_path / "plot.svg").read_text().lstrip().startswith("<?xml")
    with pytest.raises(FoveateError, match="plot.nope: matplotlib cannot write 'nope'"):
        atomic_save_figure(fig, tmp_path / "plot.nope")
    assert leftovers(tmp_path) == []

"""Gigapixel benchmark: classify a 100,000 x 100,000 px pyramidal TIFF while reading only what the model attends.

Builds (once) a Megapixel MNIST canvas blown up to SIDE x SIDE px as a tiled, zlib-compressed,
pyramidal BigTIFF, generated tile by tile (never a full array): canvas INDEX of the test split
(digits from ../shared/data/mnist via foveate.data) is rendered at its 1500-px training size and
each output pixel takes the value of its nearest canvas pixel, so the model sees at every scale
what it was trained on (a 28-px digit becomes ~1870 px) and the label is known. Then, for each
checkpoint, a fresh Python process runs `foveate.load(ckpt)` and the model on
`open_source(path)` and reports wall time, peak RSS (VmHWM), bytes read (/proc/self/io) and
tiles decoded. The file's pages are dropped from the page cache first (posix_fadvise), so
read_bytes counts real disk reads. A decoded 100,000^2 grayscale array would need 10 GB (uint8;
40 GB as the float32 tensor models take) before any network runs.

From the repository root (2 cores; others may be training: nice, one thread):

    . .venv/bin/activate
    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/gigapixel.py \\
        --checkpoint runs/bench_tnet/checkpoints/best.ckpt runs/bench3/ats/checkpoints/best.ckpt

Options: --side (default 100000), --out (default runs/gigapixel: the TIFF and results.md),
--index (test canvas), --tile, --memory-limit-gb (address-space cap of each model's process, so
a model that cannot fit fails instead of swapping the machine), --rebuild.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DIGITS = Path(os.environ.get("FOVEATE_MNIST_DIR", REPO.parent / "shared" / "data" / "mnist"))
CANVAS = 1500  # the training canvas side of the Megapixel MNIST checkpoints


class UpscaledCanvas:
    """A `foveate.sources.convert.PixelReader`-like view of a small canvas at SIDE x SIDE px:
    pixel (y, x) = canvas[y * h // SIDE, x * w // SIDE]. Rows are produced a band at a time."""

    def __init__(self, canvas: np.ndarray, side: int) -> None:
        self.canvas, self.height, self.width = canvas, side, side
        self.samples, self.dtype, self.decoded_whole = 1, canvas.dtype, False
        self.cols = (np.arange(side, dtype=np.int64) * canvas.shape[1]) // side  # (W,) source column per pixel

    def read_rows(self, y0: int, y1: int) -> np.ndarray:
        rows = (np.arange(y0, y1, dtype=np.int64) * self.canvas.shape[0]) // self.height
        band = self.canvas[rows]  # (y1 - y0, w): few distinct rows
        if not band.any():
            return np.zeros((y1 - y0, self.width), self.canvas.dtype)
        return band[:, self.cols]


def megapixel_canvas(index: int, digits: str | Path | None, size: int = CANVAS) -> tuple[np.ndarray, int]:
    """Test canvas `index` ((size, size) uint8) of Megapixel MNIST and its majority label."""
    from foveate.data import MegapixelConfig, load_digits
    from foveate.data.megapixel_mnist import MegapixelRenderer, split_id

    pool = load_digits(digits)["test"]
    renderer = MegapixelRenderer(pool, MegapixelConfig(canvas_size=size), split_id("test"))
    sample = renderer.sample(index)
    return sample.canvas, int(sample.labels["majority"])


def build_tiff(path: Path, side: int, canvas: np.ndarray, tile: int = 256, compression: str = "zlib") -> dict:
    """Write the SIDE x SIDE pyramid of `canvas` at `path`, tile by tile; returns its description."""
    from foveate.sources.convert import write_pyramid

    start = time.perf_counter()
    sizes = write_pyramid(path, UpscaledCanvas(canvas, side), tile=tile, compression=compression)
    return {"side": side, "levels": len(sizes), "tile": tile, "compression": compression,
            "bytes": path.stat().st_size, "seconds": time.perf_counter() - start}


def _proc_io() -> dict[str, int]:
    with open("/proc/self/io") as f:
        return {k: int(v) for k, v in (line.split(":") for line in f)}


def _vm(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))  # KiB


def child(spec: dict) -> dict:
    """In a fresh process: load the checkpoint, open the TIFF lazily, classify; report the costs."""
    if spec.get("memory_limit_gb"):
        limit = int(spec["memory_limit_gb"] * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    import torch

    import foveate
    from foveate.sources import open_source

    torch.set_num_threads(1)
    predictor = foveate.load(spec["checkpoint"])
    model = predictor.model
    peak_loading = _vm("VmHWM")
    with open("/proc/self/clear_refs", "w") as f:  # reset VmHWM to the current RSS: what open + forward add
        f.write("5")
    rss_loaded = _vm("VmRSS")
    io0, start = _proc_io(), time.perf_counter()
    src = open_source(spec["tiff"], model.in_chans)
    with torch.inference_mode():
        out = model(src)
    probs = out.probabilities()[0]
    seconds = time.perf_counter() - start
    io1 = _proc_io()
    peak = max(_vm("VmHWM"), peak_loading)
    added = _vm("VmHWM") - rss_loaded
    canvas = torch.from_numpy(np.load(spec["canvas"])).float().div(255)[None, None]  # the 1500-px original
    with torch.inference_mode():
        reference = model(canvas).probabilities()[0]
    return {"checkpoint": spec["checkpoint"], "model": type(model).__name__, "seconds": seconds,
            "peak_rss_mib": peak / 1024, "rss_after_load_mib": rss_loaded / 1024, "added_mib": added / 1024,
            "rchar": io1["rchar"] - io0["rchar"], "read_bytes": io1["read_bytes"] - io0["read_bytes"],
            "tiles_decoded": src.tiles_decoded, "bytes_decoded": src.bytes_decoded, "pixels_read": src.pixels_read,
            "prediction": int(probs.argmax()), "probability": float(probs.max()), "levels": len(src.level_sizes),
            "reference_prediction": int(reference.argmax()), "reference_probability": float(reference.max())}


def drop_from_page_cache(path: Path) -> None:
    """Evict this file's pages (only its own) so the next reads come from disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)


def measure(checkpoint: str, tiff: Path, canvas: Path, memory_limit_gb: float | None) -> dict:
    drop_from_page_cache(tiff)
    spec = {"checkpoint": str(checkpoint), "tiff": str(tiff), "canvas": str(canvas), "memory_limit_gb": memory_limit_gb}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH"))
                                                       if p)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, __file__, "--child", json.dumps(spec)], capture_output=True, text=True,
                          env=env, check=False)
    if proc.returncode != 0:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"checkpoint": str(checkpoint), "error": tail, "process_seconds": time.perf_counter() - start}
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    result["process_seconds"] = time.perf_counter() - start
    return result


def markdown(info: dict, rows: list[dict], label: int) -> str:
    side, mib = info["side"], 2**20
    header = (f"| model (checkpoint) | wall time s | peak RSS MiB | added by open + forward MiB | read from file MiB (rchar) | read from disk MiB "
              f"(read_bytes) | tiles decoded | decoded MiB | prediction (label {label}) | same model on the "
              f"{CANVAS}-px canvas in memory |")
    lines = [header, "|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]
    for r in rows:
        name = f"{r.get('model', 'failed')} (`{r['checkpoint']}`)"
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error']} | | | | | | | | |")
            continue
        lines.append(f"| {name} | {r['seconds']:.2f} | {r['peak_rss_mib']:.0f} | {r['added_mib']:.0f} | "
                     f"{r['rchar'] / mib:.2f} | "
                     f"{r['read_bytes'] / mib:.2f} | {r['tiles_decoded']} | {r['bytes_decoded'] / mib:.1f} | "
                     f"{r['prediction']} (p={r['probability']:.2f}) | {r['reference_prediction']} "
                     f"(p={r['reference_probability']:.2f}) |")
    notes = [
        "",
        (f"Image: {side:,} x {side:,} px grayscale ({side * side / 1e9:g} Gpx), {info['levels']} pyramid levels, "
         f"{info['tile']}-px {info['compression']} tiles, {info['bytes'] / mib:.1f} MiB on disk (built in "
         f"{info['seconds']:.0f} s, tile by tile). Decoded whole it would be {side * side / 1e9:g} GB as uint8, "
         f"{4 * side * side / 1e9:g} GB as the float32 tensor the models take."),
        ("Wall time: open_source + one forward (batch 1, 1 thread), after loading the checkpoint. Peak RSS: VmHWM "
         "of the whole fresh process (Python, torch, weights included); added: VmHWM reset after loading, its rise "
         "during open + forward. rchar: bytes the process read from files "
         "during open + forward; read_bytes: of those, read from the disk (the TIFF's pages were evicted from the "
         "page cache first). Tiles decoded / decoded MiB: tiles zarr decompressed and their bytes."),
    ]
    return "\n".join(lines + notes) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", nargs="+", default=[str(REPO / "runs/bench_tnet/checkpoints/best.ckpt")])
    p.add_argument("--side", type=int, default=100_000)
    p.add_argument("--out", default=str(REPO / "runs/gigapixel"))
    p.add_argument("--index", type=int, default=0, help="test canvas of Megapixel MNIST")
    p.add_argument("--digits", default=str(DEFAULT_DIGITS))
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--memory-limit-gb", type=float, default=8.0)
    p.add_argument("--rebuild", action="store_true")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return 0

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tiff = out / f"megapixel_mnist_{args.side}.tif"
    free = shutil.disk_usage(out).free
    print(f"[gigapixel] {free / 2**30:.0f} GiB free on {out}", file=sys.stderr)
    canvas, label = megapixel_canvas(args.index, args.digits if Path(args.digits).exists() else None)
    canvas_path = out / f"canvas_{args.index}.npy"
    np.save(canvas_path, canvas)
    info_path = tiff.with_suffix(".json")
    if args.rebuild or not tiff.exists() or not info_path.exists():
        if free < 5 * 2**30:
            print("[gigapixel] less than 5 GiB free: not building", file=sys.stderr)
            return 1
        print(f"[gigapixel] building {tiff} ({args.side:,} px, tile by tile)", file=sys.stderr, flush=True)
        info = build_tiff(tiff, args.side, canvas, args.tile)
        info_path.write_text(json.dumps(info))
    info = json.loads(info_path.read_text())
    rows = []
    for ckpt in args.checkpoint:
        print(f"[gigapixel] classifying with {ckpt}", file=sys.stderr, flush=True)
        rows.append(measure(ckpt, tiff, canvas_path, args.memory_limit_gb))
        print(f"[gigapixel] {json.dumps(rows[-1])}", file=sys.stderr, flush=True)
    table = markdown(info, rows, label)
    (out / "results.md").write_text(table)
    (out / "results.json").write_text(json.dumps({"image": info, "label": label, "rows": rows}, indent=1))
    print(table, end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""TNet on Megapixel MNIST 1500x1500: train under a time budget on 2 CPU cores, then measure test
accuracy, GFLOPs, inference latency, peak inference memory and the share of full-resolution
pixels read, at 1, 2, 3 and 5 locations per level. Prints a Markdown table and writes it, with
the same numbers as JSON, to OUT/results.md and OUT/results.json.

Reproduce the README numbers (2 otherwise idle CPU cores; 55 min of training, then ~5 min of evaluation),
from the repository root with the real digits in ../shared/data/mnist (or $FOVEATE_MNIST_DIR):

    . .venv/bin/activate
    python benchmarks/tnet_megapixel_mnist.py

Evaluate an existing checkpoint instead of training (its own config and digits are used;
--set takes data.* keys only, --digits replaces the digit source):

    python benchmarks/tnet_megapixel_mnist.py --checkpoint runs/bench_tnet/checkpoints/best.ckpt

Smoke run (a couple of minutes; the numbers mean nothing):

    python benchmarks/tnet_megapixel_mnist.py --minutes 0.3 --out /tmp/bench_smoke --latency-images 4 \\
        --set data.n_train=64 data.n_val=16 data.n_test=32 data.canvas_size=600

--digits, --out and --minutes win over the same keys given with --set. The footnotes printed
under the table say exactly how every column is measured.
"""
from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

import foveate
from foveate.config import apply_overrides, load_config
from foveate.errors import FoveateError
from foveate.fileio import atomic_open
from foveate.training import fit, test
from foveate.training.checkpoint import read_checkpoint
from foveate.training.run import create_datamodule

REPO = Path(__file__).resolve().parents[1]
WARMUP = 3  # untimed forwards before timing
BATCH = 16  # batch size of the throughput latency
PROBE_FORWARDS = 3  # forwards the memory probe runs
PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024
COLUMNS = ["locations", "test acc", "GFLOPs/img", "latency ms/img (batch 1, median ± IQR)",
           f"latency ms/img (batch {BATCH}, median ± IQR)", "peak inference memory MiB",
           "full-res pixels read %"]


# -- arguments ------------------------------------------------------------------------------
def default_digits() -> str:
    return os.environ.get("FOVEATE_MNIST_DIR") or str(REPO.parent / "shared" / "data" / "mnist")


def parse_budget(text: str) -> int | list[int]:
    """'3' -> 3 (every level); '3,2' -> [3, 2] (one per selection step)."""
    try:
        parts = [int(p) for p in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected K or K1,K2 (integers)") from None
    return parts[0] if len(parts) == 1 else parts


def budget_name(k: int | list[int]) -> str:
    """As the test metrics name it: 3 -> '3', [3, 2] -> '3-2'."""
    return "-".join(map(str, k)) if isinstance(k, list) else str(k)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=str(REPO / "configs" / "tnet_megapixel_mnist.yaml"))
    p.add_argument("--digits", default=None,
                   help="MNIST IDX directory (default: $FOVEATE_MNIST_DIR or REPO/../shared/data/mnist; "
                        "with --checkpoint: the checkpoint's)")
    p.add_argument("--minutes", type=float, default=38.0, help="time budget of the 1500x1500 stage (trainer.max_time)")
    p.add_argument("--stage1-config", default=str(REPO / "configs" / "tnet_megapixel_mnist_stage1.yaml"))
    p.add_argument("--stage1-minutes", type=float, default=20.0,
                   help="time budget of the 500x500 curriculum stage (0: no curriculum, train from scratch)")
    p.add_argument("--out", default="runs/bench_tnet", help="training output and results directory")
    p.add_argument("--checkpoint", default=None, help="skip training and evaluate this checkpoint")
    p.add_argument("--locations", nargs="+", type=parse_budget, default=[1, 2, 3, 5],
                   help="budgets: K (every level) or K1,K2 (one per level)")
    p.add_argument("--latency-images", type=int, default=20, help="test canvases timed per budget")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--_memory-probe", dest="memory_probe", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.latency_images < 1 or args.threads < 1 or args.minutes <= 0 or args.stage1_minutes < 0:
        p.error("--latency-images and --threads must be >= 1, --minutes > 0 and --stage1-minutes >= 0")
    return args


# -- training -------------------------------------------------------------------------------
def fit_stage(config: str, overrides: list[str], out: Path, minutes: float, digits: str,
              init_from: str | None) -> tuple[dict, float]:
    cfg = load_config(config, overrides)
    cfg["data"] = {**cfg.get("data", {}), "digits": digits}
    cfg["output_dir"] = str(out.resolve())
    cfg["init_from"] = init_from
    cfg["trainer"] = {**cfg.get("trainer", {}), "max_time": {"minutes": minutes}}
    start = time.perf_counter()
    result = fit(cfg)
    return result, (time.perf_counter() - start) / 60


def train(args: argparse.Namespace) -> tuple[str, dict]:
    """Fit (optionally after the 500x500 curriculum stage) under the time budgets; returns the best
    checkpoint and what training did."""
    digits = str(Path(args.digits or default_digits()).resolve())
    out = Path(args.out)
    init_from, stage1_minutes = None, 0.0
    if args.stage1_minutes > 0:
        stage1, stage1_minutes = fit_stage(args.stage1_config, args.set, out / "stage1", args.stage1_minutes,
                                           digits, None)
        init_from = stage1["last_checkpoint"]
    result, minutes = fit_stage(args.config, args.set, out, args.minutes, digits, init_from)
    checkpoint = result["best_checkpoint"] or result["last_checkpoint"]
    if not checkpoint:
        raise FoveateError("training saved no checkpoint (time budget too short for one validation?)")
    return checkpoint, {"config": args.config, "minutes": round(minutes + stage1_minutes, 2),
                        "stage1_config": args.stage1_config if args.stage1_minutes > 0 else None,
                        "stage1_minutes": round(stage1_minutes, 2)}


def progress(checkpoint: str, data_cfg: dict) -> dict:
    """Where training was when `checkpoint` was saved: its "epoch" (0-based index of the epoch
    running) and "global_step" (optimizer steps), and epochs done = steps / batches per epoch."""
    ckpt = read_checkpoint(checkpoint)
    steps = int(ckpt["global_step"])
    per_epoch = math.ceil(int(data_cfg.get("n_train", 5000)) / int(data_cfg.get("batch_size", 8)))
    return {"epoch": int(ckpt["epoch"]), "global_step": steps, "epochs_done": round(steps / per_epoch, 2)}


def evaluation_config(checkpoint: str, args: argparse.Namespace) -> dict:
    """The checkpoint's config, with --digits and data.* overrides of --set when evaluating an existing one."""
    cfg = read_checkpoint(checkpoint)["hyper_parameters"]["config"]
    if args.checkpoint:
        overrides = apply_overrides({}, args.set)
        if set(overrides) - {"data"}:
            raise FoveateError("with --checkpoint, --set takes data.* keys only")
        data = {**cfg.get("data", {}), **overrides.get("data", {})}
        if args.digits:
            data["digits"] = str(Path(args.digits).resolve())
        cfg = {**cfg, "data": data}
    return cfg


def test_split(cfg: dict):
    """The config's test split, built exactly as `test()` builds it."""
    data = create_datamodule(cfg.get("data", {}), int(cfg.get("seed", 0)))
    data.setup("test")
    return data.datasets["test"]


# -- measurements ---------------------------------------------------------------------------
def per_image_seconds(model, make_batch, count: int, k) -> tuple[list[float], list]:
    """Time `count` forwards of make_batch(0..count-1) after WARMUP untimed ones on batch 0;
    returns seconds per image of each forward, and the outputs."""
    warm = make_batch(0)
    for _ in range(WARMUP):
        model(warm, locations=k)
    del warm
    seconds, outputs = [], []
    for j in range(count):
        x = make_batch(j)
        start = time.perf_counter()
        out = model(x, locations=k)
        seconds.append((time.perf_counter() - start) / len(x))
        outputs.append(out)
    return seconds, outputs


def median_iqr_ms(seconds: list[float]) -> dict:
    if len(seconds) < 2:
        return {"median": seconds[0] * 1e3, "iqr": 0.0}
    q1, q2, q3 = statistics.quantiles(seconds, n=4)
    return {"median": q2 * 1e3, "iqr": (q3 - q1) * 1e3}


def pixels_read(out, height: int, width: int) -> float:
    """Share of the canvas inside the union of the last level's chosen cells (read at full resolution)."""
    if not out.trace:
        return 0.0
    mask = torch.zeros(height, width, dtype=torch.bool)
    boxes, _ = out.trace[-1].chosen_boxes(0)
    for x1, y1, x2, y2 in boxes.round().long().tolist():
        mask[max(y1, 0):max(y2, 0), max(x1, 0):max(x2, 0)] = True
    return mask.float().mean().item()


def resize_flops(model, height: int, width: int, k) -> int:
    """Estimated cost of resizing every view to r x r: 2 FLOPs per input pixel per channel."""
    ks = list(k) if isinstance(k, list) else [k] * (model.levels - 1)
    sizes = [(height, width)] + [grid.cell_size for grid in model.grids(height, width)]
    views = [math.prod(ks[:level]) for level in range(model.levels)]  # views per image at each level
    r = model.base_resolution
    return sum(2 * model.in_chans * h * w * n for (h, w), n in zip(sizes, views) if (h, w) != (r, r))


def flops(model, image, k) -> dict:
    """FLOPs of one image: FlopCounterMode's count (2 x MACs) plus the resize estimate."""
    with FlopCounterMode(display=False) as counter:
        model(image[None], locations=k)
    resize = resize_flops(model, *image.shape[-2:], k)
    return {"gflops": (counter.get_total_flops() + resize) / 1e9, "gflops_resize": resize / 1e9}


def busy_cpu_seconds() -> float:
    """CPU time all processes have used, from the first line of /proc/stat."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    idle, iowait = ticks[3], ticks[4]
    return (sum(ticks[:8]) - idle - iowait) / os.sysconf("SC_CLK_TCK")


def measure_with_others_cpu(measure):
    """measure(), and the share of all CPUs that other processes used while it ran."""
    with open("/proc/stat") as f:
        cpus = sum(line.startswith("cpu") for line in f) - 1
    busy, own, wall = busy_cpu_seconds(), time.process_time(), time.perf_counter()
    result = measure()
    others = (busy_cpu_seconds() - busy) - (time.process_time() - own)
    return result, max(0.0, 100 * others / ((time.perf_counter() - wall) * cpus))


def measure_budget(model, canvases: list, k) -> dict:
    """Latency at batch 1 and BATCH, FLOPs and full-resolution pixels read, for one budget."""
    n = len(canvases)
    height, width = canvases[0].shape[-2:]
    single, outputs = per_image_seconds(model, lambda j: canvases[j][None], n, k)
    batched, _ = per_image_seconds(
        model, lambda j: torch.stack([canvases[(j * BATCH + i) % n] for i in range(BATCH)]), n, k)
    return {
        **flops(model, canvases[0], k),
        "latency_ms_batch1": median_iqr_ms(single),
        f"latency_ms_batch{BATCH}": median_iqr_ms(batched),
        "pixels_read_pct": 100 * statistics.fmean(pixels_read(out, height, width) for out in outputs),
    }


# -- peak memory, in a fresh process per budget -----------------------------------------------
def reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark (VmHWM) to its current RSS; False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def current_rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE_KIB


def peak_rss_kib() -> int:
    """VmHWM, not ru_maxrss: a child's ru_maxrss also keeps the RSS its parent had at fork."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def added_by_forwards(model, image, k) -> dict:
    """MiB the RSS peak of PROBE_FORWARDS forwards rises above the RSS just before them."""
    gc.collect()
    exact = reset_peak_rss()
    before = current_rss_kib()
    with torch.inference_mode():
        for _ in range(PROBE_FORWARDS):
            model(image, locations=k)
    peak = peak_rss_kib()
    return {"added_mib": (peak - before) / 1024, "rss_before_mib": before / 1024, "peak_mib": peak / 1024,
            "peak_reset": exact}


def memory_probe(spec: dict) -> dict:
    """Runs in the child, with the model and one canvas loaded: the first PROBE_FORWARDS forwards
    ("cold": they also page in code and start thread pools), then as many again ("warm")."""
    torch.set_num_threads(spec["threads"])
    model = foveate.load(spec["checkpoint"]).model
    image = test_split(spec["config"])[0][0][None]
    cold = added_by_forwards(model, image, spec["locations"])
    return {**cold, "warm": added_by_forwards(model, image, spec["locations"])}


def peak_memory(checkpoint: str, cfg: dict, k, threads: int) -> dict:
    spec = {"checkpoint": checkpoint, "config": cfg, "locations": k, "threads": threads}
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--_memory-probe", json.dumps(spec)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        raise FoveateError(f"memory probe for locations={budget_name(k)} failed: {tail[0]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -- the benchmark --------------------------------------------------------------------------
def test_accuracy(checkpoint: str, cfg: dict, budgets: list) -> dict[str, float]:
    metrics = test(checkpoint, data_overrides=cfg.get("data", {}), locations=budgets)
    return {budget_name(k): metrics[f"test/acc@{budget_name(k)}"] for k in budgets}


def prepare_inference(threads: int) -> None:
    """fit() switched on deterministic algorithms (which also fill uninitialised tensors with NaN)
    for the whole process, and Lightning may have changed the thread count: time inference as users run it."""
    torch.use_deterministic_algorithms(False)
    torch.set_num_threads(threads)


def cpu_name() -> str:
    with open("/proc/cpuinfo") as f:
        names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    return names[0] if names else platform.machine()


def header(checkpoint: str, cfg: dict, model, training: dict | None, rows: list[dict], n_latency: int) -> dict:
    model_cfg, data = cfg["model"], cfg.get("data", {})
    return {
        "config": training["config"] if training else "(stored in the checkpoint)",
        "checkpoint": checkpoint,
        "digits": data.get("digits") or "built-in scikit-learn digits",
        "seed": int(cfg.get("seed", 0)),
        "model": {key: model_cfg.get(key) for key in ("name", "backbone", "levels", "grid", "overlap",
                                                      "base_resolution")},
        "parameters": sum(p.numel() for p in model.parameters()),
        "training": training,
        "evaluated_checkpoint": progress(checkpoint, data),
        "canvas_size": data.get("canvas_size", 1500),
        "sizes": {split: data.get(f"n_{split}") for split in ("train", "val", "test")},
        "latency_images": n_latency,
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "other_cpu_pct": max(r["other_cpu_pct"] for r in rows),
        "cpu": cpu_name(),
        "date": datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def training_line(head: dict) -> str:
    t, e = head["training"], head["evaluated_checkpoint"]
    fitted = f"{t['minutes']:.1f} min wall clock in fit()" if t else "not run here (--checkpoint)"
    if t and t.get("stage1_config"):
        fitted += f" (of which {t['stage1_minutes']:.1f} min on the 500x500 curriculum stage)"
    return (f"{fitted}; evaluated checkpoint after {e['epochs_done']:.2f} epochs, {e['global_step']} steps "
            f"(epoch index {e['epoch']})")


def markdown(head: dict, rows: list[dict]) -> str:
    m, sizes, canvas = head["model"], head["sizes"], head["canvas_size"]
    lines = [
        f"## TNet on Megapixel MNIST {canvas}x{canvas}",
        "",
        f"- config: `{head['config']}`; checkpoint: `{head['checkpoint']}`",
        f"- digits: `{head['digits']}`; seed {head['seed']}",
        f"- model: {m['name']}, {m['backbone']} backbone, {m['levels']} levels, grid {m['grid']}, "
        f"overlap {m['overlap']}, base resolution {m['base_resolution']}; {head['parameters']:,} parameters",
        f"- training: {training_line(head)}",
        f"- canvases: {sizes['train']} train / {sizes['val']} val / {sizes['test']} test",
        f"- torch {head['torch']}, {head['threads']} CPU threads ({head['cpu']}), {head['date']}",
        f"- other processes used up to {head['other_cpu_pct']:.0f}% of the CPUs during the latency runs "
        "(anything above a few % makes the latencies unreliable)",
        "",
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---:|" * len(COLUMNS),
    ]
    for r in rows:
        b1, b16 = r["latency_ms_batch1"], r[f"latency_ms_batch{BATCH}"]
        cells = [budget_name(r["locations"]), f"{r['test_acc']:.4f}", f"{r['gflops']:.3f}",
                 f"{b1['median']:.1f} ± {b1['iqr']:.1f}", f"{b16['median']:.1f} ± {b16['iqr']:.1f}",
                 f"{r['memory']['added_mib']:.1f}", f"{r['pixels_read_pct']:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines + [""] + footnotes(head, rows)) + "\n"


def footnotes(head: dict, rows: list[dict]) -> list[str]:
    n = head["latency_images"]
    lo, hi = min(r["gflops_resize"] for r in rows), max(r["gflops_resize"] for r in rows)
    resize = f"{lo:.4f}" if f"{lo:.4f}" == f"{hi:.4f}" else f"{lo:.4f} to {hi:.4f}"
    notes = [
        f"Locations are per selection step. Test acc: top-1 on the {head['sizes']['test']} test canvases "
        "(digits disjoint from training).",
        "GFLOPs/img: torch.utils.flop_counter.FlopCounterMode at batch 1 (FLOPs = 2 x MACs); crops are "
        "integer slicing (0 FLOPs). The antialiased resize of each view to the base resolution is not "
        "counted by FlopCounterMode and is added as an estimate of 2 FLOPs per input pixel per channel "
        f"({resize} GFLOPs of the totals).",
        f"Latency: time.perf_counter around model.forward under torch.inference_mode, {head['threads']} threads, "
        f"on {n} test canvases (rendering excluded) after {WARMUP} warm-up forwards; batch {BATCH}: "
        f"{n} forwards of {BATCH} of these canvases each, divided by {BATCH}. ± is the interquartile range.",
        f"Peak inference memory: a fresh process per budget loads the model and one canvas, then runs "
        f"{PROBE_FORWARDS} batch-1 forwards; peak RSS (VmHWM) minus RSS just before them (weights and input "
        "excluded; one-time costs of a first forward included: results.json also has a warm repeat).",
        "Full-res pixels read: area of the union of the last level's chosen cells (clipped to the canvas) / "
        f"canvas area, mean over the {n} latency canvases; level 1 sees the whole canvas, downsampled.",
    ]
    if not all(r["memory"]["peak_reset"] for r in rows):
        notes.append("WARNING: the RSS high-water mark could not be reset (/proc/self/clear_refs); "
                     "memory may include transients from loading.")
    return [f"{i}. {note}" for i, note in enumerate(notes, start=1)]


def write_results(out_dir: Path, head: dict, rows: list[dict], table: str) -> None:
    with atomic_open(out_dir / "results.json", "w") as f:
        json.dump({"header": head, "rows": rows}, f, indent=2)
        f.write("\n")
    with atomic_open(out_dir / "results.md", "w") as f:
        f.write(table)


def run(args: argparse.Namespace) -> str:
    torch.set_num_threads(args.threads)
    checkpoint, training = (args.checkpoint, None) if args.checkpoint else train(args)
    cfg = evaluation_config(checkpoint, args)
    accuracy = test_accuracy(checkpoint, cfg, args.locations)
    prepare_inference(args.threads)
    model = foveate.load(checkpoint).model
    dataset = test_split(cfg)
    canvases = [dataset[i][0] for i in range(min(args.latency_images, len(dataset)))]
    rows = []
    for k in args.locations:
        with torch.inference_mode():
            measured, others = measure_with_others_cpu(lambda: measure_budget(model, canvases, k))
        rows.append({"locations": k, "test_acc": accuracy[budget_name(k)], **measured, "other_cpu_pct": others,
                     "memory": peak_memory(checkpoint, cfg, k, args.threads)})
    head = header(checkpoint, cfg, model, training, rows, len(canvases))
    table = markdown(head, rows)
    write_results(Path(args.out), head, rows, table)
    return table


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        if args.memory_probe:
            print(json.dumps(memory_probe(json.loads(args.memory_probe))))
        else:
            print(run(args), end="")
    except FoveateError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

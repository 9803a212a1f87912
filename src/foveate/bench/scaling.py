"""`foveate bench --scaling`: how each model's cost per image grows with the canvas, for the same content.

    results, table, files = scaling(["tnet.ckpt", "fullres.ckpt"], sides=(1500, 3000, 6000), out_dir="runs/scaling")

The content: Megapixel MNIST test canvases 0..n-1 are laid out once on a canvas of the smallest
side S0 (the digits, their classes, the noise patterns and where each goes, from the data
config's seed, profile, noise count and digits). At every side S the same objects are drawn, at
native 28 px size, with each top-left corner scaled by (S - 28) / (S0 - 28) (rounded): the
relative layout is kept (no two digits overlap, nothing leaves the canvas), the objects stay the
same, and only the empty background grows. A model whose work follows the attended pixels keeps
a flat cost; one that reads every pixel grows with S^2.

Per model (at one budget, default None: the budget it was built with; baselines: none) and side:
- latency per image at batch 1: time.perf_counter around model.forward under inference_mode,
  after `warmup` untimed forwards, one timed forward per canvas; median and IQR;
- GFLOPs of one forward of the first canvas (as `measure.flops`);
- peak memory: the fresh-process RSS probe of `memory.peak_memory` (optional, one process per
  model and side), and always the exact allocator peak of `foveate.profiling.peak_memory`
  (PyTorch's own tensor allocations during one forward, in this process).
A measurement that fails (e.g. out of memory) is recorded as an error for that model and side
(`error`, or `memory_error` for the probe alone); the others go on.
"""
from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import apply_overrides
from ..data.megapixel_mnist import DIGIT_SIZE, Layout, MegapixelRenderer, split_id
from ..errors import FoveateError
from ..profiling import peak_memory as allocator_peak
from ..sources.region import TensorSource, build_pyramid
from ..training.checkpoint import read_checkpoint
from .compare import plan_entries, read_data_config
from .engine import environment, load_entry, prepare_inference, test_data
from .measure import (
    Budget,
    budget_name,
    check_budget,
    flops,
    measure_with_others_cpu,
    median_iqr_ms,
    time_forwards,
)
from .memory import peak_memory as rss_peak
from .report import write_csv, write_results

DEFAULT_SIDES = (1500, 3000, 6000)
INPUTS = ("tensor", "pyramid")


@dataclass
class ScalingSettings:
    """sides: canvas sides in px (square); the content is laid out at the smallest.
    images: distinct canvases, each timed once per side after `warmup` untimed forwards.
    threads: torch CPU threads. memory: run the fresh-process RSS probe (slow: one process per
    model and side); probe_forwards: forwards per round of the probe.
    inputs: how the model gets each canvas: "tensor" (the decoded full-resolution array, so every
    low-resolution view is resized from all pixels) and/or "pyramid" (a `TensorSource` with 2x
    pyramid levels built beforehand, as a pyramidal file stores them: views come from a level).
    Rows of pyramid input are named MODEL@pyramid."""

    sides: tuple[int, ...] = DEFAULT_SIDES
    images: int = 5
    warmup: int = 2
    threads: int = 2
    memory: bool = True
    probe_forwards: int = 1
    inputs: tuple[str, ...] = ("tensor", "pyramid")

    def __post_init__(self) -> None:
        self.sides = tuple(sorted({int(s) for s in self.sides}))
        self.inputs = tuple(dict.fromkeys(self.inputs))
        if not self.inputs or set(self.inputs) - set(INPUTS):
            raise FoveateError(f"scaling inputs must be among {', '.join(INPUTS)}, got {', '.join(self.inputs) or 'none'}")
        if not self.sides or self.images < 1 or self.warmup < 0 or self.threads < 1 or self.probe_forwards < 1:
            raise FoveateError("scaling settings: give at least one side; images, threads and probe_forwards "
                               "must be >= 1, warmup >= 0")


# -- the canvases ---------------------------------------------------------------------------
def scale_layout(layout: Layout, base: int, side: int) -> Layout:
    """`layout` drawn on a side-`base` canvas, moved to a side-`side` canvas: every corner times
    (side - 28) / (base - 28), rounded. Rounding is monotone, so boxes 28 px apart stay apart."""
    f = (side - DIGIT_SIZE) / (base - DIGIT_SIZE)
    return dataclasses.replace(layout, digit_corners=np.round(layout.digit_corners * f).astype(np.int64),
                               noise_corners=np.round(layout.noise_corners * f).astype(np.int64))


class ScaledCanvases:
    """Test canvases 0..n-1 of a Megapixel MNIST data config, laid out at side sides[0] and
    rendered at any side (uint8 (H, W), on demand)."""

    def __init__(self, data: dict[str, Any], seed: int, sides: Sequence[int], n: int) -> None:
        from ..training.run import create_datamodule

        if data.get("name", "megapixel_mnist") != "megapixel_mnist":
            raise FoveateError(f"--scaling renders Megapixel MNIST canvases; the data config is {data.get('name')!r}")
        module = create_datamodule({**data, "n_train": 0, "n_val": 0, "n_test": n}, seed)
        module.setup("test")
        self.pool, self.base = module.pools["test"], min(sides)
        self.renderers = {}
        for side in sides:  # every side checked (canvas large enough for the digits) before any rendering
            config = dataclasses.replace(module.config, canvas_size=side)
            self.renderers[side] = MegapixelRenderer(self.pool, config, split_id("test"))
        self.layouts = [self.renderers[self.base].layout(i) for i in range(n)]
        self.config = module.config

    def render(self, side: int, i: int) -> np.ndarray:
        return self.renderers[side].render_canvas(scale_layout(self.layouts[i], self.base, side))


def _as_input(canvas: np.ndarray, channels: int) -> torch.Tensor:
    """uint8 (H, W) -> float (channels, H, W) in [0, 1]."""
    x = torch.from_numpy(canvas).to(torch.float32).div_(255.0)[None]
    return x.expand(channels, -1, -1).contiguous() if channels > 1 else x


def _levels(x: torch.Tensor) -> list[torch.Tensor]:
    """(C, H, W) -> the pyramid [(C, H, W), (C, H/2, W/2), ...] a pyramidal file would hold."""
    return [x, *(t[0] for t in build_pyramid(x[None]))]


def _model_input(x: torch.Tensor | list[torch.Tensor]) -> torch.Tensor | TensorSource:
    """What the model is called with: a (1, C, H, W) batch, or a source over a pyramid."""
    if isinstance(x, list):
        return TensorSource(x[0][None], [t[None] for t in x[1:]], name="<pyramid>")
    return x[None]


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:300]


# -- the run --------------------------------------------------------------------------------
def measure_side(row: dict[str, Any], model: torch.nn.Module, inputs: Sequence[torch.Tensor | list[torch.Tensor]],
                 k: Budget, settings: ScalingSettings) -> float:
    """Fill row's latency_ms, gflops and allocator_peak_mib for `model` at budget `k` on `inputs`
    (canvases of one side, (C, H, W) or pyramids); returns the % of the CPUs other processes used
    while timing."""
    def batch(j: int) -> torch.Tensor | TensorSource:
        return _model_input(inputs[j])

    (seconds, _), busy = measure_with_others_cpu(
        lambda: time_forwards(model, batch, len(inputs), k, settings.warmup))
    row["latency_ms"] = median_iqr_ms(seconds)
    x = batch(0)
    row["gflops"] = flops(model, x if isinstance(x, TensorSource) else x[0], k)["gflops"]
    with torch.inference_mode():
        row["allocator_peak_mib"] = allocator_peak(lambda: model(x, locations=k)) / 2**20
    return busy


def run_scaling(checkpoints: Sequence[str | Path], data: dict[str, Any], seed: int = 0,
                budgets: Sequence[Budget] | None = None, settings: ScalingSettings | None = None,
                log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure every checkpoint (at each of `budgets` if it takes budgets, else at None; default
    [None]) at every side. Returns {"header", "rows"}: one row per model, budget and side with
    latency_ms {median, iqr}, latency_vs_smallest, gflops, allocator_peak_mib, memory (probe or
    None), memory_vs_smallest, error."""
    settings = settings or ScalingSettings()
    log = log or (lambda message: None)
    entries, task = plan_entries(checkpoints, budgets if budgets is not None else [None])
    prepare_inference(settings.threads)
    modules = {e.name: load_entry(e.checkpoint) for e in entries}
    canvases = ScaledCanvases(data, seed, settings.sides, settings.images)
    channels = task["input channels"]
    base = settings.sides[0]
    first = _as_input(canvases.render(base, 0), channels)
    for e in entries:  # budgets by the model's rules, then one forward at the smallest side
        for k in e.budgets:
            check_budget(modules[e.name].model, k, e.name)
            try:
                with torch.inference_mode():
                    modules[e.name].model(first[None], locations=k)
            except FoveateError as err:
                raise FoveateError(f"{e.name} at locations={budget_name(k)}, side {base}: {err}") from None
    del first

    rows, others = [], 0.0
    for side in settings.sides:
        log(f"rendering {settings.images} canvases of {side}x{side} px")
        tensors = [_as_input(canvases.render(side, i), channels) for i in range(settings.images)]
        for kind in settings.inputs:
            # pyramids are built before timing: a pyramidal file stores its levels
            inputs = tensors if kind == "tensor" else [_levels(x) for x in tensors]
            for e in entries:
                name = _row_name(e.name, kind)
                model = modules[e.name].model
                module_name = type(model).__module__
                imports = [] if module_name.split(".")[0] == "foveate" else [module_name]
                for k in e.budgets:
                    log(f"{name} at locations={budget_name(k)}, side {side}: latency, FLOPs, allocator peak")
                    row: dict[str, Any] = {"model": name, "input": kind, "locations": k, "budget": budget_name(k),
                                           "side": side, "pixels": side * side, "latency_ms": None, "gflops": None,
                                           "allocator_peak_mib": None, "memory": None, "memory_error": None,
                                           "error": None}
                    try:
                        others = max(others, measure_side(row, model, inputs, k, settings))
                    except (RuntimeError, MemoryError, FoveateError) as err:
                        row["error"] = _first_line(err)
                        log(f"{name} at side {side}: failed ({row['error']})")
                    if settings.memory and not row["error"]:
                        log(f"{name} at locations={budget_name(k)}, side {side}: peak memory (fresh process)")
                        try:
                            row["memory"] = rss_peak(e.checkpoint, inputs[0], k, settings.threads,
                                                     settings.probe_forwards, imports)
                        except FoveateError as err:  # e.g. the fresh process was killed for lack of memory
                            row["memory_error"] = _first_line(err)
                            log(f"{name} at side {side}: {row['memory_error']}")
                    rows.append(row)
            del inputs
        del tensors
    _add_ratios(rows)

    models = {}
    for kind in settings.inputs:
        for e in entries:
            config = read_checkpoint(e.checkpoint)["hyper_parameters"]["config"]
            models[_row_name(e.name, kind)] = {
                "checkpoint": e.checkpoint, "model": config["model"], "input": kind,
                "parameters": sum(p.numel() for p in modules[e.name].model.parameters()),
                "reads_full_image": bool(getattr(modules[e.name].model, "reads_full_image", False)),
                "budgets": e.budgets}
    source = {**test_data(data, seed), "n_test": settings.images, "base_side": base}
    source.pop("canvas_size", None)
    header = {"data": source, "task": task, "models": models, "settings": asdict(settings),
              "environment": environment(), "other_cpu_pct": others}
    return {"header": header, "rows": rows}


def _row_name(model: str, kind: str) -> str:
    return model if kind == "tensor" else f"{model}@{kind}"


def _add_ratios(rows: list[dict[str, Any]]) -> None:
    """latency_vs_smallest and memory_vs_smallest: each row over the same model and budget at the smallest side."""
    first: dict[tuple[str, str], dict[str, Any]] = {}
    for r in sorted(rows, key=lambda r: r["side"]):
        first.setdefault((r["model"], r["budget"]), r)
    for r in rows:
        ref = first[(r["model"], r["budget"])]
        r["latency_vs_smallest"] = (r["latency_ms"]["median"] / ref["latency_ms"]["median"]
                                    if r["latency_ms"] and ref["latency_ms"] and ref["latency_ms"]["median"] > 0
                                    else None)
        mem, ref_mem = (x["memory"]["added_mib"] if x.get("memory") else None for x in (r, ref))
        r["memory_vs_smallest"] = mem / ref_mem if mem is not None and ref_mem and ref_mem > 0 else None


# -- the report -----------------------------------------------------------------------------
def _num(value: float | None, digits: int = 1) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def markdown_scaling(results: dict[str, Any], title: str = "Cost against image side") -> str:
    head, rows = results["header"], results["rows"]
    s, data, env = head["settings"], head["data"], head["environment"]
    digits = f"`{data['digits']}`" if data.get("digits") else "built-in scikit-learn digits"
    cols = ["model", "locations", "side px", "latency ms/img (batch 1, median ± IQR)", "latency × smallest side",
            "GFLOPs/img", "peak memory MiB (fresh process)", "memory × smallest side", "allocator peak MiB"]
    lines = [f"## {title}", ""]
    if head.get("command"):
        lines.append(f"- command: `{head['command']}`")
    lines += [
        (f"- content: Megapixel MNIST test canvases 0-{s['images'] - 1} (profile {data['profile']}, "
         f"{data['n_noise']} noise patches, digits {digits}, seed {data['seed']}), laid out at "
         f"{data['base_side']} px and drawn at sides {', '.join(map(str, s['sides']))} with the same objects"),
        (f"- torch {env['torch']}, {env['threads']} CPU threads ({env['cpu']}, {env['usable_cpus']} usable of "
         f"{env['logical_cpus']} logical CPUs), Python {env['python']}, {env['date']}"),
        (f"- other processes used up to {head['other_cpu_pct']:.0f}% of the CPUs during the latency runs "
         "(anything above a few % makes the latencies unreliable)"),
        "- models: " + "; ".join(f"{name} (`{m['checkpoint']}`, {m['parameters']:,} parameters)"
                                 for name, m in head["models"].items()),
        "",
        "| " + " | ".join(cols) + " |",
        "|" + "---|" * 2 + "---:|" * (len(cols) - 2),
    ]
    order = list(head["models"])

    def key(r: dict[str, Any]) -> tuple[int, int, int]:
        return order.index(r["model"]), head["models"][r["model"]]["budgets"].index(r["locations"]), r["side"]

    for r in sorted(rows, key=key):
        if r.get("error"):
            cells = [r["model"], r["budget"], str(r["side"]), f"failed: {r['error']}"] + [""] * (len(cols) - 4)
        else:
            t = r["latency_ms"]
            memory = (_num(r["memory"]["added_mib"]) if r.get("memory") else
                      "probe failed" if r.get("memory_error") else "not measured")
            ratio = r["memory_vs_smallest"]
            cells = [r["model"], r["budget"], str(r["side"]), f"{t['median']:.1f} ± {t['iqr']:.1f}",
                     _num(r["latency_vs_smallest"], 2), f"{r['gflops']:.3f}", memory,
                     _num(ratio, 2) if r.get("memory") else "–", _num(r["allocator_peak_mib"])]
        lines.append("| " + " | ".join(cells) + " |")
    notes = [
        ("Content: every canvas is laid out once at the smallest side; at side S each digit and noise patch "
         "keeps its native 28 px and its top-left corner is scaled by (S - 28) / (smallest - 28): the same "
         "objects in the same relative places, more empty background. Locations: the budget passed as "
         "`model(x, locations=K)`; none: the budget the model was built with (baselines take none)."),
        (f"Latency: time.perf_counter around model.forward alone under torch.inference_mode, {env['threads']} "
         f"threads, batch 1, one forward of each of the {s['images']} canvases after {s['warmup']} untimed "
         "warm-up forwards (rendering and conversion to float excluded); median ± interquartile range. "
         "× smallest side: median over the median of the same model at the smallest side."),
        ("Input: MODEL is called with the decoded full-resolution canvas (a (1, C, S, S) tensor), so any "
         "low-resolution view is resized from every pixel; MODEL@pyramid reads the same canvas through a "
         "`foveate.sources.TensorSource` holding 2x pyramid levels (built before timing, as a pyramidal file "
         "stores them), so a view comes from the coarsest sufficient level and only attended regions are "
         "read at full resolution. Models that read every pixel cost the same either way."),
        ("GFLOPs/img: torch.utils.flop_counter.FlopCounterMode around one forward of the first canvas, "
         "FLOPs = 2 x MACs, plus the resampling estimate the benchmark adds (see `foveate bench`)."),
        ("Peak memory (fresh process): " + (
            f"a fresh Python process per model and side loads the checkpoint and the first canvas, resets its "
            f"RSS high-water mark, runs {s['probe_forwards']} batch-1 forward(s); peak RSS (VmHWM) minus RSS "
            "just before them (weights and input excluded, activations, temporaries and one-time costs "
            "included; results.json also has a warm repeat)." if s["memory"] else
            "not measured in this run (probe switched off).")),
        ("Allocator peak: foveate.profiling.peak_memory around one forward in the measuring process: the "
         "peak of PyTorch's own CPU tensor allocations (every storage, temporaries inside ops included) "
         "above the level before it; exact and repeatable, but blind to memory libraries allocate outside "
         "PyTorch (e.g. oneDNN scratch space) and to allocator caching."),
    ]
    lines += [""] + [f"{i}. {note}" for i, note in enumerate(notes, start=1)]
    return "\n".join(lines) + "\n"


CSV_COLUMNS = ["model", "locations", "side", "pixels", "latency_ms_median", "latency_ms_iqr", "latency_vs_smallest",
               "gflops", "memory_added_mib", "memory_warm_added_mib", "memory_vs_smallest", "allocator_peak_mib",
               "error", "memory_error"]


def csv_rows(results: dict[str, Any]) -> list[list[Any]]:
    out = []
    for r in results["rows"]:
        t, m = r.get("latency_ms") or {}, r.get("memory") or {}
        out.append([r["model"], r["budget"], r["side"], r["pixels"], t.get("median"), t.get("iqr"),
                    r.get("latency_vs_smallest"), r.get("gflops"), m.get("added_mib"),
                    (m.get("warm") or {}).get("added_mib"), r.get("memory_vs_smallest"), r.get("allocator_peak_mib"),
                    r.get("error"), r.get("memory_error")])
    return out


def save_scaling(out_dir: str | Path, results: dict[str, Any], table: str) -> list[Path]:
    """OUT_DIR/scaling.{json,md,csv} and OUT_DIR/scaling.png, each replaced atomically."""
    from .plots import plot_scaling

    out_dir = Path(out_dir)
    write_results(out_dir, results, table, stem="scaling")
    write_csv(out_dir / "scaling.csv", CSV_COLUMNS, csv_rows(results))
    plot_scaling(results, out_dir / "scaling.png")
    return [out_dir / f"scaling.{ext}" for ext in ("json", "md", "csv", "png")]


def scaling(checkpoints: Sequence[str | Path], data: str | Path | None = None, budgets: Sequence[Budget] | None = None,
            out_dir: str | Path = "runs/bench_scaling", settings: ScalingSettings | None = None,
            overrides: Sequence[str] = (), command: str | None = None, log: Callable[[str], None] | None = None
            ) -> tuple[dict[str, Any], str, list[Path]]:
    """The `foveate bench --scaling` command: content from `data` (a YAML config; None: the first
    checkpoint's data section and seed), measurements, and the files. Returns (results, table, files)."""
    if data is None:
        if not checkpoints:
            raise FoveateError("no checkpoints to benchmark")
        config = read_checkpoint(checkpoints[0])["hyper_parameters"]["config"]
        if bad := [o for o in overrides if not o.partition("=")[0].startswith("data.")]:
            raise FoveateError(f"--set {bad[0]}: only data.KEY=VALUE overrides apply to benchmark data")
        section = apply_overrides({"data": dict(config.get("data", {}) or {})}, list(overrides))["data"]
        seed = int(config.get("seed", 0))
    elif Path(data).is_dir():
        raise FoveateError(f"{data}: --scaling renders its canvases; give a YAML config for --data (or none: the "
                           "first checkpoint's data section)")
    else:
        if not Path(data).exists():
            raise FoveateError(f"{data}: no such config file")
        section, seed = read_data_config(data, overrides)
    results = run_scaling(checkpoints, section, seed, budgets, settings, log)
    if command:
        results["header"]["command"] = command
    table = markdown_scaling(results, f"Cost against image side: {', '.join(results['header']['models'])}")
    return results, table, save_scaling(out_dir, results, table)


__all__ = ["DEFAULT_SIDES", "ScaledCanvases", "ScalingSettings", "markdown_scaling", "run_scaling", "save_scaling",
           "scale_layout", "scaling"]

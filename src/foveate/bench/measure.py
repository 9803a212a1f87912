"""What the benchmark measures for one model at one budget: accuracy, FLOPs, latency and the share
of full-resolution pixels read. Every function works for any model that follows the foveate
contract `model(x, locations=k) -> Output`; peak memory is in `memory.py` (it needs a fresh process).

A budget `k` is what `locations=` takes: an int (every selection step), a list (one per step) or
None (the model's default; the only value baselines accept).
"""
from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.flop_counter import FlopCounterMode

from ..errors import FoveateError
from ..models import Output
from ..sources.region import RegionSource

Budget = int | list[int] | None


# -- budgets --------------------------------------------------------------------------------
def budget_name(k: Budget) -> str:
    """As rows and test metrics name a budget: 3 -> '3', [3, 2] -> '3-2', None -> 'none'."""
    if k is None:
        return "none"
    return "-".join(map(str, k)) if isinstance(k, (list, tuple)) else str(k)


def parse_budget(text: str) -> Budget:
    """'3' -> 3 (every step); '3,2' -> [3, 2] (one per step); 'none' or 'null' -> None.
    Raises ValueError for anything else (a CLI turns it into a usage error)."""
    if text.strip().lower() in ("none", "null"):
        return None
    try:
        parts = [int(p) for p in text.split(",")]
    except ValueError:
        raise ValueError(f"{text!r}: expected K, K1,K2 (integers) or none") from None
    return parts[0] if len(parts) == 1 else parts


def check_budget(model: nn.Module, k: Budget, name: str = "model") -> None:
    """Raise FoveateError unless `model` can run at budget `k`.

    None is always allowed. Otherwise the model must define `budget(k)` (which raises
    FoveateError for an impossible budget); a model without it takes no budget at all.
    """
    if k is None:
        return
    budget = getattr(model, "budget", None)
    if budget is None:
        raise FoveateError(f"{name} takes no locations budget (it runs with locations=None only); "
                           f"got locations={budget_name(k)}")
    try:
        budget(k)
    except FoveateError as e:
        raise FoveateError(f"{name}: {e}") from None
    except (TypeError, ValueError) as e:
        raise FoveateError(f"{name}: locations={budget_name(k)} is not a budget it understands ({e})") from None


# -- accuracy -------------------------------------------------------------------------------
def accuracy(models: Mapping[str, tuple[nn.Module, Sequence[Budget]]], dataset: Dataset, batch_size: int = 16,
             num_workers: int = 0, log: Callable[[str], None] | None = None) -> dict[str, dict[str, float]]:
    """Top-1 accuracy of every (model, budget) on `dataset`, in one pass over it: each batch is
    loaded (rendered) once and given to every model at every budget, so all models are scored on
    the very same images. `models` maps a name to (model in eval mode, budgets); returns
    {name: {budget_name: accuracy}}. The dataset yields (image (C, H, W), class index)."""
    loader = DataLoader(dataset, batch_size=batch_size, num_workers=num_workers)
    correct = {name: {budget_name(k): 0 for k in budgets} for name, (_, budgets) in models.items()}
    seen, start = 0, time.perf_counter()
    with torch.inference_mode():
        for x, y in loader:
            if y.dtype.is_floating_point or y.ndim != 1:
                raise FoveateError("accuracy needs one class index per image (label: majority or single); "
                                   "the test split has multi-label targets")
            for name, (model, budgets) in models.items():
                for k in budgets:
                    correct[name][budget_name(k)] += int((model(x, locations=k).logits.argmax(-1) == y).sum())
            seen += len(y)
            if log:
                log(f"accuracy: {seen}/{len(dataset)} test images ({time.perf_counter() - start:.0f} s)")
    if seen == 0:
        raise FoveateError("the test split is empty")
    return {name: {b: c / seen for b, c in per_budget.items()} for name, per_budget in correct.items()}


# -- FLOPs ----------------------------------------------------------------------------------
def _elements(shape) -> int:
    return math.prod(shape) if isinstance(shape, (tuple, list, torch.Size)) else 0


def _larger_side(*args, out_shape=None, **kwargs) -> int:
    """2 FLOPs per element of the larger of input and output (one multiply-add per pixel)."""
    return 2 * max(_elements(args[0]), _elements(out_shape))


def _output_side(*args, out_shape=None, **kwargs) -> int:
    """2 FLOPs per output element: grid sampling reads only near its sample points."""
    return 2 * _elements(out_shape)


_INTERPOLATION = ["upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d", "_upsample_nearest_exact1d",
                  "_upsample_nearest_exact2d", "_upsample_nearest_exact3d", "upsample_linear1d", "upsample_bilinear2d",
                  "upsample_bicubic2d", "upsample_trilinear3d", "_upsample_bilinear2d_aa", "_upsample_bicubic2d_aa"]
_POOLING = ["avg_pool1d", "avg_pool2d", "avg_pool3d", "adaptive_avg_pool1d", "adaptive_avg_pool2d",
            "adaptive_avg_pool3d", "_adaptive_avg_pool2d", "_adaptive_avg_pool3d"]
_SAMPLING = ["grid_sampler", "grid_sampler_2d", "grid_sampler_3d"]
RESAMPLING_FLOPS: dict[Any, Callable[..., int]] = {
    **{getattr(torch.ops.aten, n): _larger_side for n in _INTERPOLATION + _POOLING if hasattr(torch.ops.aten, n)},
    **{getattr(torch.ops.aten, n): _output_side for n in _SAMPLING if hasattr(torch.ops.aten, n)},
}
"""Formulas FlopCounterMode lacks: resizing (F.interpolate in every mode, antialiased or not; mode
"area" is adaptive average pooling), average pooling and grid sampling. An estimate, the same for
every model: the exact cost depends on the filter's taps (an antialiased downscale reads each
input pixel a few times)."""


class _NoModuleTracker:
    """Stands in for FlopCounterMode's ModuleTracker, whose per-module breakdown we do not use and
    whose hooks fail on inputs that require grad but have no grad_fn -- e.g. a learned query
    expanded under torch.no_grad or inference mode and passed to an attention layer (IPS)."""

    parents = ("Global",)

    def __enter__(self):
        return self

    def __exit__(self, *args) -> None:
        return None


class _TotalFlopCounter(FlopCounterMode):
    """FlopCounterMode counting only the "Global" totals (per op)."""

    def __init__(self, custom_mapping: dict) -> None:
        super().__init__(display=False, custom_mapping=custom_mapping)
        self.mod_tracker = _NoModuleTracker()


def flops(model: nn.Module, image: Tensor | RegionSource, k: Budget) -> dict[str, Any]:
    """FLOPs of one forward of `image` (C, H, W) (or a source of one image) at batch 1 and budget `k`.

    torch.utils.flop_counter.FlopCounterMode counts matrix products and convolutions as 2 x MACs
    (its convention). Operations it ignores that do real arithmetic on pixels -- resampling
    (resizes to a model's low-resolution views, average pooling, grid sampling) -- are added with
    the `RESAMPLING_FLOPS` estimate, measured from the ops the forward actually runs, so every model
    that downsamples is charged for it without declaring anything. Elementwise operations
    (activations, normalisation, additions), crops by slicing and max pooling count 0.
    Returns GFLOPs in all, the resampling part, and FLOPs per aten op.
    """
    with torch.inference_mode(), _TotalFlopCounter(RESAMPLING_FLOPS) as counter:
        model(image if isinstance(image, RegionSource) else image[None], locations=k)
    by_op = counter.get_flop_counts().get("Global", {})
    resampling = sum(v for op, v in by_op.items() if op in RESAMPLING_FLOPS)
    return {"gflops": counter.get_total_flops() / 1e9, "gflops_resampling": resampling / 1e9,
            "flops_by_op": {str(op): int(v) for op, v in sorted(by_op.items(), key=lambda kv: str(kv[0]))}}


# -- latency --------------------------------------------------------------------------------
def time_forwards(model: nn.Module, make_batch: Callable[[int], Tensor], count: int, k: Budget,
                  warmup: int = 3) -> tuple[list[float], list[Output]]:
    """Seconds per image of `count` forwards of make_batch(0..count-1) at budget `k`, each timed
    with time.perf_counter around the forward alone (making the batch is excluded), after `warmup`
    untimed forwards of batch 0; and the outputs. Runs under torch.inference_mode."""
    with torch.inference_mode():
        warm = make_batch(0)
        for _ in range(warmup):
            model(warm, locations=k)
        del warm
        seconds, outputs = [], []
        for j in range(count):
            x = make_batch(j)
            start = time.perf_counter()
            out = model(x, locations=k)
            seconds.append((time.perf_counter() - start) / (x.batch if isinstance(x, RegionSource) else len(x)))
            outputs.append(out)
    return seconds, outputs


def latency(model: nn.Module, images: Sequence[Tensor], k: Budget, batch_size: int = 1,
            warmup: int = 3) -> tuple[list[float], list[Output]]:
    """Per-image seconds of len(images) forwards of `batch_size` images each (batch j holds images
    j * batch_size, j * batch_size + 1, ... cycling through `images`), and the outputs."""
    n = len(images)
    if n == 0:
        raise FoveateError("latency needs at least one image")
    return time_forwards(model, lambda j: torch.stack([images[(j * batch_size + i) % n] for i in range(batch_size)]),
                         n, k, warmup)


def median_iqr_ms(seconds: Sequence[float]) -> dict[str, float]:
    """Median and interquartile range (exclusive quartiles) in milliseconds; IQR 0 for one value."""
    if len(seconds) < 2:
        return {"median": seconds[0] * 1e3, "iqr": 0.0}
    q1, q2, q3 = statistics.quantiles(seconds, n=4)
    return {"median": q2 * 1e3, "iqr": (q3 - q1) * 1e3}


# -- pixels read ----------------------------------------------------------------------------
def pixels_read(output: Output, height: int, width: int, reads_full_image: bool = False) -> list[float]:
    """Share of the full-resolution image each image of the batch read, in [0, 1].

    - reads_full_image (the model's class attribute: it passes every pixel through a network,
      e.g. a full-resolution CNN or a scan of all patches): 1.
    - no trace (nothing selected, e.g. a CNN on a downsampled view only): 0.
    - otherwise: the area of the union of the chosen boxes of the LAST trace level, rounded to
      whole pixels and clipped to the image (overlaps count once), over height * width. Earlier
      levels are downsampled views of regions the last level refines.
    """
    batch = output.logits.shape[0]
    if reads_full_image:
        return [1.0] * batch
    if not output.trace:
        return [0.0] * batch
    last, shares = output.trace[-1], []
    for b in range(batch):
        mask = torch.zeros(height, width, dtype=torch.bool)
        boxes, _ = last.chosen_boxes(b)
        for x1, y1, x2, y2 in boxes.round().long().tolist():
            x1, x2 = min(max(x1, 0), width), min(max(x2, 0), width)
            y1, y2 = min(max(y1, 0), height), min(max(y2, 0), height)
            mask[y1:y2, x1:x2] = True
        shares.append(mask.float().mean().item())
    return shares


# -- one budget -----------------------------------------------------------------------------
def measure_budget(model: nn.Module, images: Sequence[Tensor], k: Budget, batch_sizes: Sequence[int] = (1, 16),
                   warmup: int = 3) -> dict[str, Any]:
    """FLOPs (on images[0]), latency at every batch size, and % of full-resolution pixels read
    (mean over `images`, from the outputs of the first batch size's forwards) at budget `k`, with
    the rule `pixels_read` applied: "reads_full_image", "no_trace" or "chosen_boxes"."""
    height, width = images[0].shape[-2:]
    result: dict[str, Any] = flops(model, images[0], k)
    result["latency_ms"] = {}
    shares: list[float] = []
    for batch in batch_sizes:
        seconds, outputs = latency(model, images, k, batch, warmup)
        result["latency_ms"][str(batch)] = median_iqr_ms(seconds)
        if not shares:
            full = bool(getattr(model, "reads_full_image", False))
            shares = [s for out in outputs for s in pixels_read(out, height, width, full)][:len(images)]
            result["pixels_read_rule"] = ("reads_full_image" if full else
                                          "no_trace" if not any(out.trace for out in outputs) else "chosen_boxes")
    result["pixels_read_pct"] = 100 * statistics.fmean(shares)
    return result


# -- the machine while measuring ------------------------------------------------------------
def busy_cpu_seconds() -> float:
    """CPU time all processes have used, from the first line of /proc/stat."""
    with open("/proc/stat") as f:
        ticks = [int(v) for v in f.readline().split()[1:]]
    idle, iowait = ticks[3], ticks[4]
    return (sum(ticks[:8]) - idle - iowait) / os.sysconf("SC_CLK_TCK")


def measure_with_others_cpu(measure: Callable[[], Any]) -> tuple[Any, float]:
    """measure(), and the % of all CPUs that other processes used while it ran (Linux /proc;
    0 where it cannot be read)."""
    try:
        with open("/proc/stat") as f:
            cpus = sum(line.startswith("cpu") for line in f) - 1
        busy = busy_cpu_seconds()
    except OSError:
        return measure(), 0.0
    own, wall = time.process_time(), time.perf_counter()
    result = measure()
    others = (busy_cpu_seconds() - busy) - (time.process_time() - own)
    return result, max(0.0, 100 * others / ((time.perf_counter() - wall) * cpus))

"""The benchmark of several checkpoints on one test split: every model at every one of its budgets,
on the same test images, with the same settings, in one process (memory: one fresh process per row).

    entries = [Entry("tnet", "runs/tnet/checkpoints/best.ckpt"),
               Entry("lowres_cnn", "runs/lowres/checkpoints/best.ckpt")]
    results = run_benchmark(entries, data_cfg, Settings(latency_images=20))
    write_results("runs/bench", results, markdown(results, "Megapixel MNIST"))
"""
from __future__ import annotations

import inspect
import math
import os
import platform
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from ..errors import FoveateError
from ..profiling import peak_memory as allocator_peak
from ..training.checkpoint import load_checkpoint, read_checkpoint
from .measure import (
    Budget,
    accuracy,
    budget_name,
    check_budget,
    measure_budget,
    measure_with_others_cpu,
)
from .memory import peak_memory


@dataclass
class Entry:
    """One model to benchmark.

    name: labels its rows (unique within a run), e.g. the registered model name.
    checkpoint: written by `foveate fit` (its config rebuilds the model).
    budgets: the `locations` values to measure; None: the checkpoint config's `eval.locations`
        (default [None], the only budget baselines take).
    training: what training did, for the header: {"minutes": wall clock in fit(), "steps": optimizer
        steps, "stages": [{"config", "minutes", "steps"}, ...]} (optional keys); None: not trained
        in this run.
    model_attrs: attributes set on the loaded model, to measure one checkpoint several ways
        (e.g. {"eval_mode": "topk"} for ATS).
    """

    name: str
    checkpoint: str
    budgets: list[Budget] | None = None
    training: dict[str, Any] | None = None
    model_attrs: dict[str, Any] | None = None


def load_entry(checkpoint: str | Path, model_attrs: dict[str, Any] | None = None):
    """The LightningModule of `checkpoint`, with `model_attrs` set on its model."""
    module = load_checkpoint(checkpoint)
    for key, value in (model_attrs or {}).items():
        if not hasattr(module.model, key):
            raise FoveateError(f"{checkpoint}: model {type(module.model).__name__} has no attribute {key!r}")
        setattr(module.model, key, value)
    return module


@dataclass
class Settings:
    """How the measurements run (recorded in the header).

    latency_images: the first N test images are timed (and measured for pixels read).
    batch_sizes: latency is reported per image at each of these batch sizes.
    warmup: untimed forwards before each latency measurement.
    threads: torch CPU threads for every measurement (torch.set_num_threads).
    probe_forwards: forwards per round of the memory probe.
    eval_batch_size, num_workers: the accuracy pass over the test split.
    memory: run the memory probe (one fresh process per row); False leaves `memory` None.
    """

    latency_images: int = 20
    batch_sizes: tuple[int, ...] = (1, 16)
    warmup: int = 3
    threads: int = 2
    probe_forwards: int = 3
    eval_batch_size: int = 16
    num_workers: int = 0
    memory: bool = True

    def __post_init__(self) -> None:
        self.batch_sizes = tuple(int(b) for b in self.batch_sizes)
        if (self.latency_images < 1 or self.threads < 1 or self.probe_forwards < 1 or self.eval_batch_size < 1
                or self.warmup < 0 or not self.batch_sizes or min(self.batch_sizes) < 1 or self.num_workers < 0):
            raise FoveateError("benchmark settings: latency_images, threads, probe_forwards, eval_batch_size and "
                               "batch sizes must be >= 1; warmup and num_workers >= 0")


# -- the test split -------------------------------------------------------------------------
def _data_defaults() -> dict[str, Any]:
    from ..data import MegapixelMNISTDataModule

    params = inspect.signature(MegapixelMNISTDataModule.__init__).parameters.values()
    return {"name": "megapixel_mnist", **{p.name: p.default for p in params if p.default is not p.empty}}


TEST_KEYS = ("name", "digits", "canvas_size", "n_test", "profile", "label", "n_noise", "seed")
"""Data settings that decide which test images a config yields (batch size, workers, training sizes do not)."""


def test_data(data: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """The values of TEST_KEYS for a data config (defaults filled in, `seed` unless data sets one,
    digits as an absolute path)."""
    values = {**_data_defaults(), "seed": seed, **data}
    out = {key: values.get(key) for key in TEST_KEYS}
    if out["digits"]:
        out["digits"] = str(Path(out["digits"]).expanduser().resolve())
    return out


def test_split(data: dict[str, Any], seed: int = 0) -> Dataset:
    """The test split of a data config, built exactly as `foveate test` builds it."""
    from ..training.run import create_datamodule

    module = create_datamodule(data, seed)
    module.setup("test")
    return module.datasets["test"]


# -- the header -----------------------------------------------------------------------------
def progress(checkpoint: str) -> dict[str, Any]:
    """Where training was when `checkpoint` was saved: "epoch" (0-based index of the running epoch),
    "global_step" (optimizer steps) and "epochs_done" = steps / batches per epoch of its config."""
    ckpt = read_checkpoint(checkpoint)
    data = ckpt["hyper_parameters"]["config"].get("data", {})
    defaults = _data_defaults()
    steps = int(ckpt.get("global_step", 0))
    per_epoch = math.ceil(int(data.get("n_train", defaults["n_train"])) / int(data.get("batch_size",
                                                                                       defaults["batch_size"])))
    return {"epoch": int(ckpt.get("epoch", 0)), "global_step": steps,
            "epochs_done": round(steps / max(per_epoch, 1), 2)}


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            names = [line.split(":", 1)[1].strip() for line in f if line.startswith("model name")]
    except OSError:
        names = []
    return names[0] if names else platform.processor() or platform.machine()


def environment() -> dict[str, Any]:
    """The machine and software the numbers were measured on."""
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {"cpu": cpu_name(), "logical_cpus": os.cpu_count(), "usable_cpus": affinity,
            "threads": torch.get_num_threads(), "torch": torch.__version__, "python": platform.python_version(),
            "platform": platform.platform(), "date": datetime.now().astimezone().isoformat(timespec="seconds")}


def prepare_inference(threads: int) -> None:
    """fit() switches on deterministic algorithms for the whole process (which also fill new
    tensors with NaN) and Lightning may change the thread count: measure inference as users run it."""
    torch.use_deterministic_algorithms(False)
    torch.set_num_threads(threads)


# -- the run --------------------------------------------------------------------------------
def preflight(model: torch.nn.Module, image: torch.Tensor, k: Budget, name: str) -> None:
    """One batch-1 forward of `image` at budget `k`: budgets that only the image size makes
    impossible (e.g. more patches than the image has) fail here, naming the model, before any
    measurement runs."""
    try:
        with torch.inference_mode():
            model(image[None], locations=k)
    except FoveateError as e:
        raise FoveateError(f"{name} at locations={budget_name(k)}: {e}") from None


def run_benchmark(entries: Sequence[Entry], data: dict[str, Any] | Dataset, settings: Settings | None = None,
                  seed: int = 0, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Measure every entry at every budget on the test split of `data` (a data config; `seed`
    unless it sets one), or on `data` itself if it is a Dataset of (image, class index) (its
    `describe()`, if it has one, is the header's data section). Every budget is checked before
    anything runs (FoveateError naming the model), by the model's rules and by one forward of the
    first image. Returns {"header": ..., "rows": [...]}, one row per (model, budget) in entry order:
    model, locations, budget, test_acc, gflops, gflops_resampling, flops_by_op, latency_ms
    {batch size: {median, iqr}}, pixels_read_pct, pixels_read_rule, other_cpu_pct, memory."""
    settings = settings or Settings()
    log = log or (lambda message: None)
    names = [e.name for e in entries]
    if not entries or len(set(names)) != len(names):
        raise FoveateError(f"benchmark entries need unique names, got {names}")
    prepare_inference(settings.threads)
    modules = {e.name: load_entry(e.checkpoint, e.model_attrs) for e in entries}
    budgets: dict[str, list[Budget]] = {}
    for e in entries:
        config = modules[e.name].config
        budgets[e.name] = list(e.budgets if e.budgets is not None else config.get("eval", {}).get("locations", [None]))
        if not budgets[e.name]:
            raise FoveateError(f"{e.name}: no budgets to measure")
        for k in budgets[e.name]:
            check_budget(modules[e.name].model, k, e.name)

    if isinstance(data, Dataset):
        dataset = data
        describe = getattr(data, "describe", None)
        reference = describe() if callable(describe) else {"name": type(data).__name__}
    else:
        dataset, reference = test_split(data, seed), test_data(data, seed)
    if len(dataset) == 0:
        raise FoveateError("the test data set is empty" if isinstance(data, Dataset)
                           else "the test split is empty (data.n_test = 0)")
    images = [dataset[i][0] for i in range(min(settings.latency_images, len(dataset)))]
    for e in entries:
        for k in budgets[e.name]:
            preflight(modules[e.name].model, images[0], k, e.name)
    log(f"accuracy of {', '.join(names)} on {len(dataset)} test images")
    acc = accuracy({e.name: (modules[e.name].model, budgets[e.name]) for e in entries}, dataset,
                   settings.eval_batch_size, settings.num_workers, log)

    rows = []
    for e in entries:
        model = modules[e.name].model
        module_name = type(model).__module__
        imports = [] if module_name.split(".")[0] == "foveate" else [module_name]
        for k in budgets[e.name]:
            log(f"{e.name} at locations={budget_name(k)}: FLOPs, latency, pixels read")
            measured, others = measure_with_others_cpu(
                lambda model=model, k=k: measure_budget(model, images, k, settings.batch_sizes, settings.warmup))
            memory = None
            if settings.memory:
                log(f"{e.name} at locations={budget_name(k)}: peak memory (fresh process)")
                memory = peak_memory(e.checkpoint, images[0], k, settings.threads, settings.probe_forwards, imports,
                                     e.model_attrs)
            with torch.inference_mode():
                allocated = allocator_peak(lambda model=model, k=k: model(images[0][None], locations=k))
            rows.append({"model": e.name, "locations": k, "budget": budget_name(k),
                         "test_acc": acc[e.name][budget_name(k)], **measured, "other_cpu_pct": others,
                         "memory": memory, "allocator_peak_mib": allocated / 2**20})

    models = {}
    for e in entries:
        module, trained = modules[e.name], test_data(modules[e.name].config.get("data", {}),
                                                     int(modules[e.name].config.get("seed", 0)))
        models[e.name] = {
            "checkpoint": str(e.checkpoint),
            "model": {**module.config["model"], **(e.model_attrs or {})},  # as measured
            "parameters": sum(p.numel() for p in module.model.parameters()),
            "reads_full_image": bool(getattr(module.model, "reads_full_image", False)),
            "budgets": budgets[e.name],
            "training": e.training,
            "evaluated_checkpoint": progress(e.checkpoint),
            "trained_on_other_data": {k: v for k, v in trained.items()
                                      if k != "n_test" and k in reference and v != reference[k]},
        }
    header = {"data": {**reference, "n_test": len(dataset)}, "models": models, "settings": asdict(settings),
              "environment": environment(), "other_cpu_pct": max(r["other_cpu_pct"] for r in rows)}
    return {"header": header, "rows": rows}


__all__ = [
    "TEST_KEYS",
    "Entry",
    "Settings",
    "cpu_name",
    "environment",
    "preflight",
    "prepare_inference",
    "progress",
    "run_benchmark",
    "test_data",
    "test_split",
]

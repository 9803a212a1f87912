"""`foveate bench`: several checkpoints of one task compared on the same images in one run.

    results, table, files = compare(["tnet.ckpt", "ats.ckpt", "fullres.ckpt"], "configs/tnet_megapixel_mnist.yaml",
                                    budgets=[1, 2, 3, 5], out_dir="runs/bench")

What is checked before anything is measured (FoveateError, one line):
- every checkpoint is readable and given once;
- all checkpoints are of one task: same number of classes, same input channels, same data set
  name and label definition (data.label);
- the data is not empty and its labels are the checkpoints' (a config's data.name and data.label
  must match them; a folder must have the labels.csv column of that label definition);
- every budget of every model, by the model's rules and by one forward of the first image.

Budgets: `budgets` (the --locations list) goes to every model that takes budgets; models that take
none (the baselines) run once at locations=None. budgets=None: each checkpoint's eval.locations.
Rows are named by the checkpoint's model name (config model.name), disambiguated when several
checkpoints have the same one (see `model_names`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import yaml
from torch.utils.data import Dataset

from ..config import apply_overrides
from ..errors import FoveateError
from .engine import Entry, Settings, load_entry, run_benchmark
from .folder import LabeledImageFolder, label_column
from .measure import Budget, check_budget
from .report import markdown, save_report

DataSource = dict[str, Any] | Dataset


# -- checkpoints ----------------------------------------------------------------------------
def _run_dir(path: Path) -> str:
    """runs/NAME/checkpoints/best.ckpt -> NAME; other layouts: the parent directory's name."""
    parent = path.parent
    return parent.parent.name if parent.name == "checkpoints" and parent.parent.name else parent.name


def model_names(checkpoints: Sequence[str | Path], names: Sequence[str]) -> list[str]:
    """Row names: the model name of each checkpoint; where several share one, each gets a suffix
    telling them apart -- the file name (best / last), else the run directory, else the full path,
    else its position: "tnet (best)", "tnet (run_a)", "tnet (#2)"."""
    paths = [Path(c).resolve() for c in checkpoints]
    out = list(names)
    for name in set(names):
        idx = [i for i, n in enumerate(names) if n == name]
        if len(idx) < 2:
            continue
        for label_of in (lambda p: p.stem, _run_dir, str):
            labels = [label_of(paths[i]) for i in idx]
            if len(set(labels)) == len(labels):
                break
        else:
            labels = [f"#{j}" for j in range(1, len(idx) + 1)]
        for i, label in zip(idx, labels):
            out[i] = f"{name} ({label})"
    return out


def task_of(config: dict[str, Any], model: Any) -> dict[str, Any]:
    """What a checkpoint was trained to do: classes, input channels, data set and label definition."""
    data = config.get("data", {}) or {}
    name = data.get("name", "megapixel_mnist")
    label = data.get("label", "majority") if name == "megapixel_mnist" else data.get("label")
    return {"classes": int(getattr(model, "num_classes", config["model"].get("num_classes"))),
            "input channels": int(getattr(model, "in_chans", config["model"].get("in_chans", 1))),
            "data set": name, "label": label}


def check_one_task(checkpoints: Sequence[str | Path], tasks: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The common task, or FoveateError naming the first checkpoint that differs and how."""
    for path, task in zip(checkpoints[1:], tasks[1:]):
        for key, value in task.items():
            if value != tasks[0][key]:
                raise FoveateError(f"checkpoints of different tasks: {path} has {key} {value!r}, {checkpoints[0]} "
                                   f"has {tasks[0][key]!r}; compare models of one task (same classes, channels, "
                                   "data set and labels)")
    return tasks[0]


def takes_budget(model: Any) -> bool:
    """Whether `model` selects regions under a locations budget (False: baselines, which run at None only)."""
    try:
        check_budget(model, 1)
    except FoveateError:
        return False
    return True


def plan_entries(checkpoints: Sequence[str | Path], budgets: Sequence[Budget] | None = None
                 ) -> tuple[list[Entry], dict[str, Any]]:
    """One Entry per checkpoint (named, with its budgets) and their common task; FoveateError for
    a missing or repeated checkpoint, mixed tasks or a budget some model cannot run."""
    if not checkpoints:
        raise FoveateError("no checkpoints to benchmark")
    if budgets is not None and not budgets:
        raise FoveateError("--locations needs at least one budget (K or K1,K2)")
    resolved = [Path(c).resolve() for c in checkpoints]
    for i, path in enumerate(resolved):
        if path in resolved[:i]:
            raise FoveateError(f"{checkpoints[i]}: checkpoint given twice")
    modules = [load_entry(c) for c in checkpoints]  # FoveateError for a missing or unreadable file
    task = check_one_task(checkpoints, [task_of(m.config, m.model) for m in modules])
    names = model_names(checkpoints, [str(m.config["model"]["name"]) for m in modules])
    entries = []
    for path, name, module in zip(checkpoints, names, modules):
        own = None
        if budgets is not None:
            own = list(budgets) if takes_budget(module.model) else [None]
            for k in own:
                check_budget(module.model, k, name)
        entries.append(Entry(name, str(path), own))
    return entries, task


# -- data -----------------------------------------------------------------------------------
def read_data_config(path: str | Path, overrides: Sequence[str] = ()) -> tuple[dict[str, Any], int]:
    """The data section of a YAML config (a full `foveate fit` config or one with only `data:` and
    `seed:`), with data.KEY=VALUE overrides applied; and its seed (default 0)."""
    path = Path(path)
    try:
        cfg = yaml.safe_load(path.read_text())
    except OSError as e:
        raise FoveateError(f"{path}: cannot read ({e.strerror or e})") from None
    except (yaml.YAMLError, UnicodeDecodeError):
        raise FoveateError(f"{path}: not valid YAML") from None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("data"), dict):
        raise FoveateError(f"{path}: no data section (give a config with `data:` or a folder with labels.csv)")
    bad = [o for o in overrides if not o.partition("=")[0].startswith("data.")]
    if bad:
        raise FoveateError(f"--set {bad[0]}: only data.KEY=VALUE overrides apply to benchmark data")
    cfg = apply_overrides(cfg, list(overrides), str(path))
    seed = cfg.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise FoveateError(f"{path}: seed must be an integer, got {seed!r}")
    return cfg["data"], seed


def resolve_data(data: str | Path, task: dict[str, Any], overrides: Sequence[str] = ()) -> tuple[DataSource, int]:
    """`data` (a YAML config or a folder with labels.csv) as what run_benchmark takes, and the seed,
    checked against the checkpoints' task."""
    path = Path(data)
    if path.is_dir():
        if overrides:
            raise FoveateError("--set applies to a data config, not to a folder of images")
        column = label_column(task["label"])
        return LabeledImageFolder(path, column, task["classes"], task["input channels"]), 0
    if not path.exists():
        raise FoveateError(f"{path}: no such config file or directory")
    section, seed = read_data_config(path, overrides)
    name = section.get("name", "megapixel_mnist")
    label = section.get("label", "majority") if name == "megapixel_mnist" else section.get("label")
    if (name, label) != (task["data set"], task["label"]):
        raise FoveateError(f"{path}: its data ({name}, label {label}) is not the checkpoints' task "
                           f"({task['data set']}, label {task['label']})")
    n_test = section.get("n_test")
    if isinstance(n_test, int) and n_test == 0:
        raise FoveateError(f"{path}: the test split is empty (data.n_test = 0)")
    return section, seed


# -- the command ----------------------------------------------------------------------------
def compare(checkpoints: Sequence[str | Path], data: str | Path, budgets: Sequence[Budget] | None = None,
            out_dir: str | Path = "runs/bench", settings: Settings | None = None, overrides: Sequence[str] = (),
            command: str | None = None, log: Callable[[str], None] | None = None
            ) -> tuple[dict[str, Any], str, list[Path]]:
    """Check everything, measure every model at every budget on the same images, write
    results.{json,md,csv} and the plots to `out_dir`. Returns (results, Markdown table, files)."""
    entries, task = plan_entries(checkpoints, budgets)
    source, seed = resolve_data(data, task, overrides)
    results = run_benchmark(entries, source, settings or Settings(), seed, log)
    results["header"]["task"] = task
    if command:
        results["header"]["command"] = command
    models = ", ".join(e.name for e in entries)
    table = markdown(results, f"Benchmark: {models}")
    files = save_report(out_dir, results, table)
    return results, table, files


__all__ = ["check_one_task", "compare", "model_names", "plan_entries", "read_data_config", "resolve_data",
           "takes_budget", "task_of"]

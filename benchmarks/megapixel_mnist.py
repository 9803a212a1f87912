"""Megapixel MNIST benchmark of every foveate model in one run: train each model under a time
budget (sequentially, each from configs/<model>_megapixel_mnist.yaml), then measure all of them on
the same test canvases -- test accuracy, GFLOPs, latency at batch 1 and batch N, peak inference
memory and the share of full-resolution pixels read, at every budget of every model. Prints a
Markdown table (one row per model and budget) and writes it, with the same numbers as JSON and
CSV, to OUT/results.md, OUT/results.json and OUT/results.csv, with the plots
OUT/accuracy_vs_gflops.png and OUT/accuracy_vs_latency.png (the files `foveate bench` writes: the
measuring and the report are foveate.bench's). Model MODEL trains in OUT/MODEL.

Full benchmark (2 otherwise idle CPU cores; the training minutes of every model, then evaluation),
from the repository root with the real digits in ../shared/data/mnist (or $FOVEATE_MNIST_DIR):

    . .venv/bin/activate
    python benchmarks/megapixel_mnist.py --minutes ats=20 ips=20 lowres_cnn=10 fullres_cnn=15

Reuse a trained model instead of training it (the others still train):

    python benchmarks/megapixel_mnist.py --checkpoint tnet=runs/bench_tnet/checkpoints/best.ckpt

Smoke run (a few minutes; the numbers mean nothing):

    python benchmarks/megapixel_mnist.py --models tnet lowres_cnn fullres_cnn --minutes 0.3 --stage1-minutes 0 \\
        --out /tmp/bench_smoke --latency-images 4 --batch 4 \\
        --set data.n_train=64 data.n_val=16 data.n_test=32 data.canvas_size=600

Options naming a model take MODEL=VALUE items; --minutes and --stage1-minutes also take a bare
number for every model. A model with configs/<model>_megapixel_mnist_stage1.yaml (TNet: the
500x500 curriculum stage) trains that stage first for --stage1-minutes, then starts its main
stage from those weights. --set KEY=VALUE applies to every model trained here (data.* keys also
to the test data); --set MODEL:KEY=VALUE to one model's training only.

The test data is the data section of the first model's config (its checkpoint's config if
--checkpoint gave it one), with the data.* keys of --set and --digits; --digits also goes to
every model trained here (default: $FOVEATE_MNIST_DIR or REPO/../shared/data/mnist; for a first
model from --checkpoint, its own). Budgets are each config's eval.locations unless --locations
names the model. The footnotes under the table say exactly how every column is measured.
"""
from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

import torch

from foveate.bench import (
    Entry,
    Settings,
    check_budget,
    markdown,
    parse_budget,
    run_benchmark,
    save_report,
)
from foveate.config import apply_overrides, load_config
from foveate.errors import FoveateError
from foveate.models import create_model
from foveate.training import fit, read_checkpoint

REPO = Path(__file__).resolve().parents[1]
MODELS = ["tnet", "ats", "ips", "lowres_cnn", "fullres_cnn"]
DEFAULT_MINUTES = {"tnet": 38.0, "ats": 20.0, "ips": 20.0, "lowres_cnn": 10.0, "fullres_cnn": 15.0}
DEFAULT_STAGE1_MINUTES = 20.0
# The same checkpoint measured once more with these model attributes (rows named MODEL-SUFFIX):
# ATS samples at inference as the reference does; top-k takes the N most attended positions.
VARIANTS = {"ats": [("topk", {"eval_mode": "topk"})]}


# -- arguments ------------------------------------------------------------------------------
def default_digits() -> str:
    return os.environ.get("FOVEATE_MNIST_DIR") or str(REPO.parent / "shared" / "data" / "mnist")


def config_path(model: str, stage1: bool = False) -> Path:
    return REPO / "configs" / f"{model}_megapixel_mnist{'_stage1' if stage1 else ''}.yaml"


def named_values(items: list[str], option: str, convert=str, bare_ok: bool = False) -> list[tuple[str | None, object]]:
    """MODEL=VALUE items -> [(model, convert(value))]; with bare_ok, a bare VALUE gives (None, value)."""
    pairs = []
    for item in items:
        model, sep, raw = item.partition("=")
        if not sep and bare_ok:
            model, raw = None, item
        elif not sep or not model or not raw:
            raise FoveateError(f"{option} {item!r}: expected MODEL=VALUE")
        try:
            pairs.append((model, convert(raw)))
        except ValueError as e:
            raise FoveateError(f"{option} {item!r}: {e}") from None
    return pairs


def minutes_value(text: str) -> float:
    value = float(text)
    if not value >= 0:
        raise ValueError("minutes must be >= 0")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=MODELS, help=f"models to benchmark, in row order (default: all: "
                                                               f"{' '.join(MODELS)})")
    p.add_argument("--minutes", nargs="+", default=[], metavar="[MODEL=]MIN",
                   help="training budget (trainer.max_time) of the main stage; default "
                        + ", ".join(f"{m} {v:g}" for m, v in DEFAULT_MINUTES.items()))
    p.add_argument("--stage1-minutes", nargs="+", default=[], metavar="[MODEL=]MIN",
                   help=f"budget of the curriculum stage, for models with one (default {DEFAULT_STAGE1_MINUTES:g}; "
                        "0: no curriculum, train from scratch)")
    p.add_argument("--config", nargs="+", default=[], metavar="MODEL=PATH",
                   help="config instead of configs/MODEL_megapixel_mnist.yaml")
    p.add_argument("--stage1-config", nargs="+", default=[], metavar="MODEL=PATH",
                   help="curriculum config instead of configs/MODEL_megapixel_mnist_stage1.yaml")
    p.add_argument("--checkpoint", nargs="+", default=[], metavar="MODEL=PATH",
                   help="skip training MODEL and evaluate this checkpoint")
    p.add_argument("--locations", nargs="+", default=[], metavar="MODEL=K",
                   help="budgets of MODEL (repeat for several): K (every level), K1,K2 (one per level) or none; "
                        "default: its config's eval.locations")
    p.add_argument("--set", nargs="+", default=[], metavar="[MODEL:]KEY=VALUE", help="config overrides")
    p.add_argument("--digits", default=None, help="MNIST IDX directory (see below)")
    p.add_argument("--out", default="runs/bench_megapixel_mnist", help="training output and results directory")
    p.add_argument("--latency-images", type=int, default=20, help="test canvases timed per budget")
    p.add_argument("--batch", type=int, default=16, help="batch size of the second latency column")
    p.add_argument("--eval-batch", type=int, default=16, help="batch size of the accuracy pass")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = p.parse_args(argv)
    if args.latency_images < 1 or args.threads < 1 or args.batch < 1 or args.eval_batch < 1:
        p.error("--latency-images, --threads, --batch and --eval-batch must be >= 1")
    if len(set(args.models)) != len(args.models):
        p.error("--models lists a model twice")
    return args


def plan(args: argparse.Namespace) -> tuple[dict[str, dict], list[str]]:
    """What to do for every model (checkpoint, or configs and minutes; budgets; its overrides),
    and the --set overrides common to all. Raises FoveateError for anything inconsistent, before
    any training starts."""
    minutes = dict(named_values(args.minutes, "--minutes", minutes_value, bare_ok=True))
    stage1 = dict(named_values(args.stage1_minutes, "--stage1-minutes", minutes_value, bare_ok=True))
    configs = dict(named_values(args.config, "--config"))
    stage1_configs = dict(named_values(args.stage1_config, "--stage1-config"))
    checkpoints = dict(named_values(args.checkpoint, "--checkpoint"))
    budgets: dict[str, list] = {}
    for model, k in named_values(args.locations, "--locations", parse_budget):
        budgets.setdefault(model, []).append(k)
    common, own = [], {}
    for item in args.set:
        key = item.partition("=")[0]
        model, sep, _ = key.partition(":")
        if sep:
            own.setdefault(model, []).append(item[len(model) + 1:])
        else:
            common.append(item)
    for option, named in [("--minutes", minutes), ("--stage1-minutes", stage1), ("--config", configs),
                          ("--stage1-config", stage1_configs), ("--checkpoint", checkpoints),
                          ("--locations", budgets), ("--set", own)]:
        unknown = set(named) - {None} - set(args.models)
        if unknown:
            raise FoveateError(f"{option} names {', '.join(sorted(unknown))}, not among --models "
                               f"({' '.join(args.models)})")
    trained = [m for m in args.models if m not in checkpoints]
    if not trained and any(not item.startswith("data.") for item in common):
        raise FoveateError("every model comes from --checkpoint: --set takes data.* keys only")
    if clash := sorted(set(own) & set(checkpoints)):
        raise FoveateError(f"--set {clash[0]}:... but {clash[0]} comes from --checkpoint (nothing is trained)")

    steps = {}
    for model in args.models:
        step = {"budgets": budgets.get(model), "overrides": common + own.get(model, [])}
        if model in checkpoints:
            step["checkpoint"] = checkpoints[model]
            cfg = read_checkpoint(checkpoints[model])["hyper_parameters"]["config"]
        else:
            main = Path(configs.get(model, config_path(model)))
            first = Path(stage1_configs.get(model, config_path(model, stage1=True)))
            stage1_minutes = stage1.get(model, stage1.get(None, DEFAULT_STAGE1_MINUTES))
            step.update(config=main, stage1_config=first if first.is_file() and stage1_minutes > 0 else None,
                        minutes=minutes.get(model, minutes.get(None, DEFAULT_MINUTES.get(model, 20.0))),
                        stage1_minutes=stage1_minutes)
            if model in stage1_configs and not first.is_file():
                raise FoveateError(f"{first}: config file not found")
            if step["minutes"] <= 0:
                raise FoveateError(f"--minutes {model}: the main stage needs a budget > 0")
            cfg = load_config(main, step["overrides"])
            if cfg["model"]["name"] != model:
                raise FoveateError(f"{main} builds model {cfg['model']['name']!r}, not {model!r}")
            probe = create_model(**cfg["model"])  # cheap: checks the config and every budget now
            for k in step["budgets"] or cfg.get("eval", {}).get("locations", [None]):
                check_budget(probe, k, model)
        step["cfg"] = cfg
        steps[model] = step
    return steps, common


# -- training -------------------------------------------------------------------------------
def fit_stage(config: Path, overrides: list[str], out: Path, minutes: float, digits: str,
              init_from: str | None, threads: int) -> tuple[dict, dict]:
    cfg = load_config(config, overrides)
    cfg["data"] = {**cfg.get("data", {}), "digits": digits}
    cfg["output_dir"] = str(out.resolve())
    cfg["init_from"] = init_from
    cfg["trainer"] = {**cfg.get("trainer", {}), "max_time": {"minutes": minutes}}
    torch.set_num_threads(threads)
    start = time.perf_counter()
    result = fit(cfg)
    wall = (time.perf_counter() - start) / 60
    stage = {"config": _shown(config), "minutes": round(wall, 2), "steps": int(result["steps"])}
    return result, stage


def train(model: str, step: dict, out: Path, digits: str, threads: int) -> tuple[str, dict]:
    """Fit `model` (after its curriculum stage, if any) under the time budgets; returns the best
    checkpoint and what training did."""
    stages, init_from = [], None
    if step["stage1_config"]:
        result, stage = fit_stage(step["stage1_config"], step["overrides"], out / "stage1", step["stage1_minutes"],
                                  digits, None, threads)
        stages.append(stage)
        init_from = result["last_checkpoint"]
    result, stage = fit_stage(step["config"], step["overrides"], out, step["minutes"], digits, init_from, threads)
    stages.append(stage)
    checkpoint = result["best_checkpoint"] or result["last_checkpoint"]
    if not checkpoint:
        raise FoveateError(f"{model}: training saved no checkpoint")
    return checkpoint, {"minutes": round(sum(s["minutes"] for s in stages), 2),
                        "steps": sum(s["steps"] for s in stages), "stages": stages}


def _shown(path: Path | str) -> str:
    path = Path(path).resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def test_data_config(args: argparse.Namespace, steps: dict[str, dict], common: list[str]) -> tuple[dict, int]:
    """The first model's data config with the data.* keys of --set and the digits; and its seed."""
    first = steps[args.models[0]]
    cfg = first["cfg"]
    overrides = apply_overrides({}, [item for item in common if item.startswith("data.")]).get("data", {})
    data = {**cfg.get("data", {}), **overrides}
    if args.digits or "checkpoint" not in first:
        data["digits"] = str(Path(args.digits or default_digits()).resolve())
    return data, int(cfg.get("seed", 0))


def run(args: argparse.Namespace, argv: list[str] | None = None) -> str:
    steps, common = plan(args)
    out = Path(args.out)
    digits = str(Path(args.digits or default_digits()).resolve())
    data, seed = test_data_config(args, steps, common)
    entries = []
    for model in args.models:
        step = steps[model]
        if "checkpoint" in step:
            entries.append(Entry(model, step["checkpoint"], step["budgets"]))
        else:
            log(f"training {model} (main stage: {step['minutes']:g} min"
                + (f", after {step['stage1_minutes']:g} min on {_shown(step['stage1_config'])}" if step["stage1_config"]
                   else "") + ")")
            checkpoint, training = train(model, step, out / model, digits, args.threads)
            entries.append(Entry(model, checkpoint, step["budgets"], training))
        for suffix, attrs in VARIANTS.get(model, []):
            entries.append(Entry(f"{model}-{suffix}", entries[-1].checkpoint, step["budgets"], model_attrs=attrs))
    settings = Settings(latency_images=args.latency_images, batch_sizes=(1, args.batch) if args.batch > 1 else (1,),
                        threads=args.threads, eval_batch_size=args.eval_batch)
    results = run_benchmark(entries, data, settings, seed, log)
    results["header"]["command"] = shlex.join(["python", "benchmarks/megapixel_mnist.py",
                                               *(sys.argv[1:] if argv is None else argv)])
    size = results["header"]["data"]["canvas_size"]
    size = f"{size}x{size}" if isinstance(size, int) else f"{size} px"
    table = markdown(results, f"Megapixel MNIST {size}: {', '.join(args.models)}")
    save_report(out, results, table)
    return table


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        print(run(args, argv), end="")
    except FoveateError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

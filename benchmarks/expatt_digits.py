"""ExpAtt benchmark: the same ResNet-18 with and without ExpAtt on real digits.

Task "cluttered" (default): one real MNIST digit at a uniformly random position in an S x S canvas
(S = 48) with K = 4 clutter pieces (8x8 crops of other digits of the same pool) pasted at random
positions; classify the digit. Spatial context matters: the digit is anywhere and the clutter
looks like digit strokes. Task "mnist28": the 28x28 digits themselves.

Digits: the 8,000 real digits in ../shared/data/mnist (or --digits / $FOVEATE_MNIST_DIR), split by
`foveate.data.load_digits` into disjoint train / val / test pools; training canvases are drawn
afresh at every step from the train pool; the test canvases (one per test digit, clutter from
the test pool) are drawn once with a fixed seed and are the same for every model and seed.

Protocol: equal steps (the machine is shared, so wall-clock budgets would depend on the load of
other jobs), SGD momentum 0.9, linear warm-up over the first 5% of steps to --lr then cosine to 0,
weight decay 5e-4 on conv/linear weights only (never on the radius theta: decay would pull every
sigma towards softplus(0)), batch 64; for each seed both models see the same batches. Accuracy is
the final model's (no checkpoint selection) in eval mode on all test canvases. GFLOPs: one canvas
through backbone and head, torch's FlopCounterMode (2 FLOPs per multiply-add, convolutions and
matrix products) plus foveate.bench.measure.RESAMPLING_FLOPS for average pooling (the ExpAtt
branch of a stride-2 block pools its input); elementwise ops count 0.

    OMP_NUM_THREADS=1 nice -n 10 python benchmarks/expatt_digits.py   # 2 models x 3 seeds x 700 steps

(about 0.15-0.2 s per step on one core of a busy 2-core machine: ~15 minutes; --max-minutes 17
starts no new run after that, so a slower machine reports fewer seeds, always in model pairs.)

Writes OUT/results.md (the printed tables) and OUT/results.json (every run), OUT = runs/expatt.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from foveate.backbones import create_backbone
from foveate.bench.measure import RESAMPLING_FLOPS
from foveate.data import DigitPool, load_digits
from foveate.layers import ExpAtt

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DIGITS = Path(os.environ.get("FOVEATE_MNIST_DIR", REPO.parent / "shared" / "data" / "mnist"))


# -- data ------------------------------------------------------------------------------------
def make_canvases(pool: DigitPool, idx: np.ndarray, rng: np.random.Generator, size: int,
                  clutter: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 1, size, size) float canvases in [0, 1] holding digits pool[idx] and their (B,) labels."""
    b = len(idx)
    if size == 28 and clutter == 0:
        return torch.from_numpy(pool.images[idx].astype(np.float32) / 255)[:, None], torch.from_numpy(pool.labels[idx])
    canvas = np.zeros((b, size, size), np.uint8)
    for i in range(b):
        for _ in range(clutter):
            src = pool.images[rng.integers(len(pool))]
            y, x = rng.integers(0, 28 - 8 + 1, size=2)
            cy, cx = rng.integers(0, size - 8 + 1, size=2)
            np.maximum(canvas[i, cy:cy + 8, cx:cx + 8], src[y:y + 8, x:x + 8], out=canvas[i, cy:cy + 8, cx:cx + 8])
        dy, dx = rng.integers(0, size - 28 + 1, size=2)
        np.maximum(canvas[i, dy:dy + 28, dx:dx + 28], pool.images[idx[i]], out=canvas[i, dy:dy + 28, dx:dx + 28])
    return torch.from_numpy(canvas.astype(np.float32) / 255)[:, None], torch.from_numpy(pool.labels[idx])


# -- model -----------------------------------------------------------------------------------
class Classifier(nn.Module):
    def __init__(self, backbone: str, **kwargs) -> None:
        super().__init__()
        self.backbone = create_backbone(backbone, in_chans=1, **kwargs)
        self.fc = nn.Linear(self.backbone.num_features, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 1, S, S) -> (B, 10)
        return self.fc(self.backbone(x)[1])


def gflops(model: nn.Module, x: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False, custom_mapping=RESAMPLING_FLOPS) as counter:
        model(x)
    return counter.get_total_flops() / 1e9


def map_sides(model: Classifier, size: int) -> dict[str, int]:
    """max(H, W) of the map every ExpAtt module attends over, for a size x size canvas."""
    sides: dict[str, int] = {}
    hooks = [m.register_forward_hook(lambda m, i, o, n=n: sides.__setitem__(n, max(o.shape[-2:])))
             for n, m in model.backbone.named_modules() if isinstance(m, ExpAtt)]
    model.eval()
    with torch.no_grad():
        model(torch.zeros(1, 1, size, size))
    for h in hooks:
        h.remove()
    return sides


def lr_at(step: int, steps: int, peak: float) -> float:
    warm = max(1, round(0.05 * steps))
    if step < warm:
        return peak * (step + 1) / warm
    return 0.5 * peak * (1 + math.cos(math.pi * (step - warm) / max(1, steps - warm)))


def train_one(name: str, seed: int, args, pools: dict[str, DigitPool], test: tuple[torch.Tensor, torch.Tensor],
              kwargs: dict) -> dict:
    torch.manual_seed(seed)
    model = Classifier(name, **kwargs, **(args.expatt if name.startswith("expatt") else {}))
    decay = [p for p in model.parameters() if p.dim() > 1]
    no_decay = [p for p in model.parameters() if p.dim() <= 1]
    opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4}, {"params": no_decay, "weight_decay": 0.0}],
                          lr=args.lr, momentum=0.9)
    rng = np.random.default_rng(1000 + seed)  # the same batches for every model at this seed
    train = pools["train"]
    losses: list[float] = []
    model.train()
    t0 = time.perf_counter()
    for step in range(args.steps):
        x, y = make_canvases(train, rng.integers(len(train), size=args.batch), rng, args.canvas, args.clutter)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, args.steps, args.lr)
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        if not math.isfinite(losses[-1]):
            print(f"  {name} seed {seed}: loss {losses[-1]} at step {step}; stopping", file=sys.stderr)
            break
    train_s = time.perf_counter() - t0
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(test[1]), 256):
            correct += int((model(test[0][i:i + 256]).argmax(1) == test[1][i:i + 256]).sum())
    sigmas = model.backbone.sigmas() if hasattr(model.backbone, "sigmas") else {}
    return {"model": name, "seed": seed, "accuracy": correct / len(test[1]), "train_seconds": train_s,
            "steps": len(losses), "final_loss": statistics.fmean(losses[-50:]), "sigmas": sigmas,
            "params": sum(p.numel() for p in model.parameters()),
            "gflops": gflops(model, test[0][:1]), "map_sides": map_sides(model, args.canvas)}


# -- report ----------------------------------------------------------------------------------
def mean_std(xs: list[float]) -> str:
    if len(xs) == 1:
        return f"{100 * xs[0]:.2f}"
    return f"{100 * statistics.fmean(xs):.2f} ± {100 * statistics.stdev(xs):.2f}"


def report(runs: list[dict], args, kwargs: dict) -> str:
    names = list(dict.fromkeys(r["model"] for r in runs))
    task = (f"{args.canvas}x{args.canvas} cluttered MNIST ({args.clutter} 8x8 clutter pieces)"
            if args.task == "cluttered" else "MNIST 28x28")
    lines = [(f"Task: {task}; {args.steps} steps of batch {args.batch}, SGD lr {args.lr}, "
              f"backbone kwargs {kwargs}, ExpAtt kwargs {args.expatt or 'default'}; test: {args.n_test} canvases."),
             "",
             ("| backbone | test accuracy % (mean ± std) | seeds | params | GFLOPs / image | train s / run | "
              "final train loss |"), "|---|---|---|---|---|---|---|"]
    for n in names:
        rs = [r for r in runs if r["model"] == n]
        lines.append(f"| {n} | {mean_std([r['accuracy'] for r in rs])} | {', '.join(str(r['seed']) for r in rs)} | "
                     f"{rs[0]['params']:,} | {rs[0]['gflops']:.4f} | "
                     f"{statistics.fmean(r['train_seconds'] for r in rs):.0f} | "
                     f"{statistics.fmean(r['final_loss'] for r in rs):.3f} |")
    att = [r for r in runs if r["sigmas"]]
    if att:
        seeds = [r["seed"] for r in att]
        pixels = args.expatt.get("coords") == "pixels"
        init = args.expatt.get("sigma_init", 1.5 if pixels else 0.1)
        lines += ["", ("Learned radius per ExpAtt module, as a fraction of the map's longer side (in brackets, "
                       f"feature-map pixels). Initial sigma {init} ({'pixels' if pixels else 'normalised'})."), "",
                  "| module | map side | " + " | ".join(f"seed {s}" for s in seeds) + " |",
                  "|---|---|" + "---|" * len(seeds)]
        for mod in att[0]["sigmas"]:
            side = att[0]["map_sides"][mod]
            px = [r["sigmas"][mod] * (1 if pixels else side) for r in att]
            cells = [f"{p / side:.3f} ({p:.2f} px)" for p in px]
            lines.append(f"| {mod.removeprefix('stages.').removesuffix('.conv1.att')} | {side} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", choices=("cluttered", "mnist28"), default="cluttered")
    p.add_argument("--canvas", type=int, default=48)
    p.add_argument("--clutter", type=int, default=4)
    p.add_argument("--steps", type=int, default=700)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--models", nargs="+", default=["resnet18", "expatt_resnet18"])
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--stem", choices=("cifar", "imagenet"), default=None,
                   help="default: imagenet for the cluttered canvas, cifar for mnist28")
    p.add_argument("--n-test", type=int, default=1600)
    p.add_argument("--max-minutes", type=float, default=17.0, help="start no new run after this")
    p.add_argument("--expatt", nargs="*", default=[], metavar="KEY=VALUE",
                   help="extra expatt_resnet18 arguments, e.g. expatt_stages=[2,3,4] sigma_init=0.2 coords=pixels")
    p.add_argument("--digits", type=Path, default=DEFAULT_DIGITS)
    p.add_argument("--out", type=Path, default=REPO / "runs" / "expatt")
    args = p.parse_args(argv)
    args.expatt = {k: yaml.safe_load(v) for k, v in (item.split("=", 1) for item in args.expatt)}
    if args.task == "mnist28":
        args.canvas, args.clutter = 28, 0
    stem = args.stem or ("imagenet" if args.task == "cluttered" else "cifar")
    kwargs = {"width": args.width, "stem": stem}
    pools = load_digits(args.digits)
    test_pool = pools["test"]
    args.n_test = min(args.n_test, len(test_pool))
    test = make_canvases(test_pool, np.arange(args.n_test), np.random.default_rng(12345), args.canvas, args.clutter)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"torch threads {torch.get_num_threads()}; train pool {len(pools['train'])} digits, "
          f"test {args.n_test} canvases of {args.canvas}px", flush=True)
    runs: list[dict] = []
    start = time.perf_counter()
    for seed in args.seeds:
        for name in args.models:  # interleaved, so a cut-short run still pairs the models
            if (time.perf_counter() - start) / 60 > args.max_minutes:
                print(f"time budget of {args.max_minutes} min reached; skipping {name} seed {seed}", flush=True)
                continue
            r = train_one(name, seed, args, pools, test, kwargs)
            runs.append(r)
            print(f"{name} seed {seed}: accuracy {100 * r['accuracy']:.2f}% in {r['train_seconds']:.0f} s "
                  f"(final loss {r['final_loss']:.3f})", flush=True)
            (args.out / "results.json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                               "kwargs": kwargs, "runs": runs}, indent=1))
    text = report(runs, args, kwargs)
    print(text)
    (args.out / "results.md").write_text(text + "\n")


if __name__ == "__main__":
    main()

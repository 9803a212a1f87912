"""Saccader on Megapixel MNIST 1500x1500: the staged CPU recipe, VIMCO vs REINFORCE at equal
training time, and the measurements of foveate.bench (accuracy vs number of glimpses, share of
the image attended, latency, peak memory, GFLOPs) on the same test canvases.

1. the recipe (configs/saccader_megapixel_mnist.yaml: representation -> pretrain -> policy with
   REINFORCE), unless RECIPE/policy/stage.json exists;
2. VIMCO vs REINFORCE at equal training time: the policy stage again from the same pretrained
   checkpoint (RECIPE/pretrain/checkpoints/last.ckpt), once per estimator, each for
   --compare-minutes of wall clock on --compare-canvas-px canvases (500: ~9x more steps than at
   1500 in the same time), into RECIPE/compare_<estimator> (skipped when it exists);
3. the benchmark (foveate.bench.run_benchmark) on 1500x1500 test canvases of: the recipe's final
   model at every budget, each comparison arm and the policy after pretraining only at the largest
   budget, the reference's `ordered_logits` heuristic on the same BagNet at every budget, and the
   BagNet alone (the spatial mean of every cell's logits, nothing selected).

    . .venv/bin/activate
    OMP_NUM_THREADS=1 python benchmarks/saccader_megapixel_mnist.py --digits ../shared/data/mnist \\
        --out runs/saccader/bench --n-test 300

Training runs in this process with one thread per op (OMP_NUM_THREADS=1, as the recipe was
measured); the benchmark measures with --threads threads.
"""
from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

from foveate.bench import Entry, Settings, markdown, run_benchmark, save_report
from foveate.config import load_config
from foveate.errors import FoveateError
from foveate.training import fit

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs" / "saccader_megapixel_mnist.yaml"


def log(message: str) -> None:
    print(f"[saccader-bench] {message}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--digits", default=str(REPO.parent / "shared" / "data" / "mnist"), help="MNIST IDX directory")
    p.add_argument("--config", default=str(CONFIG))
    p.add_argument("--recipe", default=None, help="the recipe's output_dir (default: the config's)")
    p.add_argument("--out", default="runs/saccader/bench")
    p.add_argument("--locations", type=int, nargs="+", default=[1, 2, 3, 6])
    p.add_argument("--n-test", type=int, default=1000, help="test canvases (the same for every row)")
    p.add_argument("--latency-images", type=int, default=5)
    p.add_argument("--batch", type=int, default=1, help="second latency batch size (1: batch 1 only)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--compare", nargs="*", default=["reinforce", "vimco"],
                   help="policy estimators trained from the same pretrained checkpoint for --compare-minutes each")
    p.add_argument("--compare-minutes", type=float, default=8.0)
    p.add_argument("--compare-canvas", type=int, default=500, help="canvas side of the comparison's training")
    p.add_argument("--set", nargs="*", default=[], help="overrides for the recipe (KEY=VALUE)")
    return p.parse_args(argv)


def _stage_info(stage_dir: Path) -> dict:
    info = json.loads((stage_dir / "stage.json").read_text())
    return {"minutes": round(info.get("minutes", 0.0), 1), "steps": info.get("steps"),
            "val_acc": info.get("metrics", {}).get("val/acc")}


def train(args: argparse.Namespace) -> tuple[Path, dict, dict]:
    from foveate.config import apply_overrides

    cfg = load_config(args.config, [f"data.digits={args.digits}", *args.set])
    recipe = Path(args.recipe or cfg["output_dir"])
    cfg["output_dir"] = str(recipe)
    if not (recipe / "policy" / "stage.json").is_file():
        log(f"training the recipe into {recipe}")
        fit(cfg, resume="auto")
    policy = {s["name"]: s for s in cfg["stages"]}["policy"]
    base = {k: v for k, v in cfg.items() if k != "stages"}
    arms = {}
    for estimator in args.compare:
        out = recipe / f"compare_{estimator}"
        arms[estimator] = out
        if (out / "stage.json").is_file():
            continue
        overrides = [f"{k}={json.dumps(v)}" for k, v in policy.items() if k != "name" and "." in k]
        overrides += [f"model.policy_estimator={estimator}", f"output_dir={out}",
                      f"init_from={recipe / 'pretrain' / 'checkpoints' / 'last.ckpt'}",
                      f"data.canvas_size={args.compare_canvas}", "data.n_val=200",
                      f"trainer.max_time={json.dumps(_max_time(args.compare_minutes))}"]
        log(f"training the {estimator} arm into {out} for {args.compare_minutes:g} min")
        start = time.perf_counter()
        result = fit(apply_overrides(base, overrides))
        result.update(stage=f"compare_{estimator}", minutes=(time.perf_counter() - start) / 60)
        (out / "stage.json").write_text(json.dumps(result, indent=1))
    training = {name: _stage_info(recipe / name) for name in ("representation", "pretrain", "policy")}
    return recipe, training, {e: _stage_info(out) for e, out in arms.items()}


def _max_time(minutes: float) -> str:
    seconds = round(minutes * 60)
    return f"00:{seconds // 3600:02d}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


def run(args: argparse.Namespace, argv: list[str] | None = None) -> str:
    recipe, training, arms = train(args)
    ckpt = {name: str(recipe / name / "checkpoints" / "last.ckpt") for name in training}
    budgets = list(args.locations)
    recipe_training = {"minutes": sum(t["minutes"] for t in training.values()),
                       "steps": sum(t["steps"] for t in training.values()),
                       "stages": [{"config": s, **t} for s, t in training.items()]}
    entries = [Entry("saccader", ckpt["policy"], budgets, recipe_training)]
    for estimator, info in arms.items():
        entries.append(Entry(f"policy-{estimator}", str(recipe / f"compare_{estimator}" / "checkpoints" / "last.ckpt"),
                             [max(budgets)], {"minutes": info["minutes"], "steps": info["steps"],
                                              "stages": [{"config": f"policy stage ({estimator}) from pretrain, "
                                                                    f"{args.compare_canvas}-px canvases", **info}]}))
    entries += [
        Entry("pretrained-only", ckpt["pretrain"], [max(budgets)]),
        Entry("ordered_logits", ckpt["policy"], budgets, model_attrs={"policy": "ordered_logits"}),
        Entry("bagnet-all-cells", ckpt["policy"], [budgets[0]], model_attrs={"stage": "representation"}),
    ]
    cfg = load_config(args.config, [f"data.digits={args.digits}", *args.set])
    data = {**cfg["data"], "n_test": args.n_test}
    settings = Settings(latency_images=args.latency_images, batch_sizes=(1, args.batch) if args.batch > 1 else (1,),
                        threads=args.threads, memory=not args.no_memory)
    results = run_benchmark(entries, data, settings, int(cfg.get("seed", 0)), log)
    results["header"]["command"] = shlex.join(["python", "benchmarks/saccader_megapixel_mnist.py",
                                               *(sys.argv[1:] if argv is None else argv)])
    results["header"]["training"] = {"recipe": training, "compare": arms}
    table = markdown(results, "Saccader on Megapixel MNIST 1500x1500")
    save_report(args.out, results, table)
    return table


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

"""TNet on Megapixel MNIST 1500x1500: train under a time budget on 2 CPU cores, then measure test
accuracy, GFLOPs, inference latency, peak inference memory and the share of full-resolution
pixels read, at 1, 2, 3 and 5 locations per level. A thin wrapper, with the options it always
had, around the all-models benchmark: it runs `benchmarks/megapixel_mnist.py --models tnet`
(training in OUT/tnet, the 500x500 curriculum stage in OUT/tnet/stage1; results in
OUT/results.{md,json,csv} and the plots OUT/accuracy_vs_{gflops,latency}.png, as `foveate bench`
writes them).

Reproduce the README numbers (2 otherwise idle CPU cores; 58 min of training, then ~5 min of evaluation),
from the repository root with the real digits in ../shared/data/mnist (or $FOVEATE_MNIST_DIR):

    . .venv/bin/activate
    python benchmarks/tnet_megapixel_mnist.py

Evaluate an existing checkpoint instead of training (its own config and digits are used;
--set takes data.* keys only, --digits replaces the digit source):

    python benchmarks/tnet_megapixel_mnist.py --checkpoint runs/bench_tnet/checkpoints/best.ckpt

Smoke run (a couple of minutes; the numbers mean nothing):

    python benchmarks/tnet_megapixel_mnist.py --minutes 0.3 --stage1-minutes 0 --out /tmp/bench_smoke \\
        --latency-images 4 --set data.n_train=64 data.n_val=16 data.n_test=32 data.canvas_size=600

The footnotes printed under the table say exactly how every column is measured.
"""
from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def engine():
    """benchmarks/megapixel_mnist.py as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("megapixel_mnist_benchmark", HERE / "megapixel_mnist.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="default: configs/tnet_megapixel_mnist.yaml")
    p.add_argument("--digits", default=None,
                   help="MNIST IDX directory (default: $FOVEATE_MNIST_DIR or REPO/../shared/data/mnist; "
                        "with --checkpoint: the checkpoint's)")
    p.add_argument("--minutes", type=float, default=38.0, help="time budget of the 1500x1500 stage (trainer.max_time)")
    p.add_argument("--stage1-config", default=None, help="default: configs/tnet_megapixel_mnist_stage1.yaml")
    p.add_argument("--stage1-minutes", type=float, default=20.0,
                   help="time budget of the 500x500 curriculum stage (0: no curriculum, train from scratch)")
    p.add_argument("--out", default="runs/bench_tnet", help="training output and results directory")
    p.add_argument("--checkpoint", default=None, help="skip training and evaluate this checkpoint")
    p.add_argument("--locations", nargs="+", default=None,
                   help="budgets: K (every level) or K1,K2 (one per level); default: the config's eval.locations")
    p.add_argument("--latency-images", type=int, default=20, help="test canvases timed per budget")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    args = p.parse_args(argv)
    if args.minutes <= 0 or args.stage1_minutes < 0:
        p.error("--minutes must be > 0 and --stage1-minutes >= 0")
    return args


def engine_argv(args: argparse.Namespace) -> list[str]:
    """The same run as options of benchmarks/megapixel_mnist.py."""
    argv = ["--models", "tnet", "--out", args.out, "--latency-images", str(args.latency_images),
            "--threads", str(args.threads), "--minutes", f"tnet={args.minutes}",
            "--stage1-minutes", f"tnet={args.stage1_minutes}"]
    for option, value in [("--config", args.config), ("--stage1-config", args.stage1_config),
                          ("--checkpoint", args.checkpoint)]:
        if value:
            argv += [option, f"tnet={value}"]
    if args.digits:
        argv += ["--digits", args.digits]
    if args.locations:
        argv += ["--locations", *(f"tnet={k}" for k in args.locations)]
    if args.set:
        argv += ["--set", *args.set]
    return argv


def main(argv: list[str] | None = None) -> int:
    return engine().main(engine_argv(parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())

"""`foveate` command line: fit | test | predict | data | bench | quickstart.

The only module that parses arguments or prints. A `FoveateError` becomes one line on stderr
and exit status 2; no traceback.
"""
from __future__ import annotations

import argparse
import csv
import shlex
import sys
import time
from pathlib import Path

from .errors import FoveateError


def _locations(values: list[str] | None):
    """`--locations 3` -> 3; `--locations 3,2` -> [3, 2] (one per level); several -> a list of budgets."""
    if values is None:
        return None
    out = []
    for v in values:
        try:
            parts = [int(p) for p in v.split(",")]
        except ValueError:
            raise FoveateError(f"--locations {v!r}: expected integers like 3 or 3,2") from None
        out.append(parts[0] if len(parts) == 1 else parts)
    return out


def cmd_fit(args) -> int:
    from .config import load_config
    from .training import fit

    cfg = load_config(args.config, args.set)
    result = fit(cfg, resume=args.resume)
    print(f"best checkpoint: {result['best_checkpoint']}")
    print(f"last checkpoint: {result['last_checkpoint']}")
    for k, v in sorted(result["metrics"].items()):
        if k.startswith("val/"):
            print(f"{k}: {v:.4f}")
    return 0


def cmd_test(args) -> int:
    from .config import apply_overrides
    from .training import test

    data = apply_overrides({}, args.set).get("data", {}) if args.set else {}
    metrics = test(args.checkpoint, data_overrides=data, locations=_locations(args.locations))
    for k, v in metrics.items():
        print(f"{k}: {v:.4f}")
    return 0


def cmd_predict(args) -> int:
    from . import load
    from .explain import draw_trace
    from .fileio import atomic_open
    from .sources import image_files

    predictor = load(args.checkpoint)
    predictor.allow_large = args.allow_large
    budgets = _locations(args.locations)
    if budgets is not None and len(budgets) > 1:
        raise FoveateError("predict takes one budget: --locations K or --locations K1,K2 (one per level)")
    locations = budgets[0] if budgets else None
    files = image_files(args.input)
    if not files:
        raise FoveateError(f"no images found in {' '.join(map(str, args.input))}")
    if args.explain:
        Path(args.explain).mkdir(parents=True, exist_ok=True)
    failed = 0
    rows = []
    names = predictor.classes  # class names recorded at training (folder/CSV/fMoW data), else None
    for path in files:
        try:
            pred = predictor.predict(path, locations=locations)
        except FoveateError as e:
            msg = str(e) if str(path) in str(e) else f"{path}: {e}"
            print(f"foveate: error: {msg}", file=sys.stderr)
            rows.append([str(path), "", "", "", "", msg])
            failed += 1
            continue
        top = " ".join(f"{c}:{p:.4f}" for c, p in pred.top(5))
        name = names[pred.label] if names and pred.label < len(names) else ""
        rows.append([str(path), pred.label, name, f"{pred.probability:.6f}", top, ""])
        if args.explain:
            out = Path(args.explain) / f"{path.stem}.png"
            draw_trace(pred.image, pred.output, 0, out, title=f"{path.name}: class {pred.label} "
                                                              f"(p={pred.probability:.3f})")
    with atomic_open(args.output, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "predicted", "class", "probability", "top5", "error"])
        writer.writerows(rows)
    print(f"predicted {len(files) - failed} of {len(files)} images -> {args.output}")
    if args.explain:
        print(f"explanations -> {args.explain}")
    return 1 if failed else 0


def cmd_data(args) -> int:
    from .data import MegapixelConfig, load_digits, write_megapixel_mnist

    pools = load_digits(args.digits)
    config = MegapixelConfig(canvas_size=args.canvas, profile=args.profile, seed=args.seed)
    csv_path = write_megapixel_mnist(args.out, args.n, split=args.split, pool=pools[args.split], config=config)
    print(f"wrote {args.n} images and {csv_path}")
    return 0


def cmd_bench(args) -> int:
    from .bench import ScalingSettings, Settings, compare, scaling

    def log(message: str) -> None:
        print(f"[bench] {message}", file=sys.stderr, flush=True)

    command = shlex.join(["foveate", *args.argv])
    budgets = _locations(args.locations)
    if args.scaling:
        settings = ScalingSettings(sides=args.sides, images=args.latency_images or 5, warmup=args.warmup,
                                   threads=args.threads, memory=not args.no_memory, inputs=tuple(args.inputs))
        _, table, files = scaling(args.checkpoints, args.data, budgets, args.out or "runs/bench_scaling", settings,
                                  args.set, command, log)
    else:
        if args.data is None:
            raise FoveateError("--data is required: a YAML config (its data section) or a folder with labels.csv")
        settings = Settings(latency_images=args.latency_images or 20, batch_sizes=(1, args.batch) if args.batch > 1
                            else (1,), warmup=args.warmup, threads=args.threads, eval_batch_size=args.eval_batch,
                            memory=not args.no_memory)
        _, table, files = compare(args.checkpoints, args.data, budgets, args.out or "runs/bench", settings,
                                  args.set, command, log)
    print(table, end="")
    log("wrote " + ", ".join(map(str, files)))
    return 0


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be >= 1")
    return value


def cmd_quickstart(args) -> int:
    from .quickstart import run_quickstart

    start = time.time()
    summary = run_quickstart(args.out, digits=args.digits, minutes=args.minutes)
    print()
    print(f"quick start finished in {(time.time() - start) / 60:.1f} min")
    for k, v in summary.items():
        print(f"  {k}: {v}")
    return 0


def cmd_convert(args) -> int:
    from .sources.convert import convert

    result = convert(args.image, args.out, tile=args.tile, compression=args.compression, min_side=args.min_side,
                     quality=args.quality, allow_large=args.allow_large)
    if result.decoded_whole:
        print(f"{args.image}: decoded whole (this format cannot be read in parts)", file=sys.stderr)
    levels = ", ".join(f"{w}x{h}" for h, w in result.levels)
    print(f"wrote {result.path}: {len(result.levels)} levels ({levels}), {result.tile}-px {result.compression} "
          f"tiles, {result.bytes / 2**20:.1f} MiB in {result.seconds:.1f} s")
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="foveate", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("fit", help="train a model from a YAML config")
    s.add_argument("--config", required=True)
    s.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config values, e.g. trainer.max_epochs=1")
    s.add_argument("--resume", default=None, help="'auto' (last.ckpt of output_dir) or a checkpoint path")
    s.set_defaults(func=cmd_fit)

    s = sub.add_parser("test", help="accuracy of a checkpoint on its test split")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--locations", nargs="*", help="budgets to evaluate: K or K1,K2 per level")
    s.add_argument("--set", nargs="*", default=[], metavar="data.KEY=VALUE")
    s.set_defaults(func=cmd_test)

    s = sub.add_parser("predict", help="classify image files; optionally draw where the model looked")
    s.add_argument("--checkpoint", required=True)
    s.add_argument("--input", nargs="+", required=True, help="image files and/or directories")
    s.add_argument("--output", required=True, help="CSV file to write")
    s.add_argument("--locations", nargs="*", help="K (every level) or K1,K2 (one per level)")
    s.add_argument("--explain", default=None, metavar="OUTDIR", help="write one PNG per image with the attended regions")
    s.add_argument("--allow-large", action="store_true", help="lift Pillow's decompression-bomb guard for these files")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("data", help="write a data set to disk")
    dsub = s.add_subparsers(dest="dataset", required=True)
    d = dsub.add_parser("megapixel-mnist", help="Megapixel MNIST canvases as PNGs plus labels.csv")
    d.add_argument("--out", required=True)
    d.add_argument("-n", type=int, default=100)
    d.add_argument("--split", choices=["train", "val", "test"], default="test")
    d.add_argument("--digits", default=None, help="MNIST IDX directory (default: built-in digits)")
    d.add_argument("--canvas", type=int, default=1500)
    d.add_argument("--profile", default="ats", choices=["ats", "ips", "fixed"])
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=cmd_data)

    s = sub.add_parser("bench", help="accuracy, GFLOPs, latency, memory and pixels read of several checkpoints "
                                     "on the same images; --scaling: cost against image side")
    s.add_argument("--checkpoints", nargs="+", required=True, metavar="CKPT", help="checkpoints of one task")
    s.add_argument("--data", default=None, metavar="CONFIG_OR_DIR",
                   help="a YAML config (its data section and seed give the test split) or a folder with labels.csv "
                        "as `foveate data megapixel-mnist` writes; --scaling: a config or nothing (the first "
                        "checkpoint's data)")
    s.add_argument("--set", nargs="*", default=[], metavar="data.KEY=VALUE", help="override the data config")
    s.add_argument("--locations", nargs="*", help="budgets of the models that take one (K or K1,K2 per level); "
                                                  "default: each checkpoint's eval.locations (--scaling: as built)")
    s.add_argument("--out", default=None, help="results directory (default runs/bench, --scaling runs/bench_scaling)")
    s.add_argument("--scaling", action="store_true", help="cost per image against canvas side, same content")
    s.add_argument("--sides", nargs="+", type=_positive, default=[1500, 3000, 6000], metavar="PX",
                   help="canvas sides for --scaling (default 1500 3000 6000)")
    s.add_argument("--inputs", nargs="+", choices=["tensor", "pyramid"], default=["tensor", "pyramid"],
                   help="--scaling: call models with the decoded canvas (tensor) and/or through a 2x pyramid "
                        "source (pyramid, as a pyramidal file is read); default both")
    s.add_argument("--latency-images", type=_positive, default=None,
                   help="images timed per row (default 20; --scaling: canvases per side, default 5)")
    s.add_argument("--batch", type=_positive, default=16, help="batch size of the second latency column (1: none)")
    s.add_argument("--eval-batch", type=_positive, default=16, help="batch size of the accuracy pass")
    s.add_argument("--warmup", type=int, default=3, help="untimed forwards before each latency measurement")
    s.add_argument("--threads", type=_positive, default=2, help="torch CPU threads")
    s.add_argument("--no-memory", action="store_true", help="skip the fresh-process peak-memory probe (faster)")
    s.set_defaults(func=cmd_bench)

    s = sub.add_parser("convert", help="write a tiled, compressed pyramidal TIFF that is read lazily, tile by tile")
    s.add_argument("image", help="any image foveate reads (PNG, JPEG, TIFF, OpenSlide formats)")
    s.add_argument("out", help="the TIFF to write (replaced atomically)")
    s.add_argument("--tile", type=_positive, default=256, help="tile side in px, a multiple of 16 (default 256)")
    s.add_argument("--compression", choices=["zlib", "jpeg", "zstd", "none"], default="zlib")
    s.add_argument("--quality", type=_positive, default=90, help="JPEG quality (with --compression jpeg)")
    s.add_argument("--min-side", type=_positive, default=256, help="stop the pyramid before a side < this")
    s.add_argument("--allow-large", action="store_true", help="lift the decompression-bomb guard for this file")
    s.set_defaults(func=cmd_convert)

    s = sub.add_parser("quickstart", help="make data, train TNet for a few minutes, evaluate, explain")
    s.add_argument("--out", default="runs/quickstart")
    s.add_argument("--digits", default=None, help="MNIST IDX directory (default: built-in digits)")
    s.add_argument("--minutes", type=float, default=5.0, help="training time budget")
    s.set_defaults(func=cmd_quickstart)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        return args.func(args)
    except FoveateError as e:
        print(f"foveate: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("foveate: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())

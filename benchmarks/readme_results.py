"""Regenerate the README's result tables and plots in one command: the accuracy / cost comparison of
every trained model on Megapixel MNIST 1500x1500 (`benchmarks/megapixel_mnist.py`, i.e.
`foveate bench`), and the cost-against-image-side scaling run (`foveate bench --scaling`, from
the decoded canvas and through a pyramid source). Measures the given checkpoints (it trains
nothing), copies the tables and PNGs to docs/results/ and replaces the README's blocks between
`<!-- results:NAME -->` and `<!-- /results:NAME -->` markers.

From the repository root, on an otherwise idle machine (about 25 minutes on 2 CPU cores):

    . .venv/bin/activate
    python benchmarks/readme_results.py                 # measure, then rewrite README + docs/results
    python benchmarks/readme_results.py --splice-only   # rewrite from the last measurement (runs/readme)

Checkpoints default to the runs the README's recipes write (see DEFAULT_CHECKPOINTS); give
`--checkpoint MODEL=PATH` to use others. Models whose checkpoint is missing are left out (and
said so on stderr).
"""
from __future__ import annotations

import argparse
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINTS = {  # model -> checkpoint, in table order
    "tnet": "runs/bench_tnet/checkpoints/best.ckpt",
    "ats": "runs/bench3/ats/checkpoints/best.ckpt",
    "ips": "runs/bench3/ips/checkpoints/best.ckpt",
    "saccader": "runs/saccader/megapixel_mnist/policy/checkpoints/best.ckpt",
    "lowres_cnn": "runs/bench3/lowres_cnn/checkpoints/best.ckpt",
    "fullres_cnn": "runs/bench3/fullres_cnn/checkpoints/best.ckpt",
}
SCALING_MODELS = ("tnet", "ats", "ips", "lowres_cnn", "fullres_cnn")
COMPARE_PLOTS = ("accuracy_vs_gflops.png", "accuracy_vs_latency.png")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", nargs="+", default=[], metavar="MODEL=PATH", help="checkpoints to measure")
    p.add_argument("--digits", default=str(ROOT.parent / "shared" / "data" / "mnist"), help="MNIST IDX directory")
    p.add_argument("--out", default="runs/readme", help="measurement directory")
    p.add_argument("--readme", default="README.md")
    p.add_argument("--assets", default="docs/results", help="where the README's tables and PNGs are copied")
    p.add_argument("--sides", nargs="+", default=["1500", "3000", "6000"])
    p.add_argument("--threads", default="1", help="torch threads for every measurement (default 1: with 2 intra-op "
                   "threads, any other process on a 2-core machine stalls the pool, up to 70x)")
    p.add_argument("--splice-only", action="store_true", help="do not measure; rewrite from the files in --out")
    return p.parse_args(argv)


def checkpoints(items: list[str]) -> dict[str, str]:
    chosen = dict(DEFAULT_CHECKPOINTS)
    for item in items:
        model, sep, path = item.partition("=")
        if not sep:
            raise SystemExit(f"--checkpoint {item}: use MODEL=PATH")
        chosen[model] = path
    found = {m: p for m, p in chosen.items() if (ROOT / p).is_file() or Path(p).is_file()}
    for m in chosen.keys() - found.keys():
        print(f"[readme] no checkpoint for {m} at {chosen[m]}: left out", file=sys.stderr)
    return found


def run(cmd: list[str]) -> None:
    print("[readme] $ " + shlex.join(cmd), file=sys.stderr, flush=True)
    subprocess.run(cmd, cwd=ROOT, check=True)


def measure(args: argparse.Namespace, ckpts: dict[str, str]) -> None:
    out = Path(args.out)
    run([sys.executable, "benchmarks/megapixel_mnist.py", "--threads", args.threads, "--models", *ckpts,
         "--digits", args.digits,
         "--out", str(out / "compare"), "--checkpoint", *(f"{m}={p}" for m, p in ckpts.items())])
    scaled = [ckpts[m] for m in SCALING_MODELS if m in ckpts]
    run([sys.executable, "-m", "foveate.cli", "bench", "--scaling", "--threads", args.threads, "--checkpoints", *scaled,
         "--set", f"data.digits={args.digits}", "--sides", *args.sides, "--out", str(out / "scaling")])


def splice(readme: str, name: str, body: str) -> str:
    """Replace the block between <!-- results:name --> and <!-- /results:name --> with body."""
    pattern = re.compile(rf"(<!-- results:{name} -->\n).*?(<!-- /results:{name} -->)", re.DOTALL)
    if not pattern.search(readme):
        raise SystemExit(f"README has no <!-- results:{name} --> ... <!-- /results:{name} --> block")
    return pattern.sub(lambda m: m.group(1) + body.rstrip() + "\n" + m.group(2), readme)


def demote(markdown: str) -> str:
    """The reports' own '## ' titles become '#### ' under the README's section headings."""
    return re.sub(r"^## ", "#### ", markdown, flags=re.MULTILINE)


def publish(args: argparse.Namespace) -> None:
    out, assets = ROOT / args.out, ROOT / args.assets
    assets.mkdir(parents=True, exist_ok=True)
    compare_md = (out / "compare" / "results.md").read_text()
    scaling_md = (out / "scaling" / "scaling.md").read_text()
    for name in COMPARE_PLOTS:
        shutil.copyfile(out / "compare" / name, assets / name)
    shutil.copyfile(out / "scaling" / "scaling.png", assets / "scaling.png")
    (assets / "compare.md").write_text(compare_md)
    (assets / "scaling.md").write_text(scaling_md)
    rel = Path(args.assets).as_posix()
    readme_path = ROOT / args.readme
    readme = readme_path.read_text()
    plots = " ".join(f"![{n[:-4]}]({rel}/{n})" for n in COMPARE_PLOTS)
    readme = splice(readme, "compare", demote(compare_md) + "\n" + plots + "\n")
    readme = splice(readme, "scaling", demote(scaling_md) + f"\n![cost against image side]({rel}/scaling.png)\n")
    tmp = readme_path.with_suffix(".md.tmp")
    tmp.write_text(readme)
    tmp.replace(readme_path)
    print(f"[readme] rewrote {args.readme} and {args.assets}/", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not args.splice_only:
        measure(args, checkpoints(args.checkpoint))
    publish(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())

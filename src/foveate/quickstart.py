"""`foveate quickstart`: the whole path in a few minutes on built-in digits.

Makes a small Megapixel MNIST, trains TNet under a time budget, evaluates it at several
attention budgets, and writes predictions and explanation PNGs for a few test canvases.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

# A 256x256 Megapixel MNIST with 10 scribbles: level 1 sees the canvas at 96 px (digits ~10 px),
# level 2 reads 3 of a 4x4 grid of 90-px cells at about native scale.
QUICKSTART_CONFIG: dict[str, Any] = {
    "seed": 0,
    "model": {
        "name": "tnet", "num_classes": 10, "in_chans": 1, "backbone": "small_cnn",
        "levels": 2, "grid": 4, "overlap": 0.35, "base_resolution": 96, "locations": 3,
    },
    "data": {
        "name": "megapixel_mnist", "canvas_size": 256, "n_noise": 10, "n_train": 5000, "n_val": 256,
        "n_test": 500, "batch_size": 16, "num_workers": 1,
    },
    "optim": {"lr": 0.001},
    "trainer": {"max_epochs": 100, "accelerator": "cpu", "devices": 1, "enable_model_summary": False,
                "val_check_interval": 100},
    "eval": {"locations": [1, 2, 3, 5]},
}


def run_quickstart(out_dir: str | Path, digits: str | None = None, minutes: float = 5.0) -> dict[str, Any]:
    from .data import MegapixelConfig, load_digits, write_megapixel_mnist
    from .explain import draw_trace
    from .predict import load
    from .training import fit, test

    out_dir = Path(out_dir)
    cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in QUICKSTART_CONFIG.items()}
    cfg["output_dir"] = str(out_dir)
    cfg["data"]["digits"] = digits
    seconds = int(minutes * 60)
    cfg["trainer"]["max_time"] = {"seconds": seconds}
    result = fit(cfg)
    checkpoint = result["best_checkpoint"] or result["last_checkpoint"]
    metrics = test(checkpoint)

    samples = out_dir / "samples"
    data_cfg = MegapixelConfig(canvas_size=cfg["data"]["canvas_size"], n_noise=cfg["data"]["n_noise"],
                               seed=cfg["seed"])
    write_megapixel_mnist(samples, 8, split="test", pool=load_digits(digits)["test"], config=data_cfg)
    predictor = load(checkpoint)
    explain_dir = out_dir / "explain"
    explain_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted(samples.glob("*.png")):
        pred = predictor.predict(path)
        draw_trace(pred.image, pred.output, 0, explain_dir / path.name,
                   title=f"{path.name}: class {pred.label} (p={pred.probability:.2f})")
    summary = {f"test accuracy @{k.split('@')[-1]} locations" if "@" in k else k: f"{v:.3f}"
               for k, v in metrics.items()}
    summary.update({"checkpoint": checkpoint, "logs": str(out_dir / "logs"),
                    "sample canvases": str(samples), "explanations": str(explain_dir)})
    return summary

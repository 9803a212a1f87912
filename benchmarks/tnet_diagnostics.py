"""Why a TNet checkpoint reaches the accuracy it does on Megapixel MNIST: localisation or recognition?

For test canvases it measures
  1. digit visibility in the coarse view: the peak of each digit's and each scribble's blob in
     the level-1 view (the canvas resized to the base resolution, as the model sees it), and the
     AUC of telling digits from scribbles by that peak alone;
  2. localisation: the share of digits lying wholly inside a chosen level-2 cell, for the model's
     choice and for a random choice of the same number of cells;
  3. recognition: accuracy when the location module is replaced by an oracle that chooses the
     cells holding the digits (the classifier's ceiling at this budget), and the model's own.

    python benchmarks/tnet_diagnostics.py --checkpoint runs/bench_tnet/checkpoints/best.ckpt [--images 200]
"""
from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F
from torch import nn

import foveate
from foveate.geometry import child_boxes
from foveate.training.run import create_datamodule


class OracleLocator(nn.Module):
    """Scores cells by how many digits they hold wholly (ties broken towards the cell centre)."""

    def __init__(self, scores: torch.Tensor) -> None:
        super().__init__()
        self.scores = scores  # (B, g*g)

    def forward(self, cells, pooled):
        return torch.softmax(self.scores * 10.0, dim=-1)


def contains(cells: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """cells (C, 4), boxes (D, 4) -> (C, D) bool: box wholly inside cell."""
    c, b = cells[:, None], boxes[None]
    return (c[..., 0] <= b[..., 0]) & (c[..., 1] <= b[..., 1]) & (c[..., 2] >= b[..., 2]) & (c[..., 3] >= b[..., 3])


def auc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    return float((pos[:, None] > neg[None]).float().mean() + 0.5 * (pos[:, None] == neg[None]).float().mean())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True)
    p.add_argument("--images", type=int, default=200)
    p.add_argument("--locations", type=int, default=5)
    args = p.parse_args()
    predictor = foveate.load(args.checkpoint)
    model, cfg = predictor.model, predictor.config
    data = create_datamodule(cfg["data"], int(cfg.get("seed", 0)))
    data.setup("test")
    ds = data.datasets["test"]
    r, k = model.base_resolution, args.locations
    gen = torch.Generator().manual_seed(0)
    digit_peaks, noise_peaks = [], []
    stats = {"model_contained": 0, "random_contained": 0, "digits": 0, "model_correct": 0, "oracle_correct": 0}
    learned = model.locator
    for i in range(min(args.images, len(ds))):
        x, y = ds[i]
        s = ds.sample(i)
        h, w = x.shape[-2:]
        view = F.interpolate(x[None], size=(r, r), mode="bilinear", antialias=True)[0, 0]
        for boxes, out in ((s.digit_boxes, digit_peaks), (s.noise_boxes, noise_peaks)):
            for x1, y1, x2, y2 in torch.as_tensor(boxes).tolist():
                a, b = int(y1 * r / h), int(x1 * r / w)
                out.append(float(view[a:max(int(y2 * r / h + 1), a + 1), b:max(int(x2 * r / w + 1), b + 1)].max()))
        grid = model.grids(h, w)[0]
        cells = child_boxes(torch.tensor([[0.0, 0, w, h]]), grid)[0]  # (g*g, 4)
        digits = torch.as_tensor(s.digit_boxes, dtype=torch.float32)
        inside = contains(cells, digits)  # (g*g, D)
        with torch.no_grad():
            model.locator = learned
            out = model(x[None], locations=k)
            chosen = out.trace[0].chosen[0]
            stats["model_correct"] += int(out.logits.argmax() == y)
            rand = torch.zeros_like(chosen)
            rand[torch.randperm(chosen.numel(), generator=gen)[:k]] = True
            centre = -((cells[:, :2] + cells[:, 2:]) / 2 - torch.tensor([w / 2, h / 2])).norm(dim=1) / (h + w)
            model.locator = OracleLocator((inside.sum(1).float() + 0.01 * centre)[None])
            stats["oracle_correct"] += int(model(x[None], locations=k).logits.argmax() == y)
        stats["model_contained"] += int(inside[chosen].any(0).sum())
        stats["random_contained"] += int(inside[rand].any(0).sum())
        stats["digits"] += digits.shape[0]
    model.locator = learned
    n = min(args.images, len(ds))
    dp, npk = torch.tensor(digit_peaks), torch.tensor(noise_peaks)
    result = {
        "images": n, "locations": k, "base_resolution": r,
        "coarse_view_digit_peak_mean": round(float(dp.mean()), 3),
        "coarse_view_scribble_peak_mean": round(float(npk.mean()), 3),
        "coarse_view_digit_vs_scribble_auc": round(auc(dp, npk), 3),
        "digits_in_chosen_cells_model": round(stats["model_contained"] / stats["digits"], 3),
        "digits_in_chosen_cells_random": round(stats["random_contained"] / stats["digits"], 3),
        "accuracy_model": round(stats["model_correct"] / n, 3),
        "accuracy_oracle_locations": round(stats["oracle_correct"] / n, 3),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

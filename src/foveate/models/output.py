"""The one output type every foveate model returns."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor


@dataclass
class Glimpses:
    """The candidate regions one selection step scored, and which it read.

    boxes:  (B, C, 4) float, (x1, y1, x2, y2) in full-resolution pixels of the input image
            (half-open; may reach outside the image where the grid is padded).
    probs:  (B, C) the selection probability of each candidate.
    chosen: (B, C) bool, True where the region was read at the next level.
    heatmap: optional (B, h, w) attention over the whole image (row-major cells spanning it
            evenly), for models whose candidates are too many to list (ATS, IPS).
    order:  optional (B, C) long, 1-based position of each read region in the reading sequence
            (0: not read), for models that read one region after another (Saccader).
    """

    level: int
    boxes: Tensor
    probs: Tensor
    chosen: Tensor
    heatmap: Tensor | None = None
    order: Tensor | None = None

    def chosen_boxes(self, b: int) -> tuple[Tensor, Tensor]:
        """Boxes (k, 4) and probabilities (k,) of the regions read for image `b`."""
        mask = self.chosen[b]
        return self.boxes[b][mask], self.probs[b][mask]


@dataclass
class Output:
    """logits: (B, K); aux_logits: (B, N, K) one row per feature (None if the model has none);
    trace: one `Glimpses` per selection step, coarse to fine; extras: method-specific tensors
    the model's own loss needs (e.g. log-probabilities of the chosen cells)."""

    logits: Tensor
    aux_logits: Tensor | None = None
    trace: list[Glimpses] = field(default_factory=list)
    extras: dict[str, Tensor] = field(default_factory=dict)

    def probabilities(self) -> Tensor:
        return torch.softmax(self.logits, dim=-1)

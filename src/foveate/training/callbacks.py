"""Lightning callbacks."""
from __future__ import annotations

from collections.abc import Iterable

import lightning as L
import torch
from torch import Tensor, nn


class PreciseBatchNorm(L.Callback):
    """Recompute BatchNorm running statistics on `batches` training batches before every validation.

    Early in training the weights move fast and the momentum-averaged running statistics lag
    behind them; on sparse canvases the eval-mode model can then sit at chance while the
    train-mode model is well above it (measured: 20% vs 54% on an easy Megapixel MNIST run until
    recalibrated). Recalibrating makes validation, the best checkpoint and `test` reflect the weights.
    """

    def __init__(self, batches: int = 20) -> None:
        self.batches = batches

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.sanity_checking:
            self.calibrate(trainer, pl_module)

    def calibrate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.batches < 1 or trainer.datamodule is None:
            return
        inputs = (x.to(pl_module.device) for x, _ in trainer.datamodule.train_dataloader())
        recalibrate_batchnorm(pl_module, inputs, self.batches)


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, inputs: Iterable[Tensor], batches: int) -> None:
    """Replace every BatchNorm's running statistics by their average over `batches` train-mode
    forwards of `inputs` (the weights stay as they are)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    was_training = model.training
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    model.train()
    try:
        for i, x in enumerate(inputs):
            if i == batches:
                break
            model(x)
    finally:
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)

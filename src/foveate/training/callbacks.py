"""Lightning callbacks."""
from __future__ import annotations

import lightning as L
import torch
from torch import nn


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

    @torch.no_grad()
    def calibrate(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        norms = [m for m in pl_module.modules()
                 if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
        if not norms or self.batches < 1 or trainer.datamodule is None:
            return
        momenta = [m.momentum for m in norms]
        was_training = pl_module.training
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the calibration batches
        pl_module.train()
        for i, (x, _) in enumerate(trainer.datamodule.train_dataloader()):
            if i == self.batches:
                break
            pl_module(x.to(pl_module.device))
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        pl_module.train(was_training)

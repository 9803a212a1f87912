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
    forwards of `inputs` (the weights stay as they are).

    The running statistics stay untouched until the end: the batch statistics are collected by
    hooks while each BatchNorm runs with momentum 0. Models that use running statistics inside
    a train-mode forward (IPS scores patches in eval mode to choose what to train on) therefore
    see the old statistics throughout, instead of reset or half-accumulated ones.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not norms:
        return
    sums: dict[nn.Module, list] = {m: [0, 0.0, 0.0] for m in norms}  # batches, sum of means, sum of vars

    def collect(module: nn.Module, args: tuple) -> None:
        if module.training:
            x = args[0].detach()
            dims = [d for d in range(x.dim()) if d != 1]
            entry = sums[module]
            entry[0] += 1
            entry[1] = entry[1] + x.mean(dim=dims).float()
            entry[2] = entry[2] + x.var(dim=dims, unbiased=True).float()

    momenta = [m.momentum for m in norms]
    hooks = [m.register_forward_pre_hook(collect) for m in norms]
    was_training = model.training
    for m in norms:
        m.momentum = 0.0  # train-mode forwards leave the running statistics as they are
    model.train()
    try:
        for i, x in enumerate(inputs):
            if i == batches:
                break
            model(x)
    finally:
        for h in hooks:
            h.remove()
        for m, momentum in zip(norms, momenta):
            m.momentum = momentum
        model.train(was_training)
    for m, (count, mean, var) in sums.items():
        if count:  # a BatchNorm no forward reached keeps its statistics
            m.running_mean.copy_(mean / count)
            m.running_var.copy_(var / count)

"""One LightningModule for every model: the model supplies `loss(output, target)`; this adds
optimisation, logging and the replica-synchronised policy baseline."""
from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor

from ..models import create_model


class HardAttentionModule(L.LightningModule):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__()
        self.save_hyperparameters({"config": config})
        self.config = config
        self.model = create_model(**config["model"])
        self.optim_cfg = config.get("optim", {})
        self.test_budgets: list = list(config.get("eval", {}).get("locations", [None]))

    def forward(self, x: Tensor, locations=None):
        return self.model(x, locations=locations)

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        x, y = batch
        out = self.model(x)
        losses = self.model.loss(out, y)
        if hasattr(self.model, "update_baseline"):
            # Every replica must hold the same baseline: average the reward across processes.
            reward = self.trainer.strategy.reduce(losses["reward"], reduce_op="mean")
            self.model.update_baseline(reward)
        acc = (out.logits.argmax(-1) == y).float().mean()
        self.log("train/loss", losses["loss"], prog_bar=True)
        self.log("train/acc", acc, prog_bar=True)
        self.log_dict({f"train/{k}": v for k, v in losses.items() if k != "loss"})
        return losses["loss"]

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        out = self.model(x)
        self.log("val/loss", self.model.loss(out, y)["loss"], sync_dist=True)
        self.log("val/acc", (out.logits.argmax(-1) == y).float().mean(), prog_bar=True, sync_dist=True)

    def test_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        for k in self.test_budgets:
            out = self.model(x, locations=k)
            name = "test/acc" if k is None else f"test/acc@{_budget_name(k)}"
            self.log(name, (out.logits.argmax(-1) == y).float().mean(), sync_dist=True)

    def configure_optimizers(self):
        cfg = self.optim_cfg
        opt = torch.optim.Adam(self.parameters(), lr=float(cfg.get("lr", 1e-3)),
                               weight_decay=float(cfg.get("weight_decay", 0.0)))
        total = max(1, int(self.trainer.estimated_stepping_batches))
        drop_at = int(float(cfg.get("lr_drop_at", 0.8)) * total)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[max(1, drop_at)],
                                                     gamma=float(cfg.get("lr_drop_factor", 0.1)))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _budget_name(k) -> str:
    return "-".join(str(v) for v in k) if isinstance(k, (list, tuple)) else str(k)

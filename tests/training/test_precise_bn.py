import torch
from torch import nn

from foveate.training.callbacks import recalibrate_batchnorm


def test_statistics_are_the_average_over_batches():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
    batches = [torch.randn(8, 1, 10, 10) * (i + 1) + i for i in range(5)]
    model[1].running_mean.fill_(123.0)
    recalibrate_batchnorm(model.eval(), iter(batches), 4)
    with torch.no_grad():
        feats = [model[0](b) for b in batches[:4]]
    mean = torch.stack([f.mean(dim=(0, 2, 3)) for f in feats]).mean(0)
    var = torch.stack([f.var(dim=(0, 2, 3)) for f in feats]).mean(0)
    torch.testing.assert_close(model[1].running_mean, mean)
    torch.testing.assert_close(model[1].running_var, var)
    assert not model.training and model[1].momentum == 0.1  # restored


class ScansInEvalMode(nn.Module):
    """Like IPS: an eval-mode pass inside the train-mode forward records the running mean it saw."""

    def __init__(self):
        super().__init__()
        self.norm = nn.BatchNorm1d(2)
        self.seen = []

    def forward(self, x):
        self.norm.eval()
        self.seen.append(self.norm.running_mean.clone())
        self.norm(x)
        self.norm.train()
        return self.norm(x)


def test_eval_mode_passes_during_calibration_see_the_old_statistics():
    model = ScansInEvalMode()
    model.norm.running_mean.fill_(5.0)
    recalibrate_batchnorm(model, (torch.randn(16, 2) + 1 for _ in range(3)), 3)
    assert all(torch.equal(s, torch.full((2,), 5.0)) for s in model.seen)
    assert (model.norm.running_mean - 1).abs().max() < 0.5  # replaced once, at the end

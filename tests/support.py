"""Helpers several test files use (importable because tests/conftest.py puts this folder on sys.path)."""
import torch

from foveate.training.module import HardAttentionModule

# A tiny Megapixel MNIST split (144-px canvases) for checkpoints that are measured, not trained.
TINY_DATA = {"name": "megapixel_mnist", "digits": None, "canvas_size": 144, "n_train": 8, "n_val": 4, "n_test": 4,
             "batch_size": 4, "num_workers": 0}


class Spy(torch.nn.Module):
    """Wraps a backbone and records every batch it is called on."""

    def __init__(self, inner):
        super().__init__()
        self.inner, self.calls = inner, []
        self.num_features, self.fmap_channels = inner.num_features, inner.fmap_channels

    def forward(self, x):
        self.calls.append(x.detach().clone())
        return self.inner(x)


def untrained_checkpoint(path, model_cfg, locations=(None,), data=None):
    """A foveate checkpoint of an untrained model (no training needed to measure it)."""
    cfg = {"seed": 0, "model": model_cfg, "data": data or TINY_DATA, "eval": {"locations": list(locations)}}
    torch.save({"state_dict": HardAttentionModule(cfg).state_dict(), "hyper_parameters": {"config": cfg},
                "epoch": 0, "global_step": 2}, path)
    return str(path)


def monotone(model: torch.nn.Module) -> torch.nn.Module:
    """Positive weights, identity BatchNorm: every ReLU passes, so the input-gradient support of an
    output cell is exactly its receptive field."""
    model.eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.uniform_(0.01, 0.1)
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.weight.fill_(1.0)
                m.bias.zero_()
                m.running_mean.zero_()
                m.running_var.fill_(1.0)
    return model

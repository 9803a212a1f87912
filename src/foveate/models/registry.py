"""Models created by name: `create_model("tnet", num_classes=10, backbone="small_cnn", ...)`."""
from __future__ import annotations

from torch import nn

from ..registry import Registry

MODELS = Registry("model")
register_model = MODELS.register
list_models = MODELS.names


def create_model(name: str, **kwargs) -> nn.Module:
    return MODELS.create(name, **kwargs)

"""Models created by name: `create_model("tnet", num_classes=10, backbone="small_cnn", ...)`."""
from __future__ import annotations

from typing import Callable

from torch import nn

from ..errors import FoveateError

_REGISTRY: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str):
    def wrap(cls):
        _REGISTRY[name] = cls
        return cls

    return wrap


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def create_model(name: str, **kwargs) -> nn.Module:
    if name not in _REGISTRY:
        raise FoveateError(f"unknown model {name!r}; known: {', '.join(list_models())}")
    try:
        return _REGISTRY[name](**kwargs)
    except TypeError as e:
        raise FoveateError(f"bad arguments for model {name!r}: {e}") from None

"""Small rules every model applies the same way: pixel range, targets (input checks: `sources.as_source`)."""
from __future__ import annotations

from torch import Tensor

from ..errors import FoveateError


def network_range(x: Tensor) -> Tensor:
    """[0, 1] pixels -> [-1, 1], the range every foveate network is trained on."""
    return x * 2.0 - 1.0


def class_targets(target: Tensor, model: str) -> Tensor:
    """The (B,) class indices a single-label classifier trains on; multi-label targets are refused."""
    if target.dtype.is_floating_point or target.ndim != 1:
        raise FoveateError(f"{model} trains on one class index per image; multi-label targets "
                           "(label: multi) are not supported")
    return target

"""Choosing regions: top-k and the policy-gradient losses that train a selector."""
from .policy import RunningBaseline, reinforce_loss
from .topk import topk_cells

__all__ = ["RunningBaseline", "reinforce_loss", "topk_cells"]

"""Choosing regions: top-k, sampling, the estimators and policy-gradient losses that train a selector."""
from .estimators import (
           entropy_regulariser,
           estimator_coefficients,
           estimator_weights,
           expectation,
)
from .policy import RunningBaseline, reinforce_loss
from .sampling import sample_with_replacement, sample_without_replacement
from .topk import topk_cells

__all__ = ["RunningBaseline", "entropy_regulariser", "estimator_coefficients", "estimator_weights", "expectation",
           "reinforce_loss", "sample_with_replacement", "sample_without_replacement", "topk_cells"]

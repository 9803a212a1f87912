"""Choosing regions: top-k, sampling, the estimators and policy-gradient losses that train a selector."""
from .estimators import (
           entropy_regulariser,
           estimator_coefficients,
           estimator_weights,
           expectation,
)
from .policy import (
           RunningBaseline,
           batch_mean_reinforce,
           reinforce_loss,
           vimco_loss,
           vimco_signal,
)
from .sampling import sample_with_replacement, sample_without_replacement
from .topk import topk_cells

__all__ = ["RunningBaseline", "batch_mean_reinforce", "entropy_regulariser", "estimator_coefficients",
           "estimator_weights", "expectation", "reinforce_loss", "sample_with_replacement", "sample_without_replacement", "topk_cells", "vimco_loss",
           "vimco_signal"]

"""Small reusable network blocks."""
from .attention import CrossAttentionPool
from .expatt import ExpAtt, attention_matrices, dense_expatt, expatt
from .level_norm import LevelBatchNorm2d, set_level, split_batchnorm_by_level
from .posenc import sinusoid_encoding

__all__ = ["CrossAttentionPool", "ExpAtt", "LevelBatchNorm2d", "attention_matrices", "dense_expatt", "expatt",
           "set_level", "sinusoid_encoding", "split_batchnorm_by_level"]

"""Training with Lightning: the module every model trains in, and fit / test entry points."""
from .checkpoint import load_checkpoint, read_checkpoint
from .module import HardAttentionModule
from .run import fit, test

__all__ = ["HardAttentionModule", "fit", "load_checkpoint", "read_checkpoint", "test"]

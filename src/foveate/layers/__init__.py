"""Small reusable network blocks."""
from .posenc import sinusoid_encoding

__all__ = ["sinusoid_encoding"]

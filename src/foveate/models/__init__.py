"""Models by name; every model returns an `Output`. Importing this package registers them."""
from . import ats, baselines, ips, saccader, tnet  # noqa: F401  (registers)
from .output import Glimpses, Output
from .registry import create_model, list_models, register_model

__all__ = ["Glimpses", "Output", "create_model", "list_models", "register_model"]

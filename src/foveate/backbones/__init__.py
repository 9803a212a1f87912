"""Backbones by name. Importing this package registers the built-in ones."""
from . import ats_cnn, bagnet, expatt_resnet, small_cnn  # noqa: F401  (registers)
from .registry import Backbone, create_backbone, list_backbones, register_backbone

__all__ = ["Backbone", "create_backbone", "list_backbones", "register_backbone"]

"""foveate: hard-attention classification of images too large to process whole."""
from .backbones import create_backbone, list_backbones
from .errors import FoveateError
from .models import Glimpses, Output, create_model, list_models
from .predict import Prediction, Predictor, load

__version__ = "0.1.0"
__all__ = ["FoveateError", "Glimpses", "Output", "Prediction", "Predictor", "create_backbone", "create_model",
           "list_backbones", "list_models", "load"]

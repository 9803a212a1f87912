"""Inference on user images: `foveate.load(checkpoint).predict(image, locations=k)`."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .errors import FoveateError
from .models import Output
from .sources.region import RegionSource, TensorSource


@dataclass
class Prediction:
    """label: predicted class index; probs: (K,); output: the model's `Output` for a batch of one
    (its trace holds every level's candidate boxes in full-resolution pixels)."""

    label: int
    probs: Tensor
    output: Output
    image: RegionSource  # the image as the model read it (one image; `view(size)` draws it)

    @property
    def probability(self) -> float:
        return float(self.probs[self.label])

    def top(self, k: int = 5) -> list[tuple[int, float]]:
        p, i = self.probs.topk(min(k, self.probs.numel()))
        return [(int(c), float(v)) for c, v in zip(i, p)]


class Predictor:
    def __init__(self, model: torch.nn.Module, config: dict, device: str | torch.device = "cpu",
                 allow_large: bool = False) -> None:
        self.model = model.to(device).eval()
        self.allow_large = allow_large  # lift Pillow's decompression-bomb guard for known files
        self.config = config
        self.device = torch.device(device)

    @property
    def in_chans(self) -> int:
        return int(self.model.in_chans)

    @property
    def classes(self) -> list[str] | None:
        """Class names by index, when training recorded them (data.classes; folder, CSV and fMoW data)."""
        names = self.config.get("data", {}).get("classes")
        return [str(n) for n in names] if isinstance(names, list) else None

    def as_tensor(self, image) -> Tensor:
        """A path, a PIL image, a numpy array (H, W[, C]) or a tensor (C, H, W) -> (C, H, W) float in [0, 1]."""
        if isinstance(image, (str, Path)):
            from .sources import load_image

            return load_image(image, self.in_chans, allow_large=self.allow_large)
        if not isinstance(image, Tensor):
            from PIL import Image

            if isinstance(image, Image.Image):  # same mode handling as files (16-bit scaled, not clipped)
                from .sources import pil_to_tensor

                return pil_to_tensor(image, self.in_chans)
            array = np.asarray(image)
            white = {np.dtype(np.uint8): 255.0, np.dtype(np.uint16): 65535.0}.get(array.dtype)
            if white is None and not np.issubdtype(array.dtype, np.floating):
                raise FoveateError(f"array of dtype {array.dtype}: use uint8, uint16 or floats in [0, 1]")
            tensor = torch.from_numpy(np.ascontiguousarray(array)).float()
            if white is not None:
                tensor = tensor / white
            image = tensor.permute(2, 0, 1) if tensor.ndim == 3 else tensor[None]
        if image.ndim == 2:
            image = image[None]
        if image.ndim != 3 or image.shape[0] != self.in_chans:
            raise FoveateError(f"image tensor of shape {tuple(image.shape)} does not match the model's "
                               f"{self.in_chans}-channel (C, H, W) input")
        image = image.float()
        if image.numel() and (image.min() < 0 or image.max() > 1):
            raise FoveateError(f"image values range over [{float(image.min()):g}, {float(image.max()):g}]; "
                               "the model expects [0, 1]")
        return image

    def as_source(self, image) -> RegionSource:
        """A path (opened lazily where the format allows: tiled/pyramidal TIFF, OpenSlide) or
        anything `as_tensor` takes -> a source of one image on the model's device."""
        if isinstance(image, RegionSource):
            return image
        if isinstance(image, (str, Path)):
            from .sources import open_source

            return open_source(image, self.in_chans, allow_large=self.allow_large, device=str(self.device))
        return TensorSource(self.as_tensor(image)[None].to(self.device))

    @torch.no_grad()
    def predict(self, image, locations=None) -> Prediction:
        src = self.as_source(image)
        if src.batch != 1:
            raise FoveateError(f"{src.name}: predict takes one image, got a batch of {src.batch}")
        out = self.model(src, locations=locations)
        probs = out.probabilities()[0].cpu()
        return Prediction(label=int(probs.argmax()), probs=probs, output=out, image=src)


def load(checkpoint: str | Path, device: str | torch.device = "cpu") -> Predictor:
    """A predictor for a checkpoint written by `foveate fit`."""
    from .training import load_checkpoint

    module = load_checkpoint(checkpoint, map_location=device)
    return Predictor(module.model, module.config, device)

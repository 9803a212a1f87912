"""Reading checkpoints back, with one-line errors for anything that is not a foveate checkpoint."""
from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch

from ..errors import FoveateError


def read_checkpoint(path: str | Path) -> dict:
    """The raw checkpoint dict, validated to hold a foveate config and a state dict."""
    path = Path(path)
    if not path.is_file():
        raise FoveateError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError, ValueError,
            AttributeError, ImportError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FoveateError(f"{path}: not a readable checkpoint ({first[:200]})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise FoveateError(f"{path}: not a foveate checkpoint (no state_dict)")
    cfg = ckpt.get("hyper_parameters", {}).get("config")
    if not isinstance(cfg, dict) or not isinstance(cfg.get("model"), dict) or "name" not in cfg["model"]:
        raise FoveateError(f"{path}: not a foveate checkpoint (no model config)")
    return ckpt


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu"):
    """The `HardAttentionModule` saved in `path`, in eval mode."""
    from .module import HardAttentionModule

    ckpt = read_checkpoint(path)
    module = HardAttentionModule(ckpt["hyper_parameters"]["config"])
    try:
        module.load_state_dict(ckpt["state_dict"])
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise FoveateError(f"{path}: weights do not match the model config ({first[:200]})") from None
    return module.to(map_location).eval()

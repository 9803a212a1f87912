"""Training and evaluation entry points used by the CLI (and usable from Python)."""
from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ..errors import FoveateError
from ..fileio import atomic_write_bytes
from .callbacks import PreciseBatchNorm
from .checkpoint import load_checkpoint
from .module import HardAttentionModule


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write checkpoints to a temporary file beside the target, then rename: an interrupted save
    never leaves a truncated checkpoint or destroys the previous one."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer)
        atomic_write_bytes(path, buffer.getvalue())


def create_datamodule(cfg: dict[str, Any], seed: int = 0) -> L.LightningDataModule:
    from ..data import DATA_MODULES

    cfg = dict(cfg)
    name = cfg.pop("name", "megapixel_mnist")
    if name not in DATA_MODULES:
        raise FoveateError(f"unknown data set {name!r}; known: {', '.join(DATA_MODULES)}")
    cfg.setdefault("seed", seed)
    try:
        return DATA_MODULES[name](**cfg)
    except TypeError as e:
        raise FoveateError(f"bad data arguments: {e}") from None


def with_classes(cfg: dict[str, Any], data: L.LightningDataModule) -> dict[str, Any]:
    """Record the data's class names (data.classes) in the config the checkpoint keeps, so test and
    predict use the same index -> name map; model.num_classes defaults to their number."""
    classes = getattr(data, "classes", None)
    if not isinstance(classes, list):
        return cfg
    model = dict(cfg["model"])
    model.setdefault("num_classes", len(classes))
    if model["num_classes"] != len(classes):
        raise FoveateError(f"model.num_classes is {model['num_classes']} but the data has {len(classes)} classes")
    return {**cfg, "model": model, "data": {**cfg.get("data", {}), "classes": classes}}


def _trainer(cfg: dict[str, Any], out_dir: Path, **overrides) -> L.Trainer:
    tcfg = {"max_epochs": 10, "accelerator": "cpu", "devices": 1, "log_every_n_steps": 10,
            "deterministic": True}
    tcfg.update(cfg.get("trainer", {}))
    tcfg.update(overrides)
    loggers = [CSVLogger(str(out_dir), name="logs")]
    try:
        import tensorboard  # noqa: F401

        loggers.append(TensorBoardLogger(str(out_dir), name="tb"))
    except ImportError:
        pass
    ckpt_dir = str(out_dir / "checkpoints")
    callbacks = [  # best by validation accuracy; last after every validation (resume point)
        ModelCheckpoint(dirpath=ckpt_dir, filename="best", monitor="val/acc", mode="max",
                        auto_insert_metric_name=False, enable_version_counter=False),
        ModelCheckpoint(dirpath=ckpt_dir, filename="last", enable_version_counter=False),
        PreciseBatchNorm(int(cfg.get("optim", {}).get("precise_bn_batches", 20))),
    ]
    try:
        return L.Trainer(logger=loggers, callbacks=callbacks, plugins=[AtomicCheckpointIO()],
                         default_root_dir=str(out_dir), **tcfg)
    except (TypeError, ValueError) as e:
        raise FoveateError(f"bad trainer arguments: {e}") from None


def fit(cfg: dict[str, Any], resume: str | None = None) -> dict[str, Any]:
    """Train; returns the final validation metrics and checkpoint paths. A config with `stages`
    runs them one after another (`fit_stages`)."""
    if cfg.get("stages"):
        return fit_stages(cfg, resume)
    seed = int(cfg.get("seed", 0))
    L.seed_everything(seed, workers=True, verbose=False)
    out_dir = Path(cfg.get("output_dir", "runs/experiment"))
    data = create_datamodule(cfg.get("data", {}), seed)
    cfg = with_classes(cfg, data)
    module = HardAttentionModule(cfg)
    if cfg.get("init_from"):
        init_weights(module, cfg["init_from"])
    trainer = _trainer(cfg, out_dir)
    ckpt_path = None
    if resume == "auto":
        last = out_dir / "checkpoints" / "last.ckpt"
        ckpt_path = str(last) if last.is_file() else None
    elif resume:
        if not Path(resume).is_file():
            raise FoveateError(f"{resume}: checkpoint to resume from not found")
        ckpt_path = resume
    trainer.fit(module, datamodule=data, ckpt_path=ckpt_path)
    last = out_dir / "checkpoints" / "last.ckpt"
    for cb in trainer.callbacks:
        if isinstance(cb, PreciseBatchNorm):
            cb.calibrate(trainer, module)
    trainer.save_checkpoint(last)  # also when a time limit stopped training between validations
    best = trainer.checkpoint_callbacks[0].best_model_path
    return {
        "metrics": {k: float(v) for k, v in trainer.callback_metrics.items()},
        "best_checkpoint": best or str(last),
        "last_checkpoint": str(last),
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "output_dir": str(out_dir),
    }


def fit_stages(cfg: dict[str, Any], resume: str | None = None) -> dict[str, Any]:
    """A multi-stage recipe in one config: `stages` is a list of mappings, each a `name` and
    overrides of the base config, as dotted keys (`model.stage: pretrain`) or nested sections
    (`trainer: {max_time: ...}`). Stage i trains in OUTPUT_DIR/<name> from stage i-1's last
    checkpoint (the first from the base `init_from`, if any). resume="auto" skips finished
    stages (those that wrote stage.json) and resumes the first unfinished one from its last.ckpt.
    Returns the last stage's result, with every stage's result under "stages"."""
    import json
    import time

    from ..config import apply_overrides

    base = {k: v for k, v in cfg.items() if k != "stages"}
    root = Path(cfg.get("output_dir", "runs/experiment"))
    if resume not in (None, "auto"):
        raise FoveateError("a staged config resumes with --resume auto only (each stage has its own checkpoints)")
    results: list[dict[str, Any]] = []
    init_from = base.get("init_from")
    for i, stage in enumerate(cfg["stages"]):
        if not isinstance(stage, dict):
            raise FoveateError(f"stages[{i}] must be a mapping of overrides, got {type(stage).__name__}")
        stage = dict(stage)
        name = str(stage.pop("name", f"stage{i + 1}"))
        dotted = [f"{k}={json.dumps(v)}" for k, v in stage.items() if "." in k]
        nested = {k: v for k, v in stage.items() if "." not in k}
        stage_cfg = _merge(apply_overrides(base, dotted, f"stages[{i}]"), nested)
        stage_cfg["output_dir"] = str(root / name)
        stage_cfg["init_from"] = init_from
        done = root / name / "stage.json"
        if resume == "auto" and done.is_file():
            result = json.loads(done.read_text())
        else:
            start = time.perf_counter()
            result = fit(stage_cfg, resume=resume)
            result.update(stage=name, minutes=(time.perf_counter() - start) / 60)
            atomic_write_bytes(done, json.dumps(result, indent=1).encode())  # the marker --resume auto trusts
        results.append(result)
        init_from = result["last_checkpoint"]
    return {**results[-1], "stages": results}


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Nested dicts merged key by key; other values replaced."""
    out = dict(base)
    for k, v in update.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def init_weights(module: HardAttentionModule, checkpoint: str) -> None:
    """Start from another run's weights (e.g. a lower-resolution stage), not its optimiser state."""
    source = load_checkpoint(checkpoint)
    try:
        module.load_state_dict(source.state_dict())
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise FoveateError(f"{checkpoint}: init_from weights do not fit this model ({first[:200]})") from None


def test(checkpoint: str, data_overrides: dict[str, Any] | None = None, locations: list | None = None,
         trainer_overrides: dict[str, Any] | None = None) -> dict[str, float]:
    """Evaluate a checkpoint on its data set's test split; returns {metric: value}."""
    module = load_checkpoint(checkpoint)
    cfg = module.config
    if locations is not None:
        module.test_budgets = list(locations)
    if hasattr(module.model, "budget"):  # impossible budgets fail here, not mid-way through testing
        for k in module.test_budgets:
            if k is not None:
                module.model.budget(k)
    data_cfg = dict(cfg.get("data", {}))
    data_cfg.update(data_overrides or {})
    data = create_datamodule(data_cfg, int(cfg.get("seed", 0)))
    out_dir = Path(cfg.get("output_dir", "runs/experiment"))
    overrides = {"logger": False, "enable_checkpointing": False, "devices": 1, "strategy": "auto"}
    overrides.update(trainer_overrides or {})
    trainer = L.Trainer(**{"accelerator": cfg.get("trainer", {}).get("accelerator", "cpu"),
                           "default_root_dir": str(out_dir), **overrides})
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    results = trainer.test(module, datamodule=data, verbose=False)
    return {k: float(v) for k, v in results[0].items()}

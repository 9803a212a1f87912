"""Experiment configs: one YAML file per experiment, with dotted command-line overrides.

Layout (every section optional except model):
    seed: 0
    output_dir: runs/NAME
    init_from: CHECKPOINT                              # start from these weights (curriculum stages)
    model:   {name: tnet, num_classes: 10, ...}        # kwargs of create_model
    data:    {name: megapixel_mnist, ...}              # kwargs of the data module
    optim:   {lr: 0.001, weight_decay: 0, lr_drop_at: 0.8, lr_drop_factor: 0.1, precise_bn_batches: 20}
    trainer: {max_epochs: 10, accelerator: cpu, devices: 1, ...}   # lightning.Trainer kwargs
    eval:    {locations: [1, 2, 3, 5]}                 # budgets `foveate test` reports
    stages:  [{name: a, model.stage: x, trainer: {max_time: ...}}, ...]   # optional: run in turn,
                                                       # each from the previous one's last checkpoint
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from .errors import FoveateError

SECTIONS = {"seed", "output_dir", "init_from", "model", "data", "optim", "trainer", "eval", "stages"}


def load_config(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise FoveateError(f"{path}: config file not found")
    try:
        cfg = yaml.safe_load(path.read_text())
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        where = getattr(e, "problem_mark", None)
        line = f" (line {where.line + 1})" if where is not None else ""
        raise FoveateError(f"{path}: not valid YAML{line}") from None
    cfg = apply_overrides(cfg if cfg is not None else {}, overrides or [], str(path))
    return validate(cfg, str(path))


def apply_overrides(cfg: dict, overrides: list[str], source: str = "config") -> dict:
    """`a.b=c` sets cfg["a"]["b"] = yaml(c)."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise FoveateError(f"override {item!r} is not of the form key.sub=value")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            raise FoveateError(f"override {item!r}: value is not valid YAML") from None
        node = cfg
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise FoveateError(f"override {item!r}: {p} is not a section")
        node[leaf] = value
    return cfg


def validate(cfg: Any, source: str) -> dict[str, Any]:
    if not isinstance(cfg, dict):
        raise FoveateError(f"{source}: a config must be a mapping of sections, got {type(cfg).__name__}")
    unknown = set(cfg) - SECTIONS
    if unknown:
        raise FoveateError(f"{source}: unknown section(s) {', '.join(sorted(unknown))}; "
                           f"allowed: {', '.join(sorted(SECTIONS))}")
    if cfg.get("stages") is not None and not (isinstance(cfg["stages"], list) and all(isinstance(s, dict) for s in cfg["stages"])):
        raise FoveateError(f"{source}: stages must be a list of mappings (name and overrides per stage)")
    for section in ("model", "data", "optim", "trainer", "eval"):
        if section in cfg and not isinstance(cfg[section], dict):
            raise FoveateError(f"{source}: section {section!r} must be a mapping")
    if "model" not in cfg or "name" not in cfg["model"]:
        raise FoveateError(f"{source}: missing model.name")
    if "seed" in cfg and not isinstance(cfg["seed"], int):
        raise FoveateError(f"{source}: seed must be an integer, got {cfg['seed']!r}")
    optim = cfg.get("optim", {})
    for key in ("lr", "weight_decay", "lr_drop_at", "lr_drop_factor", "precise_bn_batches"):
        if key in optim and (not isinstance(optim[key], (int, float)) or optim[key] < 0):
            raise FoveateError(f"{source}: optim.{key} must be a non-negative number, got {optim[key]!r}")
    return cfg

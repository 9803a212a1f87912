"""Peak inference memory of a model, measured in a fresh Python process.

The measuring process has trained or evaluated other models, grown its allocator caches and
started thread pools, so its own high-water mark says nothing about one model. `peak_memory`
starts a new interpreter (`python -c ...`) that loads the checkpoint and one image, resets its
RSS high-water mark (VmHWM, via /proc/self/clear_refs), runs `forwards` batch-1 forwards under
torch.inference_mode and reports how far the peak rose above the RSS just before them: weights
and input are excluded, activations, temporaries and one-time costs of a first forward (code
paged in, thread pools started) are included. A second round of as many forwards ("warm") shows
the steady state. Linux only (/proc).
"""
from __future__ import annotations

import gc
import importlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..errors import FoveateError
from ..sources.region import TensorSource
from .measure import Budget, budget_name

PAGE_KIB = os.sysconf("SC_PAGE_SIZE") // 1024 if hasattr(os, "sysconf") else 4


def reset_peak_rss() -> bool:
    """Reset this process's RSS high-water mark (VmHWM) to its current RSS; False if not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def current_rss_kib() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE_KIB


def peak_rss_kib() -> int:
    """VmHWM, not ru_maxrss: a child's ru_maxrss also keeps the RSS its parent had at fork."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))


def added_by_forwards(model: nn.Module, image: Tensor, k: Budget, forwards: int = 3) -> dict[str, Any]:
    """MiB the RSS peak of `forwards` forwards of `image` (1, C, H, W) rises above the RSS just before them."""
    gc.collect()
    exact = reset_peak_rss()
    before = current_rss_kib()
    with torch.inference_mode():
        for _ in range(forwards):
            model(image, locations=k)
    peak = peak_rss_kib()
    return {"added_mib": (peak - before) / 1024, "rss_before_mib": before / 1024, "peak_mib": peak / 1024,
            "peak_reset": exact}


def probe(spec: dict[str, Any]) -> dict[str, Any]:
    """Runs in the fresh process: imports `spec["imports"]` (modules registering models that are
    not part of foveate), loads the checkpoint and the image, then measures a cold and a warm round."""
    from .engine import load_entry

    sys.path.extend(p for p in spec.get("sys_path", []) if p not in sys.path)
    for module in spec.get("imports", []):
        importlib.import_module(module)
    torch.set_num_threads(int(spec["threads"]))
    model = load_entry(spec["checkpoint"], spec.get("model_attrs")).model
    saved = torch.load(spec["image"], weights_only=True)
    # a list is a pyramid (full resolution first): the model reads it through a source
    image = TensorSource(saved[0][None], [t[None] for t in saved[1:]]) if isinstance(saved, list) else saved[None]
    k, forwards = spec["locations"], int(spec["forwards"])
    cold = added_by_forwards(model, image, k, forwards)
    return {**cold, "warm": added_by_forwards(model, image, k, forwards)}


def _child_main() -> None:
    """Entry point of the fresh process: spec JSON in argv[1], result JSON as the last stdout line."""
    print(json.dumps(probe(json.loads(sys.argv[1]))))


def peak_memory(checkpoint: str | Path, image: Tensor | list[Tensor], k: Budget, threads: int = 2, forwards: int = 3,
                imports: Sequence[str] = (), model_attrs: dict[str, Any] | None = None) -> dict[str, Any]:
    """Peak inference memory of the model in `checkpoint` at budget `k` on `image` (C, H, W) (or a
    pyramid: a list of (C, H_l, W_l) levels, full resolution first, read as a `TensorSource`), in a
    fresh process (see the module docstring). Returns {"added_mib", "rss_before_mib", "peak_mib",
    "peak_reset", "warm": {...}}; "added_mib" is the number to report.

    `imports`: modules the child imports before loading, for models registered outside foveate
    (the child also sees this process's sys.path).
    """
    with tempfile.TemporaryDirectory(prefix="foveate-memory-") as tmp:
        path = Path(tmp) / "image.pt"
        torch.save([t.detach().cpu().clone() for t in image] if isinstance(image, list)
                   else image.detach().cpu().clone(), path)
        spec = {"checkpoint": str(Path(checkpoint).resolve()), "image": str(path), "locations": k,
                "threads": threads, "forwards": forwards, "imports": list(imports), "model_attrs": model_attrs,
                "sys_path": [p for p in sys.path if p]}
        code = "from foveate.bench.memory import _child_main; _child_main()"
        root = str(Path(__file__).resolve().parents[2])  # where `foveate` is importable from
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)}
        proc = subprocess.run([sys.executable, "-c", code, json.dumps(spec)], capture_output=True, text=True,
                              env=env, check=False)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        raise FoveateError(f"memory probe of {checkpoint} at locations={budget_name(k)} failed: {tail[0]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])

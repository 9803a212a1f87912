"""Multi-process data parallel training on CPU (gloo): two processes, tiny data."""
import os
import subprocess
import sys

import torch


def test_fit_with_two_processes(tmp_path, write_config):
    cfg = write_config(tmp_path / "ddp.yaml", {
        "output_dir": str(tmp_path / "run"),
        "trainer.strategy": "ddp",
        "trainer.devices": 2,
        "data.n_train": 64,
    })
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "foveate.cli", "fit", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)
    # 64 images, batch 16 per process, 2 processes: 2 optimiser steps in the epoch
    assert ckpt["global_step"] == 2
    # the policy baseline moved off its initial value (it is all-reduced across replicas)
    assert float(ckpt["state_dict"]["model.baseline.value"]) != 0.5

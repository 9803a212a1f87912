"""A 20,000 x 20,000 px pyramidal TIFF (a Megapixel MNIST canvas blown up, written tile by tile) is
classified by TNet and ATS through open_source with a peak-RSS growth far below the 400 MB its
decoded uint8 array would take (1.6 GB as the float32 tensor models take)."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SIDE = 20_000
BOUND_MIB = 150  # the decoded uint8 array alone: 381 MiB

CHILD = r"""
import json, sys
import torch
from foveate import create_model
from foveate.bench.memory import current_rss_kib, peak_rss_kib, reset_peak_rss
from foveate.sources import open_source

torch.set_num_threads(1)
models = {
    "tnet": create_model("tnet", num_classes=10, in_chans=1, backbone="small_cnn", levels=2, grid=12,
                         base_resolution=192, locations=5),
    # ATS's view is a fixed fraction of the image (the model's `scale`): 0.03 -> a 600 x 600 view here
    "ats": create_model("ats", num_classes=10, in_chans=1, scale=0.03, patch_size=50, locations=10),
}
with torch.inference_mode():  # warm up kernels and thread pools on a small image (not what is measured)
    for m in models.values():
        m.eval()(torch.zeros(1, 1, 400, 400))
result = {}
for name, model in models.items():
    src = open_source(sys.argv[1], 1)
    reset_peak_rss()
    before = current_rss_kib()
    with torch.inference_mode():
        out = model(src)
    result[name] = {"added_mib": (peak_rss_kib() - before) / 1024, "tiles": src.tiles_decoded,
                    "decoded_mib": src.bytes_decoded / 2**20, "levels": len(src.level_sizes),
                    "classes": int(out.logits.shape[-1])}
print(json.dumps(result))
"""


def _benchmark_module():
    spec = importlib.util.spec_from_file_location("gigapixel_benchmark", REPO / "benchmarks" / "gigapixel.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_20k_tiff_is_classified_in_bounded_memory(tmp_path):
    bench = _benchmark_module()
    canvas, _ = bench.megapixel_canvas(0, None)  # the built-in digits: no download
    path = tmp_path / "big.tif"
    info = bench.build_tiff(path, SIDE, canvas, tile=512)
    assert info["levels"] >= 6 and path.stat().st_size < 20 * 2**20  # sparse: empty tiles compress to bytes

    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(REPO / "src"), os.environ.get("PYTHONPATH")) if p)}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, env=env,
                          timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    total_tiles = (SIDE // 512 + 1) ** 2
    for name, r in result.items():
        assert r["classes"] == 10
        assert r["added_mib"] < BOUND_MIB, (name, r)
        assert r["tiles"] < total_tiles / 10, (name, r)  # level 0 alone has 1600 tiles

"""benchmarks/tnet_megapixel_mnist.py: its measuring helpers, and one tiny end-to-end run on a
checkpoint (no training)."""
import importlib.util
import json
from pathlib import Path

import pytest
import torch

from foveate import create_model
from foveate.models import Glimpses, Output
from foveate.training.module import HardAttentionModule

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "tnet_megapixel_mnist.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("tnet_benchmark", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def tnet(**kw):
    cfg = dict(num_classes=10, backbone="tiny_cnn", levels=2, grid=4, overlap=0.5, base_resolution=32, locations=2)
    return create_model("tnet", **(cfg | kw))


def test_budgets(bench):
    assert bench.parse_budget("3") == 3 and bench.parse_budget("3,2") == [3, 2]
    assert bench.budget_name(3) == "3" and bench.budget_name([3, 2]) == "3-2"


def test_median_iqr(bench):
    stats = bench.median_iqr_ms([0.001, 0.002, 0.003, 0.004, 0.005])
    assert stats["median"] == pytest.approx(3.0)
    assert stats["iqr"] == pytest.approx(3.0)  # exclusive quartiles 1.5 and 4.5 ms
    assert bench.median_iqr_ms([0.002]) == {"median": 2.0, "iqr": 0.0}


def test_pixels_read_is_the_clipped_union(bench):
    boxes = torch.tensor([[[-10.0, -10.0, 10.0, 10.0], [5.0, 5.0, 15.0, 15.0], [50.0, 50.0, 60.0, 60.0]]])
    out = Output(logits=torch.zeros(1, 10),
                 trace=[Glimpses(1, boxes, torch.ones(1, 3), torch.tensor([[True, True, False]]))])
    # [0, 10)^2 and [5, 15)^2 overlap in 25 px: 100 + 100 - 25 of 100 x 100
    assert bench.pixels_read(out, 100, 100) == pytest.approx(175 / 10_000)
    assert bench.pixels_read(Output(logits=torch.zeros(1, 10)), 100, 100) == 0.0


def test_resize_flops_counts_only_views_that_are_resized(bench):
    # 128 px image, cells of round(0.5 * 128) = 64 px: level 1 and both cells are resized to 32.
    assert bench.resize_flops(tnet(), 128, 128, 2) == 2 * 128 * 128 + 2 * (2 * 64 * 64)
    # cells of 32 px already have the base resolution: only the whole image is resized
    assert bench.resize_flops(tnet(overlap=0.25), 128, 128, 3) == 2 * 128 * 128


def test_flops_adds_the_resize_estimate(bench):
    model = tnet().eval()
    with torch.inference_mode():
        one, two = (bench.flops(model, torch.rand(1, 128, 128), k) for k in (1, 2))
    assert 0 < one["gflops_resize"] < one["gflops"] < two["gflops"]


@pytest.mark.slow
def test_end_to_end_on_a_checkpoint(bench, tmp_path, capsys):
    cfg = {"seed": 0, "model": {"name": "tnet", "num_classes": 10, "backbone": "tiny_cnn", "levels": 2, "grid": 4,
                                "overlap": 0.5, "base_resolution": 32, "locations": 2},
           "data": {"name": "megapixel_mnist", "digits": None, "canvas_size": 160, "n_train": 8, "n_val": 4,
                    "n_test": 8, "batch_size": 4, "num_workers": 0}}
    module = HardAttentionModule(cfg)
    checkpoint = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": module.state_dict(), "hyper_parameters": {"config": cfg}, "epoch": 0,
                "global_step": 2}, checkpoint)
    out = tmp_path / "bench"
    argv = ["--checkpoint", str(checkpoint), "--out", str(out), "--latency-images", "2", "--locations", "1", "2",
            "--set", "data.n_test=4"]
    assert bench.main(argv) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert (out / "results.md").read_text() in printed
    assert [r["locations"] for r in results["rows"]] == [1, 2]
    assert results["header"]["sizes"]["test"] == 4 and results["header"]["evaluated_checkpoint"]["global_step"] == 2
    for row in results["rows"]:
        assert 0 <= row["test_acc"] <= 1 and row["memory"]["added_mib"] >= 0 and row["pixels_read_pct"] > 0
    assert bench.main(argv[:-1] + ["model.levels=3"]) == 2  # --checkpoint takes data.* overrides only

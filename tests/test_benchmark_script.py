"""foveate.bench (the model-agnostic benchmark engine) and the Megapixel MNIST benchmark scripts built
on it: measuring helpers, the pixels-read rules, budget checks, one row per (model, budget), the
report files, and a tiny end-to-end run of the script on checkpoints (no training)."""
import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch
from support import TINY_DATA as DATA
from support import untrained_checkpoint as checkpoint
from torch import nn

from foveate import FoveateError, create_model
from foveate.bench import (
    Entry,
    Settings,
    budget_name,
    check_budget,
    flops,
    markdown,
    measure_budget,
    median_iqr_ms,
    parse_budget,
    pixels_read,
    run_benchmark,
    write_results,
)
from foveate.models import Glimpses, Output

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
TNET = {"name": "tnet", "num_classes": 10, "backbone": "tiny_cnn", "levels": 2, "grid": 4, "overlap": 0.5,
        "base_resolution": 32, "locations": 2}


def script(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def megapixel():
    return script("megapixel_mnist")


def tnet(**kw):
    return create_model(**(TNET | kw))


def baseline(name):
    kw = {"scale": 0.25} if name == "lowres_cnn" else {}
    return create_model(name, num_classes=10, backbone="tiny_cnn", **kw)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ckpt")
    return {"tnet": checkpoint(tmp / "tnet.ckpt", TNET, [1, 2]),
            "lowres_cnn": checkpoint(tmp / "lowres.ckpt", {"name": "lowres_cnn", "num_classes": 10,
                                                           "backbone": "tiny_cnn", "scale": 0.25}),
            "fullres_cnn": checkpoint(tmp / "fullres.ckpt", {"name": "fullres_cnn", "num_classes": 10,
                                                             "backbone": "tiny_cnn"})}


# -- budgets --------------------------------------------------------------------------------
def test_budget_names_and_parsing():
    assert parse_budget("3") == 3 and parse_budget("3,2") == [3, 2] and parse_budget("none") is None
    assert budget_name(3) == "3" and budget_name([3, 2]) == "3-2" and budget_name(None) == "none"
    with pytest.raises(ValueError):
        parse_budget("three")


class NoBudget(nn.Module):
    """A model without a `budget` method: it takes locations=None only."""

    def forward(self, x, locations=None):
        return Output(logits=torch.zeros(len(x), 10))


def test_a_budget_the_model_does_not_support_is_a_clear_error():
    check_budget(tnet(), 3, "tnet")
    check_budget(tnet(), [2], "tnet")
    for model in (NoBudget(), baseline("lowres_cnn"), baseline("fullres_cnn")):
        check_budget(model, None, "baseline")
        with pytest.raises(FoveateError, match="baseline.*(takes no locations budget)"):
            check_budget(model, 3, "baseline")
    with pytest.raises(FoveateError, match="tnet: locations=17 .* impossible"):
        check_budget(tnet(), 17, "tnet")
    with pytest.raises(FoveateError, match="tnet"):
        check_budget(tnet(), [1, 2], "tnet")  # a 2-level TNet selects once


# -- single measurements --------------------------------------------------------------------
def test_median_iqr():
    stats = median_iqr_ms([0.001, 0.002, 0.003, 0.004, 0.005])
    assert stats["median"] == pytest.approx(3.0)
    assert stats["iqr"] == pytest.approx(3.0)  # exclusive quartiles 1.5 and 4.5 ms
    assert median_iqr_ms([0.002]) == {"median": 2.0, "iqr": 0.0}


def test_pixels_read_rules():
    boxes = torch.tensor([[[-10.0, -10.0, 10.0, 10.0], [5.0, 5.0, 15.0, 15.0], [50.0, 50.0, 60.0, 60.0],
                           [90.0, 95.0, 130.0, 130.0]]]).repeat(2, 1, 1)
    chosen = torch.tensor([[True, True, False, True], [False, False, True, False]])
    coarse = Glimpses(1, torch.tensor([[[0.0, 0.0, 100.0, 100.0]]]).repeat(2, 1, 1), torch.ones(2, 1),
                      torch.ones(2, 1, dtype=torch.bool))
    out = Output(logits=torch.zeros(2, 10), trace=[coarse, Glimpses(2, boxes, torch.ones(2, 4), chosen)])
    # image 0: [0, 10)^2 (clipped) and [5, 15)^2 overlap in 25 px: 100 + 100 - 25; [90, 100) x [95, 100) clipped: 50
    # image 1: [50, 60)^2. Only the last level counts (the coarse box covers everything).
    assert pixels_read(out, 100, 100) == pytest.approx([225 / 10_000, 100 / 10_000])
    assert pixels_read(out, 100, 100, reads_full_image=True) == [1.0, 1.0]
    assert pixels_read(Output(logits=torch.zeros(3, 10)), 100, 100) == [0.0, 0.0, 0.0]


def test_flops_add_the_resampling_each_forward_runs():
    with torch.inference_mode():
        one, two = (flops(tnet(), torch.rand(1, 128, 128), k) for k in (1, 2))
        # cells of round(0.5 * 128) = 64 px: the whole image and both cells are resized to 32
        assert two["flops_by_op"]["aten._upsample_bilinear2d_aa"] == 2 * 128 * 128 + 2 * (2 * 64 * 64)
        assert 0 < one["gflops_resampling"] < one["gflops"] < two["gflops"]
        # cells of 32 px already have the base resolution: only the whole image is resized
        assert flops(tnet(overlap=0.25), torch.rand(1, 128, 128), 3)["flops_by_op"][
            "aten._upsample_bilinear2d_aa"] == 2 * 128 * 128
        low, full = (flops(baseline(name), torch.rand(1, 128, 128), None) for name in ("lowres_cnn", "fullres_cnn"))
    assert low["flops_by_op"]["aten._upsample_bilinear2d_aa"] == 2 * 128 * 128  # the 32 x 32 view
    assert not any("upsample" in op for op in full["flops_by_op"])  # full resolution: nothing resized
    assert low["gflops"] < full["gflops"]


class QueryPool(nn.Module):
    """A learned query expanded under no_grad and handed to a submodule, as IPS's attention pooling does
    (torch's FlopCounterMode fails on it)."""

    def __init__(self):
        super().__init__()
        self.query = nn.Parameter(torch.ones(1, 10))
        self.head = nn.Linear(10, 10)

    def forward(self, x, locations=None):
        with torch.no_grad():  # e.g. IPS scoring patches without gradient
            return Output(logits=self.head(self.query.expand(len(x), -1)) * x.mean())


def test_flops_of_a_module_fed_a_parameter_view():
    assert flops(QueryPool(), torch.rand(1, 8, 8), None)["flops_by_op"]["aten.addmm"] == 2 * 10 * 10


def test_measure_budget_on_models_in_memory():
    images = [torch.rand(1, 128, 128) for _ in range(3)]
    for model, k, rule in [(tnet(), 2, "chosen_boxes"), (baseline("lowres_cnn"), None, "no_trace"),
                           (baseline("fullres_cnn"), None, "reads_full_image")]:
        result = measure_budget(model.eval(), images, k, batch_sizes=(1, 2), warmup=1)
        assert set(result["latency_ms"]) == {"1", "2"} and result["latency_ms"]["1"]["median"] > 0
        assert result["pixels_read_rule"] == rule
        if rule == "chosen_boxes":  # two of the 64-px cells: one cell's area to both, overlaps counted once
            assert 25.0 <= result["pixels_read_pct"] <= 50.0
        else:
            assert result["pixels_read_pct"] == {"no_trace": 0.0, "reads_full_image": 100.0}[rule]


# -- the engine -----------------------------------------------------------------------------
def test_one_row_per_model_and_budget_and_the_report_files(checkpoints, tmp_path):
    entries = [Entry("tnet", checkpoints["tnet"], training={"minutes": 0.5, "steps": 7}),
               Entry("lowres_cnn", checkpoints["lowres_cnn"]), Entry("fullres_cnn", checkpoints["fullres_cnn"])]
    results = run_benchmark(entries, DATA, Settings(latency_images=2, batch_sizes=(1, 2), warmup=1, memory=False))
    rows = results["rows"]
    assert [(r["model"], r["budget"]) for r in rows] == [("tnet", "1"), ("tnet", "2"), ("lowres_cnn", "none"),
                                                         ("fullres_cnn", "none")]
    assert [r["pixels_read_rule"] for r in rows] == ["chosen_boxes", "chosen_boxes", "no_trace", "reads_full_image"]
    assert rows[2]["pixels_read_pct"] == 0.0 and rows[3]["pixels_read_pct"] == 100.0
    assert 0 < rows[0]["pixels_read_pct"] < rows[1]["pixels_read_pct"] < 100
    assert all(0 <= r["test_acc"] <= 1 and r["memory"] is None for r in rows)
    head = results["header"]
    assert head["data"]["n_test"] == 4 and head["models"]["tnet"]["training"]["steps"] == 7
    assert head["models"]["fullres_cnn"]["reads_full_image"] and head["models"]["lowres_cnn"]["training"] is None
    assert head["models"]["tnet"]["evaluated_checkpoint"]["global_step"] == 2

    table = markdown(results, "tiny")
    body = [line for line in table.splitlines() if line.startswith("| ") and "---" not in line][1:]
    assert [line.split(" | ")[:2] for line in body] == [["| tnet", "1"], ["| tnet", "2"], ["| lowres_cnn", "none"],
                                                        ["| fullres_cnn", "none"]]
    assert "FLOPs = 2 x MACs" in table and "lowres_cnn: 0, nothing is selected" in table
    assert "fullres_cnn: 100" in table and "trained 0.5 min" in table

    write_results(tmp_path / "out", results, table)
    assert json.loads((tmp_path / "out" / "results.json").read_text()) == json.loads(json.dumps(results))
    assert (tmp_path / "out" / "results.md").read_text() == table
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["results.json", "results.md"]  # no temp files


def test_unsupported_budgets_fail_before_anything_runs(checkpoints):
    with pytest.raises(FoveateError, match="lowres_cnn.*no locations budget"):
        run_benchmark([Entry("tnet", checkpoints["tnet"]), Entry("lowres_cnn", checkpoints["lowres_cnn"], [3])],
                      DATA, Settings(memory=False))
    with pytest.raises(FoveateError, match="unique names"):
        run_benchmark([Entry("a", checkpoints["tnet"]), Entry("a", checkpoints["tnet"])], DATA)


# -- the scripts ----------------------------------------------------------------------------
def test_script_options_are_checked_before_training(megapixel, checkpoints, capsys):
    ckpt = [f"tnet={checkpoints['tnet']}", f"lowres_cnn={checkpoints['lowres_cnn']}"]
    base = ["--models", "tnet", "lowres_cnn", "--checkpoint", *ckpt]
    for extra, message in [(["--locations", "lowres_cnn=3"], "lowres_cnn: .*takes no locations budget"),
                           (["--locations", "tnet=17"], "tnet: locations=17"),
                           (["--minutes", "ats=3"], "--minutes names ats, not among --models"),
                           (["--set", "model.levels=3"], "--set takes data.\\* keys only"),
                           (["--set", "tnet:data.n_test=2"], "tnet comes from --checkpoint")]:
        assert megapixel.main(base + extra) == 2
        assert re.search(message, capsys.readouterr().err), message
    args = megapixel.parse_args(["--models", "tnet", "lowres_cnn", "--minutes", "5", "lowres_cnn=2",
                                 "--stage1-minutes", "0", "--set", "data.n_test=4", "lowres_cnn:optim.lr=0.01"])
    steps, common = megapixel.plan(args)
    assert (steps["tnet"]["minutes"], steps["lowres_cnn"]["minutes"]) == (5.0, 2.0)
    assert steps["tnet"]["stage1_config"] is None and common == ["data.n_test=4"]
    assert steps["lowres_cnn"]["overrides"] == ["data.n_test=4", "optim.lr=0.01"]
    assert steps["tnet"]["budgets"] is None  # the config's eval.locations


def test_tnet_script_is_the_engine_with_tnet_only():
    wrapper = script("tnet_megapixel_mnist")
    argv = wrapper.engine_argv(wrapper.parse_args(["--checkpoint", "x.ckpt", "--locations", "1", "3,2",
                                                   "--set", "data.n_test=4"]))
    assert argv[:4] == ["--models", "tnet", "--out", "runs/bench_tnet"]
    assert "--checkpoint" in argv and argv[argv.index("--checkpoint") + 1] == "tnet=x.ckpt"
    assert argv[argv.index("--locations") + 1:][:2] == ["tnet=1", "tnet=3,2"]
    assert argv[-2:] == ["--set", "data.n_test=4"]


@pytest.mark.slow
def test_end_to_end_on_checkpoints(megapixel, checkpoints, tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["--models", "tnet", "lowres_cnn", "fullres_cnn", "--out", str(out), "--latency-images", "2",
            "--batch", "2", "--locations", "tnet=2", "--set", "data.n_test=3",
            "--checkpoint", *(f"{m}={p}" for m, p in checkpoints.items())]
    assert megapixel.main(argv) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert (out / "results.md").read_text() in printed
    assert [(r["model"], r["locations"]) for r in results["rows"]] == [("tnet", 2), ("lowres_cnn", None),
                                                                       ("fullres_cnn", None)]
    assert results["header"]["data"]["n_test"] == 3 and "--models tnet" in results["header"]["command"]
    for row in results["rows"]:  # memory measured in a fresh process for every model
        assert row["memory"]["added_mib"] >= 0 and row["memory"]["warm"]["added_mib"] >= 0


def test_one_checkpoint_measured_two_ways(tmp_path):
    ats = checkpoint(tmp_path / "ats.ckpt", {"name": "ats", "num_classes": 10, "backbone": "tiny_cnn", "scale": 0.25,
                                             "patch_size": 32, "locations": 3}, [2, 3])
    entries = [Entry("ats", ats), Entry("ats-topk", ats, model_attrs={"eval_mode": "topk"})]
    results = run_benchmark(entries, DATA, Settings(latency_images=2, batch_sizes=(1,), warmup=1, memory=False))
    rows = results["rows"]
    assert results["header"]["models"]["ats-topk"]["model"]["eval_mode"] == "topk"
    assert results["header"]["models"]["ats"]["model"].get("eval_mode", "sample") == "sample"
    assert [(r["model"], r["budget"]) for r in rows] == [("ats", "2"), ("ats", "3"), ("ats-topk", "2"),
                                                         ("ats-topk", "3")]
    assert all(r["allocator_peak_mib"] > 0 for r in rows)
    with pytest.raises(FoveateError, match="has no attribute 'eval_mod'"):
        run_benchmark([Entry("ats", ats, model_attrs={"eval_mod": "topk"})], DATA, Settings(memory=False))

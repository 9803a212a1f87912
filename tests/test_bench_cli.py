"""`foveate bench` and `foveate bench --scaling` through the command line, on tiny untrained
checkpoints and tiny canvases: the Markdown table on stdout, results/scaling JSON, CSV and PNGs,
the folder data source, row names, and every bad input as one line on stderr with exit 2."""
import csv
import json
import re

import numpy as np
import pytest
import yaml
from PIL import Image
from support import TINY_DATA as DATA
from support import untrained_checkpoint as checkpoint

from foveate.bench.compare import model_names
from foveate.bench.scaling import ScaledCanvases, scale_layout
from foveate.cli import main
from foveate.data import MegapixelConfig, write_megapixel_mnist
from foveate.data.megapixel_mnist import to_uint8

TNET = {"name": "tnet", "num_classes": 10, "backbone": "tiny_cnn", "levels": 2, "grid": 4, "overlap": 0.5,
        "base_resolution": 32, "locations": 2}
LOWRES = {"name": "lowres_cnn", "num_classes": 10, "backbone": "tiny_cnn", "scale": 0.25}
FULLRES = {"name": "fullres_cnn", "num_classes": 10, "backbone": "tiny_cnn"}
FAST = ["--latency-images", "2", "--batch", "2", "--eval-batch", "4", "--warmup", "1", "--threads", "1",
        "--no-memory"]


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench_ckpt")
    return {"tnet": checkpoint(tmp / "tnet.ckpt", TNET, [1, 2]),
            "lowres": checkpoint(tmp / "lowres.ckpt", LOWRES),
            "fullres": checkpoint(tmp / "fullres.ckpt", FULLRES)}


@pytest.fixture(scope="module")
def config(tmp_path_factory):
    path = tmp_path_factory.mktemp("bench_cfg") / "data.yaml"
    path.write_text(yaml.safe_dump({"seed": 0, "data": DATA}))
    return str(path)


def table_rows(text):
    """(model, locations) of every body row of the first Markdown table."""
    lines = [line for line in text.splitlines() if line.startswith("| ")]
    return [tuple(cell.strip() for cell in line.strip("|").split("|")[:2]) for line in lines[1:]]


def valid_png(path):
    with Image.open(path) as img:
        img.verify()
        return img.format == "PNG" and img.size[0] > 100


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


# -- the comparison -------------------------------------------------------------------------
def test_round_trip_on_a_data_config(ckpts, config, tmp_path, capsys):
    out = tmp_path / "bench"
    code, stdout, err = run(["bench", "--checkpoints", ckpts["tnet"], ckpts["lowres"], ckpts["fullres"],
                             "--data", config, "--locations", "1", "2", "--out", str(out), *FAST], capsys)
    assert code == 0, err
    assert table_rows(stdout) == [("tnet", "1"), ("tnet", "2"), ("lowres_cnn", "none"), ("fullres_cnn", "none")]
    assert "FLOPs = 2 x MACs" in stdout and "4 megapixel_mnist canvases of 144 px" in stdout
    assert stdout == (out / "results.md").read_text()
    results = json.loads((out / "results.json").read_text())
    assert [r["locations"] for r in results["rows"]] == [1, 2, None, None]
    assert results["header"]["command"].startswith("foveate bench --checkpoints")
    assert results["header"]["task"] == {"classes": 10, "input channels": 1, "data set": "megapixel_mnist",
                                         "label": "majority"}
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["model", "locations", "test_acc", "gflops", "gflops_resampling",
                             "latency_ms_batch1_median", "latency_ms_batch1_iqr", "latency_ms_batch2_median",
                             "latency_ms_batch2_iqr", "memory_added_mib", "memory_warm_added_mib", "allocator_peak_mib",
                             "pixels_read_pct",
                             "pixels_read_rule", "checkpoint"]
    assert [(r["model"], r["locations"]) for r in rows] == [("tnet", "1"), ("tnet", "2"), ("lowres_cnn", "none"),
                                                           ("fullres_cnn", "none")]
    assert float(rows[3]["pixels_read_pct"]) == 100.0 and rows[0]["memory_added_mib"] == ""
    assert all(float(r["gflops"]) > 0 and 0 <= float(r["test_acc"]) <= 1 for r in rows)
    for name in ("accuracy_vs_gflops.png", "accuracy_vs_latency.png"):
        assert valid_png(out / name)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary files left
    assert "wrote" in err


def test_a_folder_of_images_with_labels_csv(ckpts, tmp_path, capsys):
    folder = tmp_path / "canvases"
    write_megapixel_mnist(folder, 3, split="test", config=MegapixelConfig(canvas_size=144))
    out = tmp_path / "bench"
    code, stdout, err = run(["bench", "--checkpoints", ckpts["tnet"], ckpts["fullres"], "--data", str(folder),
                             "--out", str(out), *FAST], capsys)
    assert code == 0, err
    assert table_rows(stdout) == [("tnet", "1"), ("tnet", "2"), ("fullres_cnn", "none")]  # eval.locations
    assert "3 images of 144x144 px" in stdout and "column `label`" in stdout
    data = json.loads((out / "results.json").read_text())["header"]["data"]
    assert data["name"] == "image_folder" and data["n_test"] == 3 and data["generator"]["canvas_size"] == 144


def test_same_model_name_twice_is_told_apart(ckpts, config, tmp_path, capsys):
    other = tmp_path / "run_b" / "checkpoints"
    other.mkdir(parents=True)
    second = checkpoint(other / "tnet.ckpt", TNET)
    code, stdout, err = run(["bench", "--checkpoints", ckpts["tnet"], second, "--data", config, "--locations", "2",
                             "--out", str(tmp_path / "o"), *FAST], capsys)
    assert code == 0, err
    names = [name for name, _ in table_rows(stdout)]
    assert len(set(names)) == 2 and all(n.startswith("tnet (") for n in names) and "tnet (run_b)" in names
    assert model_names(["a/best.ckpt", "a/last.ckpt", "b/x.ckpt"], ["ats", "ats", "tnet"]) == [
        "ats (best)", "ats (last)", "tnet"]
    assert model_names(["a/m.ckpt", "a/sub/m.ckpt"], ["ats", "ats"]) == ["ats (a)", "ats (sub)"]


# -- bad input ------------------------------------------------------------------------------
def one_error(code, err):
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("foveate: error: "), err
    return lines[0]


def test_bad_input_is_one_line_and_exit_2(ckpts, config, tmp_path, capsys):
    five = checkpoint(tmp_path / "five.ckpt", {**FULLRES, "num_classes": 5})
    top = checkpoint(tmp_path / "top.ckpt", LOWRES, data={**DATA, "label": "top"})
    empty_cfg = tmp_path / "empty.yaml"
    empty_cfg.write_text(yaml.safe_dump({"data": {**DATA, "n_test": 0}}))
    empty_dir = tmp_path / "empty_dir"
    empty_dir.mkdir()
    (empty_dir / "labels.csv").write_text("path,label\n")
    base = ["bench", "--out", str(tmp_path / "never"), *FAST]
    cases = [
        (["--checkpoints", ckpts["tnet"], five, "--data", config], r"different tasks: .*five\.ckpt has classes 5"),
        (["--checkpoints", ckpts["lowres"], top, "--data", config], r"different tasks: .*top\.ckpt has label 'top'"),
        (["--checkpoints", ckpts["tnet"], ckpts["lowres"], "--data", config, "--locations", "17"],
         r"tnet: locations=17 at level 1 is impossible: it has 16 candidate cells"),
        (["--checkpoints", ckpts["tnet"], "--data", str(empty_cfg)], r"empty\.yaml: the test split is empty"),
        (["--checkpoints", ckpts["tnet"], "--data", str(empty_dir)], r"labels\.csv: the data set is empty"),
        (["--checkpoints", ckpts["tnet"], str(tmp_path / "missing.ckpt"), "--data", config],
         r"missing\.ckpt: checkpoint not found"),
        (["--checkpoints", ckpts["tnet"], ckpts["tnet"], "--data", config], r"tnet\.ckpt: checkpoint given twice"),
        (["--checkpoints", ckpts["tnet"]], r"--data is required"),
        (["--checkpoints", ckpts["tnet"], "--data", config, "--locations"], r"--locations needs at least one"),
        (["--checkpoints", ckpts["tnet"], "--data", str(tmp_path / "nope")], r"nope: no such config file"),
        (["--checkpoints", ckpts["tnet"], "--data", str(tmp_path)], r"no labels\.csv"),
        (["--checkpoints", ckpts["tnet"], "--data", config, "--set", "model.grid=3"], r"only data\.KEY=VALUE"),
        (["--scaling", "--checkpoints", ckpts["tnet"], "--sides", "40"], r"canvas_size 40x40 too small"),
    ]
    for extra, message in cases:
        line = one_error(*run(base + extra, capsys)[::2])
        assert re.search(message, line), (message, line)
    assert not (tmp_path / "never").exists()  # nothing was written


def test_a_budget_only_the_image_size_makes_impossible_fails_before_measuring(tmp_path, config, capsys):
    ips = checkpoint(tmp_path / "ips.ckpt", {"name": "ips", "num_classes": 10, "backbone": "tiny_cnn",
                                             "patch_size": 48, "locations": 2})
    line = one_error(*run(["bench", "--checkpoints", ips, "--data", config, "--locations", "50", "--out",
                           str(tmp_path / "o"), *FAST], capsys)[::2])
    assert re.search(r"ips at locations=50: ", line), line


# -- scaling --------------------------------------------------------------------------------
def test_scaled_canvases_keep_the_same_objects():
    canvases = ScaledCanvases(DATA, 0, [144, 288], 2)
    small, large = canvases.render(144, 1), canvases.render(288, 1)
    assert small.shape == (144, 144) and large.shape == (288, 288)
    layout = canvases.layouts[1]
    moved = scale_layout(layout, 144, 288)
    for (r, c), (r2, c2) in zip(layout.digit_corners.tolist(), moved.digit_corners.tolist()):
        assert r2 == round(r * 260 / 116) and c2 == round(c * 260 / 116)
    # the same digits at native size (profile ats pastes noise after the digits: a patch may cover part of one)
    digits = to_uint8(canvases.renderers[288].digit_values(layout), truncate=True)
    for (r, c), digit in zip(moved.digit_corners.tolist(), digits):
        assert (large[r:r + 28, c:c + 28] == digit).mean() > 0.7
    assert np.count_nonzero(large) <= np.count_nonzero(small) + 28 * 28 * len(layout.noise_ids)


def test_scaling_round_trip(ckpts, config, tmp_path, capsys):
    out = tmp_path / "scaling"
    code, stdout, err = run(["bench", "--scaling", "--checkpoints", ckpts["tnet"], ckpts["fullres"], "--data", config,
                             "--sides", "288", "144", "--latency-images", "2", "--warmup", "1", "--threads", "1",
                             "--no-memory", "--out", str(out)], capsys)
    assert code == 0, err
    names = ["tnet", "fullres_cnn", "tnet@pyramid", "fullres_cnn@pyramid"]
    assert table_rows(stdout) == [(name, "none") for name in names for _ in range(2)]
    results = json.loads((out / "scaling.json").read_text())
    rows = results["rows"]
    assert [(r["model"], r["side"]) for r in rows] == [(name, side) for side in (144, 288) for name in names]
    cost = {(r["model"], r["side"]): (r["gflops"], r["allocator_peak_mib"]) for r in rows}
    # through a pyramid TNet's work is the same at both sides; from the decoded canvas its view is
    # resized from every pixel, so its memory grows
    assert cost["tnet@pyramid", 288] == pytest.approx(cost["tnet@pyramid", 144], rel=1e-6)
    assert cost["tnet", 288][1] > 2 * cost["tnet", 144][1]
    assert all(r["error"] is None and r["memory"] is None and r["latency_ms"]["median"] > 0 for r in rows)
    full = {r["side"]: r for r in rows if r["model"] == "fullres_cnn"}
    assert full[288]["gflops"] == pytest.approx(4 * full[144]["gflops"], rel=0.05)  # O(pixels)
    assert full[288]["allocator_peak_mib"] > 2 * full[144]["allocator_peak_mib"]
    assert full[144]["latency_vs_smallest"] == 1.0
    with open(out / "scaling.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0])[:5] == ["model", "locations", "side", "pixels", "latency_ms_median"]
    assert len(table) == 8 and table[0]["memory_added_mib"] == ""
    assert valid_png(out / "scaling.png") and (out / "scaling.md").read_text() == stdout
    assert "not measured in this run" in stdout and "Allocator peak" in stdout

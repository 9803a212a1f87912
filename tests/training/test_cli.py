"""CLI round trips: fit -> test -> predict/explain, data, resume, determinism, bad input."""
import csv
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from foveate.cli import main


def test_fit_writes_checkpoints_and_logs(trained):
    _, run = trained
    assert (run / "checkpoints" / "best.ckpt").is_file()
    assert (run / "checkpoints" / "last.ckpt").is_file()
    metrics = next((run / "logs").rglob("metrics.csv")).read_text()
    assert "train/loss" in metrics and "val/acc" in metrics
    assert not list(run.rglob("*.tmp"))  # atomic writes leave no temporaries


def test_test_prints_accuracy_per_budget(trained, capsys):
    _, run = trained
    assert main(["test", "--checkpoint", str(run / "checkpoints" / "last.ckpt"), "--locations", "1", "3"]) == 0
    out = capsys.readouterr().out
    lines = dict(line.split(": ") for line in out.strip().splitlines() if line.startswith("test/"))
    assert set(lines) == {"test/acc@1", "test/acc@3"}
    assert all(0.0 <= float(v) <= 1.0 for v in lines.values())


def test_data_then_predict_with_explain(trained, tmp_path, capsys):
    _, run = trained
    data = tmp_path / "canvases"
    assert main(["data", "megapixel-mnist", "--out", str(data), "-n", "3", "--canvas", "200"]) == 0
    rows = list(csv.DictReader(open(data / "labels.csv")))
    assert len(rows) == 3
    (data / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")  # a file that cannot be read
    Image.new("L", (30, 30)).save(data / "tiny.png")  # smaller than the base resolution (48)
    Image.new("RGBA", (200, 200), (9, 9, 9, 0)).save(data / "transparent.png")
    wide = np.random.default_rng(0).integers(0, 65535, (200, 260), dtype=np.uint16)
    Image.fromarray(wide).save(data / "deep16.png")  # 16-bit: read correctly, predicted
    preds, explain = tmp_path / "preds.csv", tmp_path / "explain"
    code = main(["predict", "--checkpoint", str(run / "checkpoints" / "last.ckpt"), "--input", str(data),
                 "--output", str(preds), "--locations", "3", "--explain", str(explain)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1  # three files failed, the others were still predicted
    assert len(err) == 3
    for name, problem in [("broken.png", ""), ("tiny.png", "smaller than the model's base resolution (48 px)"),
                          ("transparent.png", "transparency")]:
        assert any(name in line and problem in line for line in err), (name, err)
    out = {r["path"].split("/")[-1]: r for r in csv.DictReader(open(preds))}
    assert set(out) == {"000000.png", "000001.png", "000002.png", "broken.png", "tiny.png", "transparent.png",
                        "deep16.png"}
    for name in ("broken.png", "tiny.png", "transparent.png"):
        assert out[name]["error"] and not out[name]["predicted"]
    for name in ("000000.png", "000001.png", "000002.png", "deep16.png"):
        assert 0 <= int(out[name]["predicted"]) <= 9 and len(out[name]["top5"].split()) == 5
        assert (explain / name).is_file()


def test_python_api_predicts_with_trace(trained, tmp_path):
    import foveate

    _, run = trained
    predictor = foveate.load(run / "checkpoints" / "last.ckpt")
    pred = predictor.predict(torch.rand(1, 300, 250), locations=4)
    assert 0 <= pred.label <= 9 and abs(float(pred.probs.sum()) - 1) < 1e-5
    level = pred.output.trace[0]
    assert int(level.chosen.sum()) == 4
    boxes, probs = level.chosen_boxes(0)
    assert boxes.shape == (4, 4) and (boxes[:, 2] > boxes[:, 0]).all()
    # a 16-bit PIL image is scaled like a 16-bit file, not clipped to 255
    deep = Image.fromarray(np.full((200, 200), 30000, dtype=np.uint16))
    assert torch.allclose(predictor.as_tensor(deep), torch.full((1, 200, 200), 30000 / 65535))
    assert torch.allclose(predictor.as_tensor(np.full((50, 60), 65535, dtype=np.uint16)), torch.ones(1, 50, 60))
    with pytest.raises(foveate.FoveateError, match="expects \\[0, 1\\]"):
        predictor.as_tensor(torch.full((1, 50, 60), 255.0))
    with pytest.raises(foveate.FoveateError, match="dtype int64"):
        predictor.as_tensor(np.zeros((50, 60), dtype=np.int64))


def test_resume_continues_from_last_checkpoint(trained, tmp_path):
    cfg, run = trained
    first = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert main(["fit", "--config", str(cfg), "--resume", "auto", "--set", "trainer.max_epochs=2"]) == 0
    second = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert second["global_step"] == 2 * first["global_step"], (first["global_step"], second["global_step"])
    assert second["epoch"] > first["epoch"]


def test_same_seed_same_weights(tmp_path, write_config):
    sds = []
    for name in ("a", "b"):
        cfg = write_config(tmp_path / f"{name}.yaml", {"output_dir": str(tmp_path / name), "data.n_train": 32})
        assert main(["fit", "--config", str(cfg)]) == 0
        sds.append(torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"])
    assert sds[0].keys() == sds[1].keys()
    for k in sds[0]:
        assert torch.equal(sds[0][k], sds[1][k]), k


@pytest.mark.parametrize("content,message", [
    ("model: [unclosed", "not valid YAML"),
    ("model: {name: tnet}\nbogus: 1\n", "unknown section(s) bogus"),
    ("data: {}\n", "missing model.name"),
    ("model: {name: nonet}\n", "unknown model 'nonet'"),
    ("model: {name: tnet, num_classes: 10, backbone: nope}\n", "unknown backbone 'nope'"),
    ("model: {name: tnet, num_classes: 10, grid: 3, locations: 12}\n", "locations=12 at level 1 is impossible"),
    ("model: {name: tnet, num_classes: 10}\noptim: {lr: 1e-3}\n", "optim.lr must be a non-negative number"),
])
def test_bad_config_is_one_clear_line(tmp_path, capsys, content, message):
    path = tmp_path / "bad.yaml"
    path.write_text(content)
    assert main(["fit", "--config", str(path), "--set", f"output_dir={tmp_path / 'out'}"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("foveate: error:") and message in err and len(err.splitlines()) == 1


def test_bad_checkpoint_is_one_clear_line(trained, tmp_path, capsys):
    _, run = trained
    good = (run / "checkpoints" / "last.ckpt").read_bytes()
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes(good[: len(good) // 2])
    other = tmp_path / "other.ckpt"
    torch.save({"weights": torch.zeros(3)}, other)
    for path, message in [(truncated, "not a readable checkpoint"), (other, "not a foveate checkpoint"),
                          (tmp_path / "missing.ckpt", "checkpoint not found")]:
        assert main(["test", "--checkpoint", str(path)]) == 2
        err = capsys.readouterr().err.strip()
        assert str(path) in err and message in err and len(err.splitlines()) == 1


def test_console_script_reports_errors_without_traceback(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "foveate.cli", "predict", "--checkpoint", str(tmp_path / "x.ckpt"),
                           "--input", str(tmp_path), "--output", str(tmp_path / "p.csv")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "x.ckpt: checkpoint not found" in proc.stderr

"""Every model trains, tests, predicts with --explain and loads through the same CLI/API path."""
import csv

import pytest
import torch
from PIL import Image

import foveate
from foveate.cli import main

MODELS = {
    "ats": {"name": "ats", "num_classes": 10, "in_chans": 1, "backbone": "tiny_cnn", "scale": 0.25,
            "patch_size": 32, "locations": 3},
    "ips": {"name": "ips", "num_classes": 10, "in_chans": 1, "backbone": "tiny_cnn", "patch_size": 40,
            "locations": 4, "chunk": 8, "dim": 32, "heads": 2, "dim_head": 16, "mlp_dim": 64},
    "fullres_cnn": {"name": "fullres_cnn", "num_classes": 10, "in_chans": 1, "backbone": "tiny_cnn"},
    "lowres_cnn": {"name": "lowres_cnn", "num_classes": 10, "in_chans": 1, "backbone": "tiny_cnn", "scale": 0.25},
}
BUDGETS = {"ats": ["2", "4"], "ips": ["2", "4"], "fullres_cnn": [], "lowres_cnn": []}


def _write(tmp, model, write_config):
    return write_config(tmp / f"{model}.yaml", {"output_dir": str(tmp / model), "eval.locations": [None],
                                                "model": MODELS[model]})


@pytest.mark.parametrize("model", sorted(MODELS))
def test_fit_test_predict_explain_load(model, tmp_path, capsys, write_config):
    cfg = _write(tmp_path, model, write_config)
    assert main(["fit", "--config", str(cfg)]) == 0
    ckpt = tmp_path / model / "checkpoints" / "last.ckpt"
    capsys.readouterr()
    assert main(["test", "--checkpoint", str(ckpt), *(["--locations", *BUDGETS[model]] if BUDGETS[model] else [])]) == 0
    out = capsys.readouterr().out
    names = {line.split(": ")[0] for line in out.splitlines() if line.startswith("test/")}
    expected = {f"test/acc@{k}" for k in BUDGETS[model]} or {"test/acc"}
    assert names == expected, out

    images = tmp_path / "images"
    images.mkdir()
    for i in range(2):
        Image.effect_noise((200, 180), 40 + 10 * i).save(images / f"{i}.png")
    preds, explain = tmp_path / "preds.csv", tmp_path / "explain"
    budget = ["--locations", BUDGETS[model][0]] if BUDGETS[model] else []
    assert main(["predict", "--checkpoint", str(ckpt), "--input", str(images), "--output", str(preds),
                 *budget, "--explain", str(explain)]) == 0
    with open(preds) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and all(0 <= int(r["predicted"]) <= 9 for r in rows)
    assert sorted(p.name for p in explain.iterdir()) == ["0.png", "1.png"]

    predictor = foveate.load(ckpt)
    pred = predictor.predict(torch.rand(1, 200, 200), locations=int(BUDGETS[model][0]) if BUDGETS[model] else None)
    assert abs(float(pred.probs.sum()) - 1) < 1e-5
    if BUDGETS[model]:
        glimpses = pred.output.trace[-1]
        assert glimpses.chosen.sum() == int(BUDGETS[model][0]) and glimpses.heatmap is not None
    else:
        assert pred.output.trace == []
        with pytest.raises(foveate.FoveateError, match="takes no locations budget"):
            predictor.predict(torch.rand(1, 200, 200), locations=3)

"""Saccader: shapes and boxes, the visited-cell memory, teacher-forced pretraining, which parts each
stage's loss reaches, learning on a tiny task, the staged CLI round trip, one-line errors."""
import csv

import pytest
import torch
import torch.nn.functional as F
import yaml

import foveate
from foveate.cli import main
from foveate.errors import FoveateError
from foveate.models import create_model
from foveate.models.saccader import mask_value
from foveate.selection import batch_mean_reinforce
from foveate.training.callbacks import recalibrate_batchnorm

# 16-d "what" features; RF 9, stride 8: a 48-px image has a 5x5 grid of cells ((48 - 9) // 8 + 1)
TINY = {"num_classes": 2, "in_chans": 1, "backbone": "bagnet",
        "backbone_kwargs": {"kernel3": [1, 1, 0, 0], "width": 0.0625, "lowd": 256}, "locations": 3}


@pytest.fixture(autouse=True)
def _one_thread():
    """Small models: one thread is faster, and robust on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny(**kw):
    return create_model("saccader", **{**TINY, **kw})


def _bars(n: int, size: int = 48, seed: int = 0):
    """Class 0: a horizontal bar, class 1: a vertical bar, at a random place on black."""
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 1, size, size)
    y = torch.randint(0, 2, (n,), generator=g)
    for i in range(n):
        r, c = torch.randint(0, size - 7, (2,), generator=g).tolist()
        if y[i] == 0:
            x[i, 0, r + 3:r + 5, c:c + 7] = 1
        else:
            x[i, 0, r:r + 7, c + 3:c + 5] = 1
    return x, y


def test_shapes_boxes_and_trace():
    m = tiny().eval()
    assert (m.backbone.receptive_field, m.backbone.stride) == (9, 8)
    out = m(torch.rand(2, 1, 48, 56))
    g = out.trace[0]
    assert out.logits.shape == (2, 2) and out.aux_logits.shape == (2, 3, 2)
    assert g.boxes.shape == (2, 5 * 6, 4) and g.chosen.sum(1).tolist() == [3, 3]
    assert sorted(g.order[0][g.chosen[0]].tolist()) == [1, 2, 3]
    # box of cell (i, j) = its exact receptive field [8j, 8j + 9) x [8i, 8i + 9) in input pixels
    i, j = divmod(int(out.extras["chosen"][0, 0]), 6)
    assert g.boxes[0, i * 6 + j].tolist() == [8 * j, 8 * i, 8 * j + 9, 8 * i + 9]
    assert torch.allclose(out.logits, out.aux_logits.mean(1))
    # a downsampled view: boxes in input pixels
    half = tiny(view_scale=0.5).eval()
    boxes = half(torch.rand(1, 1, 96, 96)).trace[0].boxes[0]
    assert boxes.shape == (25, 4) and boxes[6].tolist() == [16.0, 16.0, 34.0, 34.0]
    assert out.trace[0].probs[g.chosen].gt(0).all()


@pytest.mark.parametrize("training", [True, False])
def test_memory_never_picks_a_cell_twice(training):
    m = tiny(locations=25).train(training)
    with torch.no_grad():
        m.cell.w.mul_(50)          # very peaked scores: the memory, not chance, keeps cells apart
        out = m(torch.rand(4, 1, 48, 48))
    chosen = out.extras["chosen"]
    assert all(len(set(row.tolist())) == 25 for row in chosen)
    assert torch.isfinite(out.extras["logp"]).all()


def test_mask_is_dtype_aware():
    for dtype in (torch.float16, torch.bfloat16, torch.float32):
        assert torch.isfinite(torch.tensor(mask_value(dtype), dtype=dtype))
    m = tiny()
    mix = torch.randn(2, m.cell.channels, 9).to(torch.bfloat16)
    visited = torch.zeros(2, 9, dtype=torch.bool)
    visited[:, :4] = True
    ell = m.cell.to(torch.bfloat16).scores(mix, visited)
    p = torch.softmax(ell.float(), -1)
    assert torch.isfinite(ell).all() and p[:, :4].eq(0).all() and torch.allclose(p.sum(-1), torch.ones(2))


def test_pretraining_targets_distinct_teacher_forcing_finite():
    m = tiny(stage="pretrain", pretrain_steps=12).train()
    x, y = _bars(4)
    out = m(x)
    targets = m.pretrain_targets(out.extras["logits2d"], out.extras["bag_logits"], y, 12)
    assert all(len(set(r.tolist())) == 12 for r in targets)
    _, _, scores = m.unroll(out.extras["mix"], 12, "teacher", targets)
    assert scores.gather(2, targets[..., None]).gt(mask_value(scores.dtype) / 2).all()   # never masked
    loss = m.loss(out, y)["loss"]
    assert torch.isfinite(loss) and loss < 10
    # the label option ranks by the true class
    lab = tiny(stage="pretrain", pretrain_target="label")
    t = lab.pretrain_targets(out.extras["logits2d"], out.extras["bag_logits"], y, 3)
    per_cell = out.extras["logits2d"].flatten(2)[0, y[0]]
    assert per_cell[t[0, 0]] == per_cell.max()


def _grads(m):
    parts = {"backbone": m.backbone, "where": m.where, "mix": m.mix, "cell": m.cell}
    return {k: any(p.grad is not None and p.grad.abs().sum() > 0 for p in v.parameters()) for k, v in parts.items()}


def test_gradients_reach_exactly_the_parts_of_each_stage():
    x, y = _bars(6)
    m = tiny(stage="representation").train()
    out = m(x)
    assert out.trace == [] and torch.allclose(out.logits, out.extras["logits2d"].mean((2, 3)))
    m.loss(out, y)["loss"].backward()
    assert _grads(m) == {"backbone": True, "where": False, "mix": False, "cell": False}

    m = tiny(stage="pretrain").train()
    m.loss(m(x), y)["loss"].backward()
    assert _grads(m) == {"backbone": False, "where": True, "mix": True, "cell": True}
    assert not m.backbone.training          # frozen representation keeps its BN statistics

    m = tiny(stage="policy").train()
    out = m(x)
    F.cross_entropy(out.logits, y).backward(retain_graph=True)
    assert _grads(m) == {"backbone": True, "where": False, "mix": False, "cell": False}
    m.zero_grad()
    batch_mean_reinforce(out.extras["logp"], torch.tensor([1.0, 0, 1, 0, 0, 1])).backward()
    assert _grads(m) == {"backbone": False, "where": True, "mix": True, "cell": True}
    m.zero_grad()
    losses = m.loss(out, y)
    assert set(losses) >= {"loss", "ce", "rl", "l2", "reward"}

    m = tiny(stage="policy", train_representation=False, policy_estimator="vimco", vimco_samples=3).train()
    loss = m.loss(m(x), y)
    loss["loss"].backward()
    assert _grads(m) == {"backbone": False, "where": True, "mix": True, "cell": True}
    assert torch.isfinite(loss["bound"])


def _fit(m, steps: int, lr: float, seed: int) -> None:
    opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=lr)
    m.train()
    for step in range(steps):
        x, y = _bars(32, seed=seed + step)
        loss = m.loss(m(x), y)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    # BatchNorm statistics of the final weights, as training does before validation
    recalibrate_batchnorm(m, (_bars(32, seed=seed + steps + i)[0] for i in range(4)), 4)
    m.eval()


def test_learns_a_tiny_task():
    """Representation (CE on averaged logits), then location pretraining: one argmax glimpse then
    lands on the bar and classifies it."""
    torch.manual_seed(0)
    m = tiny(stage="representation", locations=1,
             backbone_kwargs={"kernel3": [1, 1, 0, 0], "width": 0.125, "lowd": 128})
    xv, yv = _bars(64, seed=99)
    _fit(m, 60, 3e-3, seed=0)
    with torch.no_grad():
        assert (m(xv).logits.argmax(-1) == yv).float().mean() > 0.85
    m.stage = "pretrain"
    _fit(m, 40, 1e-2, seed=1000)
    m.stage = "policy"
    with torch.no_grad():
        out = m(xv, locations=1)
    acc = (out.logits.argmax(-1) == yv).float().mean()
    assert acc > 0.8, acc


def test_errors():
    m = tiny().eval()
    with pytest.raises(FoveateError, match="smaller than the backbone's receptive field"):
        m(torch.rand(1, 1, 8, 40))
    with pytest.raises(FoveateError, match="grid has only 25 cells"):
        m(torch.rand(1, 1, 48, 48), locations=26)
    with pytest.raises(FoveateError, match="locations must be"):
        m.budget(0)
    with pytest.raises(FoveateError, match="3-channel|1-channel"):
        m(torch.rand(1, 3, 48, 48))
    with pytest.raises(FoveateError, match="unknown stage"):
        m.stage = "finetune"
    with pytest.raises(FoveateError, match="BagNet-style backbone"):
        create_model("saccader", num_classes=2, backbone="tiny_cnn", in_chans=1)
    with pytest.raises(FoveateError, match="vimco_samples >= 2"):
        tiny(policy_estimator="vimco", vimco_samples=1)
    with pytest.raises(FoveateError, match="multi-label"):
        m.loss(m(torch.rand(2, 1, 48, 48)), torch.zeros(2, 2))


def test_reference_sizes():
    """Attention network + mixing + cell of Saccader-77: 14,955,520 parameters with BN statistics."""
    m = create_model("saccader", num_classes=1001)
    n = sum(p.numel() for name, p in m.named_parameters() if not name.startswith("backbone"))
    n += sum(b.numel() for name, b in m.named_buffers() if not name.startswith("backbone") and "running" in name)
    assert n == 14_955_520
    assert sum(p.numel() for p in m.backbone.parameters()) == 20_574_249


def test_staged_cli_round_trip(tmp_path, capsys):
    """fit runs the three stages in turn (each from the previous one's last checkpoint), then
    test, predict --explain and load work on the final checkpoint."""
    cfg = {
        "seed": 0, "output_dir": str(tmp_path / "run"),
        "model": {"name": "saccader", **TINY, "num_classes": 10, "locations": 2},
        "data": {"name": "megapixel_mnist", "canvas_size": 144, "n_train": 8, "n_val": 4, "n_test": 4,
                 "batch_size": 4, "num_workers": 0},
        "optim": {"precise_bn_batches": 1},
        "trainer": {"max_steps": 2, "num_sanity_val_steps": 0, "accelerator": "cpu", "devices": 1, "enable_progress_bar": False,
                    "enable_model_summary": False, "log_every_n_steps": 1},
        "eval": {"locations": [1, 2]},
        "stages": [{"name": "rep", "model.stage": "representation", "optim": {"lr": 0.01}},
                   {"name": "pre", "model.stage": "pretrain"},
                   {"name": "pol", "model": {"stage": "policy", "policy_estimator": "vimco", "vimco_samples": 2}}],
    }
    path = tmp_path / "cfg.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["fit", "--config", str(path)]) == 0
    done = [(tmp_path / "run" / s / "stage.json").stat().st_mtime_ns for s in ("rep", "pre", "pol")]
    assert main(["fit", "--config", str(path), "--resume", "auto"]) == 0          # finished stages are skipped
    assert done == [(tmp_path / "run" / s / "stage.json").stat().st_mtime_ns for s in ("rep", "pre", "pol")]
    stages = [foveate.load(tmp_path / "run" / s / "checkpoints" / "last.ckpt") for s in ("rep", "pre", "pol")]
    assert [p.model.stage for p in stages] == ["representation", "pretrain", "policy"]
    # the pretraining stage started from the representation: the frozen BagNet is unchanged
    for a, b in zip(stages[0].model.backbone.state_dict().values(), stages[1].model.backbone.state_dict().values()):
        assert torch.equal(a, b)
    ckpt = tmp_path / "run" / "pol" / "checkpoints" / "last.ckpt"
    capsys.readouterr()
    assert main(["test", "--checkpoint", str(ckpt), "--locations", "1", "3"]) == 0
    names = {line.split(": ")[0] for line in capsys.readouterr().out.splitlines() if line.startswith("test/")}
    assert names == {"test/acc@1", "test/acc@3"}
    from PIL import Image
    images = tmp_path / "images"
    images.mkdir()
    Image.effect_noise((120, 100), 40).save(images / "a.png")
    preds, explain = tmp_path / "preds.csv", tmp_path / "explain"
    assert main(["predict", "--checkpoint", str(ckpt), "--input", str(images), "--output", str(preds),
                 "--locations", "3", "--explain", str(explain)]) == 0
    with open(preds) as f:
        assert len(list(csv.DictReader(f))) == 1
    assert (explain / "a.png").is_file()
    capsys.readouterr()
    assert main(["predict", "--checkpoint", str(ckpt), "--input", str(images), "--output", str(preds),
                 "--locations", "999"]) != 0
    assert "grid has only" in capsys.readouterr().err

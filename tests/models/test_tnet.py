import math

import pytest
import torch
from support import Spy

from foveate import FoveateError, create_model
from foveate.selection import reinforce_loss


def tnet(**kw):
    cfg = dict(num_classes=10, backbone="tiny_cnn", in_chans=1, levels=3, grid=[3, 4], overlap=[0.5, 0.4],
               base_resolution=32, locations=[2, 2])
    cfg.update(kw)
    return create_model("tnet", **cfg)


def test_shapes_and_trace():
    m = tnet()
    out = m(torch.rand(2, 1, 240, 200))
    n = 1 + 2 + 2 * 2
    assert out.logits.shape == (2, 10)
    assert out.aux_logits.shape == (2, n, 10)
    assert out.extras["logp"].shape == (2, n - 1)
    assert [g.level for g in out.trace] == [1, 2]
    assert out.trace[0].boxes.shape == (2, 9, 4) and out.trace[0].chosen.sum(1).tolist() == [2, 2]
    assert out.trace[1].boxes.shape == (2, 2 * 16, 4) and out.trace[1].chosen.sum(1).tolist() == [4, 4]
    # level-2 candidates lie inside the level-1 chosen cells
    for b in range(2):
        parents, _ = out.trace[0].chosen_boxes(b)
        kids = out.trace[1].boxes[b].reshape(2, 16, 4)
        for p, ks in zip(parents, kids):
            assert (ks[:, 0] >= p[0] - 1).all() and (ks[:, 2] <= p[2] + 1).all()


def test_backbone_calls_per_image_equal_number_of_features():
    m = tnet()
    m.backbone = Spy(m.backbone)
    out = m(torch.rand(3, 1, 240, 200), locations=[3, 2])
    sizes = [c.shape[0] for c in m.backbone.calls]
    assert sizes == [3, 3 * 3, 3 * 3 * 2]  # one batched call per level
    assert sum(sizes) / 3 == out.aux_logits.shape[1] == 1 + 3 + 6


def test_level_two_reads_full_resolution_pixels():
    # cell side 64 == base resolution: no resize, so the backbone must see the exact source pixels
    m = tnet(levels=2, grid=4, overlap=0.25, base_resolution=64, locations=3)
    m.backbone = Spy(m.backbone)
    x = (torch.rand(2, 1, 256, 256) > 0.5).float()  # 1-px noise: any resampling would change it
    out = m(x)
    crops = m.backbone.calls[1]  # (2*3, 1, 64, 64), normalised to [-1, 1]
    for b in range(2):
        boxes, _ = out.trace[0].chosen_boxes(b)
        for r, (x1, y1, x2, y2) in enumerate(boxes.int().tolist()):
            assert torch.equal(crops[b * 3 + r], x[b, :, y1:y2, x1:x2] * 2 - 1)


def test_batched_equals_per_image():
    m = tnet().eval()
    x = torch.rand(3, 1, 240, 200)
    with torch.no_grad():
        batched = m(x)
        for b in range(3):
            single = m(x[b:b + 1])
            torch.testing.assert_close(single.logits[0], batched.logits[b], atol=1e-5, rtol=1e-4)
            for lb, ls in zip(batched.trace, single.trace):
                assert torch.equal(lb.chosen[b], ls.chosen[0])
                torch.testing.assert_close(lb.boxes[b], ls.boxes[0])


def grads(module):
    return [p.grad for p in module.parameters()]


def test_location_module_learns_only_from_policy():
    m = tnet()
    x, y = torch.rand(2, 1, 240, 200), torch.tensor([3, 7])
    # classification terms only: no gradient reaches the location module
    m_ce = tnet(policy_weight=0.0)
    m_ce.load_state_dict(m.state_dict())
    m_ce.loss(m_ce(x), y)["loss"].backward()
    assert all(g is None or g.abs().sum() == 0 for g in grads(m_ce.locator))
    assert any(g is not None and g.abs().sum() > 0 for g in grads(m_ce.backbone))
    # policy term only: the location module learns, the backbone gets nothing
    out = m(x)
    reinforce_loss(out.extras["logp"], torch.ones_like(out.extras["logp"]), 0.5).backward()
    assert any(g is not None and g.abs().sum() > 0 for g in grads(m.locator))
    assert all(g is None or g.abs().sum() == 0 for g in grads(m.backbone))
    assert all(g is None or g.abs().sum() == 0 for g in grads(m.head))


def test_probabilities_are_bounded_by_l2_normalised_logits():
    m = tnet(levels=2, grid=5, overlap=0.34375, locations=3)
    with torch.no_grad():
        for p in m.locator.parameters():
            p.mul_(50)  # huge logits: softmax would saturate without the normalisation
        out = m(torch.rand(4, 1, 224, 224))
    p = out.trace[0].probs
    torch.testing.assert_close(p.sum(-1), torch.ones(4))
    # the most peaked unit-norm logit vector is (a, -c, ..., -c) with a^2 + 24 c^2 = 1
    cs = torch.linspace(0, 1 / math.sqrt(24), 10001, dtype=torch.float64)
    a = (1 - 24 * cs**2).clamp(min=0).sqrt()
    bound = float((a.exp() / (a.exp() + 24 * (-cs).exp())).max())
    assert abs(bound - 0.104) < 0.0005  # the reference's table
    assert p.max() <= bound + 1e-6


def test_any_budget_at_inference_and_clear_errors():
    m = tnet().eval()
    x = torch.rand(1, 1, 240, 200)
    for k in ([1, 1], [9, 16], 3, [2, 5]):
        out = m(x, locations=k)
        ks = [k, k] if isinstance(k, int) else k
        assert out.aux_logits.shape[1] == 1 + ks[0] + ks[0] * ks[1]
    with pytest.raises(FoveateError, match="locations=10 at level 1 is impossible: it has 9 candidate cells"):
        m(x, locations=[10, 1])
    with pytest.raises(FoveateError, match="selects 2 times"):
        m(x, locations=[1, 1, 1])
    with pytest.raises(FoveateError, match="smaller than the model's base resolution"):
        m(torch.rand(1, 1, 20, 200))
    with pytest.raises(FoveateError, match="1-channel"):
        m(torch.rand(1, 3, 240, 200))


def test_multi_label_targets_are_refused():
    m = tnet()
    out = m(torch.rand(2, 1, 240, 200))
    with pytest.raises(FoveateError, match="multi-label"):
        m.loss(out, torch.zeros(2, 10))


def test_loss_uses_baseline_before_update():
    m = tnet()
    m.baseline.value.fill_(0.2)
    x, y = torch.rand(2, 1, 240, 200), torch.tensor([1, 2])
    out = m(x)
    losses = m.loss(out, y)
    assert float(losses["baseline"]) == pytest.approx(0.2)
    correct = (out.logits.argmax(-1) == y).float()
    fcorrect = (out.aux_logits[:, 1:].argmax(-1) == y[:, None]).float()
    logp = out.extras["logp"]
    expected = 0.3 * -((correct - 0.2) * logp.sum(1)).mean() + 0.7 * -((fcorrect - 0.2) * logp).mean()
    assert float(losses["policy"]) == pytest.approx(float(expected), rel=1e-5)
    m.update_baseline(losses["reward"])
    assert float(m.baseline.value) == pytest.approx(0.9 * 0.2 + 0.1 * float(losses["reward"]))


def test_each_level_keeps_its_own_batchnorm_statistics():
    m = tnet(levels=2, grid=3, overlap=0.5, locations=2)
    norm = m._level_norms[0]
    before = [n.running_mean.clone() for n in norm.norms]
    m.train()
    x = torch.rand(2, 1, 240, 200)
    x[:, :, :, :100] = 0  # make the coarse view and the cells differ in statistics
    m(x)
    after = [n.running_mean for n in norm.norms]
    assert not torch.equal(before[0], after[0]) and not torch.equal(before[1], after[1])
    assert not torch.allclose(after[0], after[1])


def test_timm_backbone_by_name():
    m = create_model("tnet", num_classes=4, backbone="timm/resnet18", in_chans=3, levels=2, grid=3, overlap=0.5,
                     base_resolution=64, locations=2)
    out = m(torch.rand(1, 3, 128, 128))
    assert out.logits.shape == (1, 4)
    # every BatchNorm of the backbone has one copy per level: no statistics shared across scales
    from foveate.layers import LevelBatchNorm2d

    level_norms = [mod for mod in m.backbone.modules() if isinstance(mod, LevelBatchNorm2d)]
    assert level_norms and all(len(n.norms) == 2 for n in level_norms)
    bns = [mod for mod in m.backbone.modules() if isinstance(mod, torch.nn.BatchNorm2d)]
    assert len(bns) == 2 * len(level_norms)
    with pytest.raises(FoveateError, match="unknown timm model"):
        create_model("tnet", num_classes=4, backbone="timm/not_a_model")
    with pytest.raises(FoveateError, match="unknown backbone"):
        create_model("tnet", num_classes=4, backbone="resnet_nope")

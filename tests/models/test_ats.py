import itertools

import pytest
import torch

from foveate.errors import FoveateError
from foveate.geometry import gather_crops, projected_corners
from foveate.models import create_model
from foveate.training.callbacks import recalibrate_batchnorm


def ats(**kw):
    args = {"num_classes": 3, "backbone": "tiny_cnn", "scale": 0.25, "patch_size": 20, "locations": 4}
    args.update(kw)
    return create_model("ats", **args)


def test_projected_corners_reference_megapixel_mnist():
    # L_low = G = 180, L_high = 1500, rf = 0: step 8.33, start(i) = round(8.33 i + 4.17 - 25)
    starts = projected_corners(180, 180, 1500, 50)
    assert starts[0] == -21 and len(starts) == 180
    for i in (0, 1, 90, 179):
        assert abs(starts[i] + 25 - (i + 0.5) * 1500 / 180) <= 0.5  # centred on the cell centre


def test_projected_corners_with_receptive_field():
    # speed limits, rows: 288 low, 960 high, 35 cells, rf 9: step (288-9)*(10/3)/35 = 26.57 px
    starts = projected_corners(35, 288, 960, 100, receptive_field=9)
    steps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(steps) >= 26 and max(steps) <= 27
    assert starts[0] == round(4.5 * 960 / 288 + 26.571 / 2 - 50)


def test_gather_crops_match_slices_and_zero_fill():
    x = torch.arange(2 * 30 * 40, dtype=torch.float32).reshape(2, 1, 30, 40) + 1
    top, left = torch.tensor([[-5, 10], [25, 0]]), torch.tensor([[-3, 20], [35, 0]])
    crops = gather_crops(x, top, left, (8, 8))
    assert crops.shape == (4, 1, 8, 8)
    padded = torch.nn.functional.pad(x, (8, 8, 8, 8))
    for b in range(2):
        for k in range(2):
            t, l = int(top[b, k]) + 8, int(left[b, k]) + 8
            assert torch.equal(crops[b * 2 + k], padded[b, :, t:t + 8, l:l + 8])
    assert (crops[0, :, :5, :] == 0).all() and (crops[0, :, 5:, 3:] > 0).all()


def test_output_trace_and_gradients():
    torch.manual_seed(0)
    model = ats()
    x = torch.rand(2, 1, 160, 120)
    out = model(x)
    assert out.logits.shape == (2, 3)
    g = out.trace[0]
    assert g.boxes.shape == (2, 4, 4) and g.chosen.all()
    assert g.heatmap.shape == (2, 40, 30)
    torch.testing.assert_close(g.heatmap.sum(dim=(1, 2)), torch.ones(2))
    assert ((g.boxes[..., 2] - g.boxes[..., 0]) == 20).all()
    # the trace's probabilities are the attention of the drawn cells, which are distinct
    a = g.heatmap.reshape(2, -1)
    for b in range(2):
        cy = ((g.boxes[b, :, 1] + g.boxes[b, :, 3]) / 2 / 4).floor().long()  # centre -> low-res cell
        cx = ((g.boxes[b, :, 0] + g.boxes[b, :, 2]) / 2 / 4).floor().long()
        torch.testing.assert_close(a[b, cy * 30 + cx], g.probs[b])
        assert len(set((cy * 30 + cx).tolist())) == 4
    losses = model.loss(out, torch.tensor([0, 2]))
    losses["loss"].backward()
    assert model.attention.net[0].weight.grad.abs().sum() > 0  # through the estimator
    assert model.features.body[0][0].weight.grad.abs().sum() > 0
    assert model.head.weight.grad.abs().sum() > 0


def test_eval_sampling_is_repeatable_and_topk_takes_the_most_attended():
    torch.manual_seed(1)
    model = ats().eval()
    x = torch.rand(2, 1, 160, 160)
    with torch.no_grad():
        first, second = model(x), model(x)
        assert torch.equal(first.logits, second.logits)
        model.eval_mode = "topk"
        top = model(x, locations=6).trace[0]
    best = top.heatmap.reshape(2, -1).topk(6).values
    torch.testing.assert_close(top.probs, best)  # best first, in descending order


def test_with_replacement_may_repeat_and_allows_more_draws_than_positions():
    model = ats(replace=True, attention_pool=8, locations=30)  # 40x40 view -> 5x5 = 25 positions
    out = model(torch.rand(1, 1, 160, 160))
    assert out.logits.shape == (1, 3) and torch.isfinite(out.logits).all()


def test_bad_input_and_budgets():
    model = ats(attention_pool=8)
    with pytest.raises(FoveateError, match="cannot draw 30 distinct positions of 25"):
        model(torch.rand(1, 1, 160, 160), locations=30)
    with pytest.raises(FoveateError, match="smaller than the patch size 20"):
        model(torch.rand(1, 1, 160, 16))
    with pytest.raises(FoveateError, match="receptive field"):
        ats()(torch.rand(1, 1, 24, 24))  # 6 px view < 7 px receptive field
    with pytest.raises(FoveateError, match="channel"):
        model(torch.rand(1, 3, 160, 160))
    for bad in (0, -2, 2.5, "3"):
        with pytest.raises(FoveateError, match="positive integer"):
            model(torch.rand(1, 1, 160, 160), locations=bad)
    with pytest.raises(FoveateError, match="eval_mode"):
        ats(eval_mode="greedy")
    with pytest.raises(FoveateError, match="multi-label"):
        model.loss(model(torch.rand(1, 1, 160, 160)), torch.zeros(1, 3))


def test_collapsed_or_non_finite_attention_gives_finite_outputs():
    model = ats()
    with torch.no_grad():
        model.attention.net[-1].bias.fill_(float("nan"))
    out = model(torch.rand(2, 1, 160, 160))
    assert torch.isfinite(out.logits).all() and torch.isfinite(out.trace[0].heatmap).all()
    with torch.no_grad():  # one position with +inf logit: a collapses, smoothing keeps the rest > 0
        model.attention.net[-1].bias.fill_(0.0)
        model.attention.net[-1].weight.zero_()
    model.attention.net[-1].register_forward_hook(lambda m, i, o: o.index_put((torch.tensor([0]),) * 2 + (
        torch.tensor([3]), torch.tensor([3])), torch.tensor(float("inf"))))
    out = model(torch.rand(1, 1, 160, 160))
    loss = model.loss(out, torch.tensor([1]))["loss"]
    loss.backward()
    assert torch.isfinite(out.logits).all() and torch.isfinite(loss)
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def bars(n, generator, side=96):
    """Black images with one 12x12 mark at a random spot: class 0 horizontal bar, 1 vertical
    bar, 2 filled square."""
    x = torch.zeros(n, 1, side, side)
    y = torch.randint(0, 3, (n,), generator=generator)
    pos = torch.randint(0, side - 12, (n, 2), generator=generator)
    for i in range(n):
        r, c = pos[i].tolist()
        mark = torch.zeros(12, 12)
        if y[i] == 0:
            mark[5:7] = 1
        elif y[i] == 1:
            mark[:, 5:7] = 1
        else:
            mark[2:10, 2:10] = 1
        x[i, 0, r:r + 12, c:c + 12] = mark
    return x, y


def test_learns_to_find_and_classify_a_small_mark():
    """3 patches of 32 px in a 96x96 image: the attention must find the 12-px mark (a random
    patch holds it ~1 time in 5). Learning starts slowly, then jumps (~120 steps here)."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = ats(locations=3, patch_size=32, entropy_weight=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(200):
        x, y = bars(16, g)
        loss = model.loss(model(x), y)["loss"]
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    recalibrate_batchnorm(model, (bars(16, g)[0] for _ in range(10)), 10)
    model.eval()
    x, y = bars(96, g)
    with torch.no_grad():
        out = model(x)
    acc = (out.logits.argmax(-1) == y).float().mean().item()
    assert acc > 0.85, acc  # chance is 1/3
    # the attention found it: the mark's low-res cells hold far more than their uniform share
    mass = torch.stack([out.trace[0].heatmap[i][(x[i, 0] > 0).reshape(24, 4, 24, 4).any(-1).any(1)].sum()
                        for i in range(96)])
    assert mass.median() > 0.3, mass.median()  # uniform share: ~16 / 576 = 0.03

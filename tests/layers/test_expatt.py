"""ExpAtt: the separable form equals the dense (HW, HW) formula, its limits (identity, global mean),
gradients reach the radius, one parameter per module besides the value projection, cost and
memory scale as HW(H + W)C, and bad radii are one-line errors, never NaN."""
import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from foveate.errors import FoveateError
from foveate.layers import ExpAtt, attention_matrices, dense_expatt, expatt
from foveate.profiling import peak_memory


@pytest.mark.parametrize("coords", ["normalized", "pixels"])
@pytest.mark.parametrize("sigma", [0.05, 0.3, 2.0])
def test_separable_equals_dense_fp64(coords, sigma):
    v = torch.randn(2, 3, 7, 11, dtype=torch.float64)  # H != W
    s = sigma * (7 if coords == "pixels" else 1)
    sep, dense = expatt(v, s, coords), dense_expatt(v, s, coords)
    assert sep.shape == v.shape and sep.dtype == torch.float64
    assert (sep - dense).abs().max() < 1e-12


def test_rows_sum_to_one_and_limits():
    a_h, a_w = attention_matrices(9, 5, torch.tensor(0.2, dtype=torch.float64), dtype=torch.float64)
    assert a_h.shape == (9, 9) and a_w.shape == (5, 5)
    assert torch.allclose(a_h.sum(1), torch.ones(9, dtype=torch.float64), atol=1e-14)
    assert torch.allclose(a_w.sum(1), torch.ones(5, dtype=torch.float64), atol=1e-14)
    v = torch.randn(2, 4, 6, 10, dtype=torch.float64)
    assert torch.equal(expatt(v, 1e-3, "pixels"), v)  # sigma -> 0: identity
    mean = v.mean(dim=(2, 3), keepdim=True).expand_as(v)
    assert (expatt(v, 1e4, "pixels") - mean).abs().max() < 1e-6  # sigma -> inf: global mean
    # interior rows are an ordinary (unrenormalised) Gaussian, border rows renormalised inside the map
    row = attention_matrices(41, 41, 2.0, "pixels", dtype=torch.float64)[0][20]
    g = torch.exp(-(torch.arange(41, dtype=torch.float64) - 20) ** 2 / 8)
    assert torch.allclose(row, g / g.sum(), atol=1e-15)


def test_tiny_radius_gives_one_hot_rows_not_nan():
    v = torch.randn(1, 2, 5, 8)
    for sigma in (1e-3, 1e-20, 1e-45, torch.tensor(1e-30, requires_grad=True)):
        out = expatt(v, sigma)
        assert torch.equal(out, v), sigma
    s = torch.tensor(1e-30, requires_grad=True)
    expatt(v, s).sum().backward()
    assert torch.isfinite(s.grad)


def test_gradients_reach_sigma_and_gradcheck():
    m = ExpAtt(3, 4).double()
    x = torch.randn(2, 3, 6, 9, dtype=torch.float64)
    m(x).pow(2).sum().backward()
    assert m.theta.grad is not None and m.theta.grad != 0
    assert m.value.weight.grad is not None
    v = torch.randn(1, 2, 3, 4, dtype=torch.float64, requires_grad=True)  # H != W
    theta = torch.tensor(-1.0, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, t: expatt(v, torch.nn.functional.softplus(t) + 1e-3), (v, theta))


def test_one_parameter_per_module_besides_the_value_projection():
    """What counts: `theta` (the radius) is the module's own parameter; the value projection is a
    bias-free 1x1 conv, C_out x C_in weights; without it theta is the only parameter."""
    m = ExpAtt(16, 8)
    assert {n: p.numel() for n, p in m.named_parameters()} == {"theta": 1, "value.weight": 8 * 16}
    bare = ExpAtt(16, project=False)
    assert [n for n, _ in bare.named_parameters()] == ["theta"]
    assert torch.isclose(m.sigma, torch.tensor(0.1)) and torch.isclose(ExpAtt(4, coords="pixels").sigma,
                                                                       torch.tensor(1.5))
    assert torch.isclose(ExpAtt(4, sigma_init=0.5, sigma_min=0.2).sigma, torch.tensor(0.5))


def test_flops_are_the_two_matmuls_plus_the_projection():
    n, cin, cout, h, w = 2, 5, 6, 12, 20
    m = ExpAtt(cin, cout)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        m(torch.randn(n, cin, h, w))
    macs = n * h * w * (h + w) * cout + n * h * w * cin * cout
    assert counter.get_total_flops() == 2 * macs


def test_256_map_never_builds_an_hw_squared_tensor():
    """(HW)^2 floats would be 17 GB for 256x256; the forward and backward stay within a few copies
    of the map plus H^2 + W^2."""
    x = torch.randn(1, 8, 256, 256)  # 2 MB
    m = ExpAtt(8, 8)

    def step():
        m(x).sum().backward()

    peak = peak_memory(step)
    assert peak < 8 * x.numel() * 4 + 4 * 2 * 256 ** 2 * 4, f"{peak / 1e6:.1f} MB"


def test_bad_input_is_one_line_error():
    v = torch.randn(1, 2, 4, 4)
    for sigma in (0.0, -1.0, math.nan, math.inf, torch.tensor(math.nan), torch.tensor(-2.0)):
        with pytest.raises(FoveateError, match="sigma"):
            expatt(v, sigma)
    with pytest.raises(FoveateError, match="coords"):
        expatt(v, 0.1, "meters")
    with pytest.raises(FoveateError, match=r"\(N, C, H, W\)"):
        expatt(v[0], 0.1)
    for kwargs in ({"sigma_init": 0.0}, {"sigma_init": math.nan}, {"sigma_min": -1e-3}, {"sigma_min": math.inf},
                   {"sigma_init": 1e-4}, {"coords": "px"}):
        with pytest.raises(FoveateError, match="ExpAtt"):
            ExpAtt(4, **kwargs)
    m = ExpAtt(2)
    with torch.no_grad():
        m.theta.fill_(math.nan)
    with pytest.raises(FoveateError, match="diverged"):
        m(v)
    with pytest.raises(FoveateError, match=r"\(N, 2, H, W\)"):
        ExpAtt(2)(torch.randn(1, 3, 4, 4))
    with pytest.raises(FoveateError, match="dense_expatt"):
        dense_expatt(torch.randn(1, 1, 100, 100), 0.1)


def test_normalized_radius_covers_the_same_image_extent_at_any_resolution():
    """Normalised coordinates: the same sigma blurs a 2x-upsampled map over twice the pixels."""
    small = torch.zeros(1, 1, 16, 16)
    small[..., 8, 8] = 1
    big = torch.zeros(1, 1, 32, 32)
    big[..., 16, 16] = 1
    ps, pb = expatt(small, 0.1)[0, 0, 8], expatt(big, 0.1)[0, 0, 16]
    width = [(p > p.max() / 2).sum().item() for p in (ps, pb)]  # full width at half maximum, px
    assert abs(width[1] - 2 * width[0]) <= 1

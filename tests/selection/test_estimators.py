"""The attention-sampling estimator and its gradients are unbiased: exact enumeration of every
ordered draw on a small problem, then Monte-Carlo through the real samplers."""
import itertools
import math

import pytest
import torch

from foveate.errors import FoveateError
from foveate.selection import (
    entropy_regulariser,
    estimator_weights,
    expectation,
    sample_with_replacement,
    sample_without_replacement,
)

K, N, D = 6, 3, 4


def problem(seed=0):
    g = torch.Generator().manual_seed(seed)
    a = torch.softmax(torch.randn(1, K, generator=g, dtype=torch.float64) * 1.5, dim=-1)
    f = torch.randn(1, K, D, generator=g, dtype=torch.float64)
    upstream = torch.randn(1, D, generator=g, dtype=torch.float64)
    return a, f, upstream


def draw_probability(a, seq, replace):
    p, taken = 1.0, 0.0
    for q in seq:
        p *= float(a[0, q]) / (1.0 if replace else 1.0 - taken)
        taken += float(a[0, q])
    return p


def estimate_and_grads(a, f, seq, replace, upstream):
    """F, dL/da (K,), dL/df (K, D) for one ordered draw, with L = <F, upstream>."""
    a = a.clone().requires_grad_(True)
    f = f.clone().requires_grad_(True)
    idx = torch.tensor([seq])
    est = expectation(a, f[:, idx[0]], idx, replace)  # features of the drawn positions
    (est * upstream).sum().backward()
    return est.detach()[0], a.grad[0], f.grad[0]


@pytest.mark.parametrize("replace", [False, True])
def test_exact_enumeration_unbiased(replace):
    a, f, upstream = problem()
    seqs = (itertools.product(range(K), repeat=N) if replace else itertools.permutations(range(K), N))
    mean_f, mean_ga, mean_gf, total = torch.zeros(D, dtype=torch.float64), 0, 0, 0.0
    for seq in seqs:
        p = draw_probability(a, seq, replace)
        est, ga, gf = estimate_and_grads(a, f, list(seq), replace, upstream)
        mean_f, mean_ga, mean_gf, total = mean_f + p * est, mean_ga + p * ga, mean_gf + p * gf, total + p
    assert total == pytest.approx(1.0, abs=1e-12)
    phi = (a[0, :, None] * f[0]).sum(0)
    torch.testing.assert_close(mean_f, phi, rtol=0, atol=1e-12)
    # dPhi/da_i = <f_i, upstream>; dPhi/df_i = a_i upstream
    torch.testing.assert_close(mean_ga, f[0] @ upstream[0], rtol=0, atol=1e-12)
    torch.testing.assert_close(mean_gf, a[0, :, None] * upstream[0], rtol=0, atol=1e-12)


def test_weights_sum_to_one_without_replacement():
    a = torch.softmax(torch.randn(8, 50) * 3, dim=-1)
    idx = sample_without_replacement(a, 10)
    w = estimator_weights(a, idx, replace=False)
    assert (w > 0).all()
    torch.testing.assert_close(w.sum(-1), torch.ones(8))


@pytest.mark.parametrize("replace", [False, True])
def test_monte_carlo_through_samplers(replace):
    """Gumbel-top-k / multinomial draws feed the estimator; the MC mean of F and of its attention
    gradient match the exact values within 5 standard errors (from the draws' own spread)."""
    a, f, upstream = problem(1)
    draws = 20000
    sample = sample_with_replacement if replace else sample_without_replacement
    gen = torch.Generator().manual_seed(0)
    idx = sample(a.expand(draws, K), N, generator=gen)  # (draws, N)
    A = a.expand(draws, K).clone().requires_grad_(True)
    F = f.expand(draws, K, D)
    feats = F.gather(1, idx[..., None].expand(-1, -1, D))
    est = expectation(A, feats, idx, replace)  # (draws, D)
    (est @ upstream[0]).sum().backward()
    phi = (a[0, :, None] * f[0]).sum(0)
    for values, exact in [(est.detach(), phi), (A.grad, f[0] @ upstream[0])]:
        se = values.std(0) / math.sqrt(draws)
        assert ((values.mean(0) - exact).abs() <= 5 * se + 1e-9).all(), (values.mean(0), exact, se)


def test_ordered_draw_frequencies_match_sequential_sampling():
    """Gumbel-top-k order = sequential draws without replacement: first-two-draw frequencies."""
    a = torch.tensor([[0.5, 0.3, 0.15, 0.05]])
    draws = 40000
    idx = sample_without_replacement(a.expand(draws, 4), 2, generator=torch.Generator().manual_seed(3))
    for i, j in [(0, 1), (1, 0), (2, 3), (3, 0)]:
        p = float(a[0, i] * a[0, j] / (1 - a[0, i]))
        freq = ((idx[:, 0] == i) & (idx[:, 1] == j)).double().mean().item()
        assert abs(freq - p) <= 5 * math.sqrt(p * (1 - p) / draws)


def test_peaked_attention_in_fp32_stays_finite():
    a = torch.full((2, 1000), 1e-5 / 1000)
    a[:, 7] += 1 - 1e-5
    idx = sample_without_replacement(a, 10)
    feats = torch.nn.functional.normalize(torch.randn(2, 10, 8), dim=-1)
    A = a.clone().requires_grad_(True)
    out = expectation(A, feats, idx, replace=False)
    out.sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(A.grad).all()


def test_entropy_regulariser_is_negative_entropy():
    uniform = torch.full((1, 8), 1 / 8)
    peaked = torch.tensor([[0.93] + [0.01] * 7])
    assert entropy_regulariser(uniform) == pytest.approx(-math.log(8), abs=1e-4)
    assert entropy_regulariser(peaked) > entropy_regulariser(uniform)


def test_too_many_samples_without_replacement():
    with pytest.raises(FoveateError, match="cannot draw 5 distinct positions of 4"):
        sample_without_replacement(torch.full((1, 4), 0.25), 5)
    with pytest.raises(FoveateError, match="samples"):
        sample_with_replacement(torch.full((1, 4), 0.25), 0)

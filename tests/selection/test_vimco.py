"""VIMCO's leave-one-out surrogate and Saccader's batch-mean REINFORCE, against the formulas."""
import itertools
import math

import pytest
import torch

from foveate.selection import batch_mean_reinforce, vimco_loss, vimco_signal


def _signal_by_hand(w: list[float]) -> list[float]:
    """L - L^(-k), L^(-k) with w_k replaced by the geometric mean of the others (spec §8)."""
    kk = len(w)
    bound = math.log(sum(w) / kk)
    out = []
    for k in range(kk):
        others = [w[j] for j in range(kk) if j != k]
        geo = math.exp(sum(math.log(v) for v in others) / len(others))
        out.append(bound - math.log((sum(others) + geo) / kk))
    return out


def test_gradient_matches_the_formula():
    w = torch.tensor([[0.7, 0.1, 0.2], [0.05, 0.05, 0.9]], dtype=torch.float64)
    logw = w.log().requires_grad_(True)
    log_pi = torch.randn(2, 3, dtype=torch.float64, requires_grad=True)
    loss, bound = vimco_loss(logw, log_pi)
    loss.backward()
    for b in range(2):
        ws = w[b].tolist()
        # d loss / d logw_k = -w~_k / B ; d loss / d log pi_k = -(L - L^(-k)) / B
        expected_w = torch.tensor([v / sum(ws) for v in ws], dtype=torch.float64)
        assert torch.allclose(logw.grad[b], -expected_w / 2, atol=1e-12)
        assert torch.allclose(log_pi.grad[b], -torch.tensor(_signal_by_hand(ws), dtype=torch.float64) / 2, atol=1e-12)
    assert bound.item() == pytest.approx(sum(math.log(sum(r) / 3) for r in w.tolist()) / 2, abs=1e-12)


def test_leave_one_out_signal():
    # equal weights: nobody beats the others, no signal
    _, s = vimco_signal(torch.zeros(1, 4))
    assert torch.allclose(s, torch.zeros(1, 4), atol=1e-6)
    # a sample better than the others' geometric mean is pushed up, a worse one down; the signal
    # of sample k does not depend on... its own identity only through w_k
    lw = torch.log(torch.tensor([[0.9, 0.1, 0.1, 0.1]]))
    _, s = vimco_signal(lw)
    assert s[0, 0] > 0 and (s[0, 1:] < 0).all() and torch.allclose(s[0, 1:], s[0, 1:2].expand(3))
    with pytest.raises(ValueError):
        vimco_signal(torch.zeros(2, 1))


def test_expected_gradient_is_the_bound_gradient_by_enumeration():
    """E over K i.i.d. samples of the surrogate's gradient == grad E[L_K] (score function with a
    leave-one-out baseline that does not depend on the sample it baselines). Exact enumeration."""
    theta = torch.tensor([0.3, -0.5, 0.1], dtype=torch.float64, requires_grad=True)   # policy over 3 cells
    phi = torch.tensor([0.2, 1.0, -0.4], dtype=torch.float64, requires_grad=True)     # classifier: log w(l) = log sigmoid(phi_l)
    kk = 2

    def logw_of(ls):
        return torch.nn.functional.logsigmoid(phi[list(ls)])

    # exact: E_pi[L_K] by enumerating every ordered K-tuple
    logp = torch.log_softmax(theta, 0)
    exact = sum(torch.exp(logp[list(ls)].sum()) * (torch.logsumexp(logw_of(ls), 0) - math.log(kk))
                for ls in itertools.product(range(3), repeat=kk))
    g_theta, g_phi = torch.autograd.grad(exact, (theta, phi))

    # expected surrogate gradient (probability-weighted, weights without gradient)
    est_theta = torch.zeros(3, dtype=torch.float64)
    est_phi = torch.zeros(3, dtype=torch.float64)
    for ls in itertools.product(range(3), repeat=kk):
        logp = torch.log_softmax(theta, 0)
        loss, _ = vimco_loss(logw_of(ls)[None], logp[list(ls)][None])
        gt, gp = torch.autograd.grad(-loss, (theta, phi))
        prob = torch.exp(logp[list(ls)].sum()).detach()
        est_theta += prob * gt
        est_phi += prob * gp
    assert torch.allclose(est_theta, g_theta, atol=1e-12)
    assert torch.allclose(est_phi, g_phi, atol=1e-12)


def test_batch_mean_reinforce():
    logp = torch.zeros(4, 3, requires_grad=True)
    r = torch.tensor([1.0, 0.0, 1.0, 1.0])
    batch_mean_reinforce(logp, r).backward()
    expected = -(r - r.mean())[:, None].expand(4, 3) / 12
    assert torch.allclose(logp.grad, expected)
    # the reward carries no gradient
    r2 = r.clone().requires_grad_(True)
    batch_mean_reinforce(torch.zeros(4, 3, requires_grad=True), r2).backward()
    assert r2.grad is None

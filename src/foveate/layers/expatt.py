"""ExpAtt: content-independent Gaussian attention with one learnable radius (Tan et al., AAAI 2021).

Every output pixel is a softmax-weighted mean of the values over the whole map, with weights
exp(-|p_i - p_j|^2 / 2 sigma^2) that depend only on distance, never on content:

    A_ij = softmax_j(-|p_i - p_j|^2 / (2 sigma^2)),    O[:, i] = sum_j A_ij V[:, j]

The Gaussian and its row normaliser both factorise over the two axes, so A = A_H (x) A_W and
O = A_H @ V @ A_W^T per channel: HW(H + W)C multiply-adds and H^2 + W^2 extra floats instead of
(HW)^2 C and (HW)^2. The module is a border-renormalised Gaussian blur of learnable width that
goes from identity (sigma -> 0) to global average pooling broadcast back (sigma -> inf).

Labels as in the spec (`explicit_attention.md`): the formula above is [inferred] (the paper
states a Gaussian kernel with one learnable radius, content-independent, no keys, queries or
positional encodings; its equations are not reproduced in the spec), the separable form is
[derived] (exact), the rest is marked where it is decided.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..errors import FoveateError

COORDS = ("normalized", "pixels")
SIGMA_FLOOR = 1e-12
"""Radii below this act as this value (the rows are one-hot long before: a neighbour one pixel
away on a 10^4-pixel map gets weight exp(-5e15)). It keeps 1 / sigma^2 finite in fp32, so a
tiny radius gives the identity and zero gradient, never inf * 0 = NaN."""
DENSE_MAX_POSITIONS = 4096


def _check_coords(coords: str) -> None:
    if coords not in COORDS:
        raise FoveateError(f"ExpAtt coords must be one of {', '.join(COORDS)}, got {coords!r}")


def _check_positive_finite(name: str, value: float) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise FoveateError(f"ExpAtt {name} must be a number, got {value!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise FoveateError(f"ExpAtt {name} must be a finite number > 0, got {value!r}")
    return value


def _check_sigma(sigma: Tensor | float) -> Tensor | float:
    """A radius from a caller or a parameter: finite and > 0, or a one-line error."""
    if isinstance(sigma, Tensor):
        if sigma.numel() != 1:
            raise FoveateError(f"ExpAtt sigma must be one scalar, got shape {tuple(sigma.shape)}")
        if not torch.compiler.is_compiling():
            s = float(sigma.detach())
            if not math.isfinite(s) or s <= 0:
                raise FoveateError(f"ExpAtt radius sigma must be finite and > 0, got {s} "
                                   "(a non-finite learned radius means training diverged)")
        return sigma.reshape(())
    return _check_positive_finite("sigma", sigma)


def _unit(h: int, w: int, coords: str) -> float:
    """Length of one feature-map pixel in the chosen coordinates."""
    return 1.0 / max(h, w) if coords == "normalized" else 1.0


def gaussian_attention_1d(n: int, sigma: Tensor | float, unit: float = 1.0, *,
                          dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> Tensor:
    """(n, n) row-stochastic matrix: row a is softmax_b(-((a - b) unit)^2 / (2 sigma^2)).

    A softmax of negative squared distances: the diagonal logit is 0, the row maximum, so the
    denominator is >= 1 and a tiny sigma gives one-hot rows, never 0/0.
    """
    a = torch.arange(n, dtype=dtype, device=device) * unit  # (n,)
    d2 = (a[:, None] - a[None, :]) ** 2  # (n, n)
    if isinstance(sigma, Tensor):
        sigma = sigma.to(dtype).clamp(min=SIGMA_FLOOR)
    else:
        sigma = max(sigma, SIGMA_FLOOR)
    return torch.softmax(-d2 / (2 * sigma ** 2), dim=1)


def attention_matrices(h: int, w: int, sigma: Tensor | float, coords: str = "normalized", *,
                       dtype: torch.dtype = torch.float32,
                       device: torch.device | str | None = None) -> tuple[Tensor, Tensor]:
    """A_H (h, h) and A_W (w, w), the two factors of the (hw, hw) map A = A_H (x) A_W."""
    _check_coords(coords)
    sigma = _check_sigma(sigma)
    unit = _unit(h, w, coords)
    return (gaussian_attention_1d(h, sigma, unit, dtype=dtype, device=device),
            gaussian_attention_1d(w, sigma, unit, dtype=dtype, device=device))


def _matrix_dtype(v: Tensor) -> torch.dtype:
    """fp32 at least (the spec: build the maps in fp32 under autocast), fp64 for fp64 input."""
    return torch.float64 if v.dtype == torch.float64 else torch.float32


def expatt(v: Tensor, sigma: Tensor | float, coords: str = "normalized") -> Tensor:
    """Separable Gaussian attention, O = A_H @ V @ A_W^T for every (batch, channel).

    Args:
        v: (N, C, H, W) values.
        sigma: radius, a float or a 0-d / one-element tensor (gradients flow to it), finite, > 0;
            in units of `coords`.
        coords: "normalized" (positions divided by max(H, W): sigma is a fraction of the longer
            side and transfers across resolutions) or "pixels" (feature-map pixels).
    Returns:
        (N, C, H, W), same dtype as v. Cost HW(H + W)C multiply-adds; memory H^2 + W^2 beyond
        the output.
    """
    if not isinstance(v, Tensor) or v.dim() != 4:
        raise FoveateError(f"expatt expects values of shape (N, C, H, W), got {_shape(v)}")
    h, w = v.shape[-2:]
    a_h, a_w = attention_matrices(h, w, sigma, coords, dtype=_matrix_dtype(v), device=v.device)
    a_h, a_w = a_h.to(v.dtype), a_w.to(v.dtype)
    out = torch.matmul(v, a_w.transpose(0, 1))  # (N, C, H, W): mixes along W, one (NCH, W) @ (W, W)
    return torch.matmul(a_h, out)  # (N, C, H, W): mixes along H


def dense_expatt(v: Tensor, sigma: Tensor | float, coords: str = "normalized") -> Tensor:
    """Reference for tests: the same output through the full (HW, HW) attention map built from
    2-D distances (never used by the module; refuses maps above 4096 positions)."""
    if not isinstance(v, Tensor) or v.dim() != 4:
        raise FoveateError(f"dense_expatt expects values of shape (N, C, H, W), got {_shape(v)}")
    _check_coords(coords)
    sigma = _check_sigma(sigma)
    n, c, h, w = v.shape
    if h * w > DENSE_MAX_POSITIONS:
        raise FoveateError(f"dense_expatt builds an (HW)^2 map; {h}x{w} is above {DENSE_MAX_POSITIONS} positions")
    unit = _unit(h, w, coords)
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    p = torch.stack([rows.flatten(), cols.flatten()], 1).to(v.dtype).to(v.device) * unit  # (HW, 2)
    d2 = ((p[:, None, :] - p[None, :, :]) ** 2).sum(-1)  # (HW, HW)
    s = sigma.to(v.dtype) if isinstance(sigma, Tensor) else sigma
    a = torch.softmax(-d2 / (2 * s ** 2), dim=1)  # (HW, HW)
    return torch.einsum("ij,ncj->nci", a, v.flatten(2)).reshape(n, c, h, w)


def _shape(x: object) -> str:
    return str(tuple(x.shape)) if isinstance(x, Tensor) else type(x).__name__


def _softplus_inverse(y: float) -> float:
    return y + math.log(-math.expm1(-y))  # log(exp(y) - 1), stable for large y


class ExpAtt(nn.Module):
    """Values V = W_v X (1x1 conv), then O = A_H @ V @ A_W^T with sigma = softplus(theta) + sigma_min.

    Parameters: `theta`, the single scalar the paper gives each module, plus the value projection
    (`value.weight`, C_out x C_in) when `project=True`.
    - value projection [inferred]: the paper rules out keys, queries and positional encodings and
      says nothing of values; a bias-free 1x1 conv (AA-Net's value projection; a BatchNorm follows
      in ResNet blocks) lets a block give the attention branch its own channels. project=False
      attends over X itself (then theta is the only parameter).
    - no residual or output projection inside the module [choice]: blocks decide how O joins
      their path (`backbones.expatt_resnet`: concatenated beside a conv, or added with a zero-init gain).
    - sigma = softplus(theta) + sigma_min [choice, the spec's]: sigma > 0 for every theta.
    - coords "normalized" by default [choice]: both axes divided by max(H, W), so the kernel stays
      isotropic and sigma is a fraction of the map's longer side, the same image extent at every
      input resolution (foveate runs one set of weights at several scales). "pixels": feature-map
      pixels.
    - sigma_init 0.1 normalised (2.8 px on a 28-px map, 0.7 px on a 7-px map) or 1.5 pixels
      [choice]: the spec's "start local". On maps of 3 px or less 0.1 is nearly the identity and
      theta gets almost no gradient (measured in benchmarks/expatt_digits.py: it stays at 0.100).
    - The two 1-D maps are rebuilt at every call (H^2 + W^2 exponentials, negligible beside the
      matmuls) instead of being cached: no stale cache after an optimiser step.

    Shapes: (N, C_in, H, W) -> (N, C_out, H, W).
    """

    def __init__(self, in_channels: int, out_channels: int | None = None, *, project: bool = True,
                 sigma_init: float | None = None, sigma_min: float = 1e-3, coords: str = "normalized") -> None:
        super().__init__()
        _check_coords(coords)
        if not isinstance(in_channels, int) or in_channels < 1:
            raise FoveateError(f"ExpAtt in_channels must be a positive integer, got {in_channels!r}")
        out_channels = in_channels if out_channels is None else out_channels
        if not isinstance(out_channels, int) or out_channels < 1:
            raise FoveateError(f"ExpAtt out_channels must be a positive integer, got {out_channels!r}")
        if not project and out_channels != in_channels:
            raise FoveateError(f"ExpAtt without a value projection keeps the channels: "
                               f"out_channels {out_channels} != in_channels {in_channels}")
        if sigma_init is None:
            sigma_init = 0.1 if coords == "normalized" else 1.5
        sigma_init = _check_positive_finite("sigma_init", sigma_init)
        self.sigma_min = _check_positive_finite("sigma_min", sigma_min)
        if sigma_init <= self.sigma_min:
            raise FoveateError(f"ExpAtt sigma_init {sigma_init:g} must be above sigma_min {self.sigma_min:g}")
        self.coords = coords
        self.in_channels, self.out_channels = in_channels, out_channels
        self.value = nn.Conv2d(in_channels, out_channels, 1, bias=False) if project else nn.Identity()
        self.theta = nn.Parameter(torch.tensor(_softplus_inverse(sigma_init - self.sigma_min)))

    @property
    def sigma(self) -> Tensor:
        """0-d radius in `coords` units (differentiable)."""
        return F.softplus(self.theta) + self.sigma_min

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise FoveateError(f"ExpAtt expects (N, {self.in_channels}, H, W), got {tuple(x.shape)}")
        return expatt(self.value(x), self.sigma, self.coords)  # (N, C_out, H, W)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, coords={self.coords!r}, "
                f"sigma_min={self.sigma_min:g}, project={not isinstance(self.value, nn.Identity)}")

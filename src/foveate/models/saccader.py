"""Saccader (Elsayed, Kornblith & Le, NeurIPS 2019); spec: shared/reference/saccader.md.

A BagNet representation network turns the image into a grid of per-cell class logits (each cell
sees only its receptive field); an attention ("where") network and a mixing layer give every cell
a descriptor M; a recurrent cell picks T cells one after another, a memory of visited cells
forbidding repeats. The prediction is the mean of the class logits at the picked cells, so a
glimpse is a *selection* among logits computed once, not a crop: Saccader buys interpretable hard
attention, not compute.

Training is staged (`stage`, set per stage of a `stages:` config): "representation" (CE on the
spatially averaged logits; only the BagNet learns), "pretrain" (location pretraining without
location labels: T_pre teacher-forced steps towards the cells ranked by the predicted or true
class's logit; representation frozen), "policy" (CE + REINFORCE with a batch-mean baseline, or
VIMCO's leave-one-out estimator over K trajectories, + L2). With hard selection CE reaches only
the representation and the policy terms only the attention network, mixing layer and cell (the
representation's maps are detached on the "where" path; sampled indices carry no gradient).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..backbones import create_backbone
from ..errors import FoveateError
from ..selection import batch_mean_reinforce, vimco_loss
from ..sources.region import RegionSource, as_source
from .common import class_targets, network_range
from .output import Glimpses, Output
from .registry import register_model

STAGES = ("representation", "pretrain", "policy")
ESTIMATORS = ("reinforce", "vimco")
POLICIES = ("learned", "ordered_logits", "random")


def _conv_bn_relu(cin: int, cout: int, kernel: int, dilation: int = 1) -> list[nn.Module]:
    pad = dilation * (kernel - 1) // 2   # "same"
    return [nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True)]


class WhereNetwork(nn.Module):
    """features2d -> "where" features: per group, conv1x1 -> conv3x3 (dilation 2), "same" padding,
    BN, ReLU, no bias (spec §3). Reference widths (1024, 512) for 2048 input channels."""

    def __init__(self, cin: int, widths: tuple[int, int]) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for w in widths:
            layers += _conv_bn_relu(cin, w, 1) + _conv_bn_relu(w, w, 3, dilation=2)
            cin = w
        self.net = nn.Sequential(*layers)
        self.out_channels = cin

    def forward(self, features: Tensor) -> Tensor:       # (B, F, h, w) -> (B, widths[-1], h, w)
        return self.net(features)


def mask_value(dtype: torch.dtype) -> float:
    """A large negative score that stays finite in `dtype` (the reference's -1e5 overflows fp16)."""
    return -0.5 * torch.finfo(dtype).max


class SaccaderCell(nn.Module):
    """One weight vector w in R^C, shared across steps (spec §4). `scores` gives the location
    logits of one step given the descriptors and the visited-cell memory."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(channels) / math.sqrt(channels))
        self.channels = channels

    def scores(self, m: Tensor, visited: Tensor) -> Tensor:
        """m: (B, C, n) descriptors of the n cells; visited: (B, n) bool. Returns (B, n) logits,
        visited cells at `mask_value` (probability exactly 0 after the softmax)."""
        neg = mask_value(m.dtype)
        e = torch.einsum("bcn,c->bn", m, self.w) / math.sqrt(self.channels)
        alpha = torch.softmax(e.masked_fill(visited, neg), dim=-1)                  # (B, n) spatial attention
        c = torch.softmax(torch.einsum("bcn,bn->bc", m, alpha), dim=-1)             # (B, C) channel weights
        return torch.einsum("bcn,bc->bn", m, c).masked_fill(visited, neg)           # (B, n)


@register_model("saccader")
class Saccader(nn.Module):
    """
    Args:
        num_classes: K (the backbone's per-cell classifier has K outputs).
        backbone: a BagNet-style backbone name (`forward_maps`, `receptive_field`, `stride`):
            "bagnet77_lowd" (the reference), or "bagnet" with a layout in backbone_kwargs.
        in_chans: image channels.
        locations: T, glimpses per image (the budget); `forward(locations=...)` overrides.
        view_scale: the representation reads the image resized by this factor (antialiased;
            1 = the image itself, as the reference). Boxes are in input pixels either way.
        where_widths: the attention network's two widths (default: features/2 and the "what"
            width, i.e. (1024, 512) for the reference).
        stage: "representation" | "pretrain" | "policy" (what trains and what the loss is).
        pretrain_steps: T_pre; pretrain_target: "prediction" (reference) or "label".
        train_representation: in the policy stage, whether the BagNet is fine-tuned by CE (the
            paper does not say; when False, CE has no effect and the BagNet runs without gradient).
        policy_estimator: "reinforce" (0/1 reward, batch-mean baseline) or "vimco" (K =
            vimco_samples trajectories per image, leave-one-out signal, spec §8).
        reward: "binary" (r in {0, 1}) or "punish" (2r - 1).
        ce_weight, rl_weight, l2_weight: the policy-stage loss weights (1, 1, 8e-5).
        policy: "learned" (the cell), or a heuristic of the reference: "ordered_logits" (cells by
            descending logit of the predicted class) or "random"; a model attribute, settable
            after loading to measure baselines.
    """

    def __init__(self, num_classes: int, backbone: str = "bagnet77_lowd", backbone_kwargs: dict | None = None,
                 in_chans: int = 3, locations: int = 6, view_scale: float = 1.0,
                 where_widths: tuple[int, int] | None = None, stage: str = "policy", pretrain_steps: int = 12,
                 pretrain_target: str = "prediction", train_representation: bool = True,
                 policy_estimator: str = "reinforce", vimco_samples: int = 4, reward: str = "binary",
                 ce_weight: float = 1.0, rl_weight: float = 1.0, l2_weight: float = 8e-5,
                 policy: str = "learned") -> None:
        super().__init__()
        for name, value, allowed in [("stage", stage, STAGES), ("policy_estimator", policy_estimator, ESTIMATORS),
                                     ("pretrain_target", pretrain_target, ("prediction", "label")),
                                     ("reward", reward, ("binary", "punish")), ("policy", policy, POLICIES)]:
            if value not in allowed:
                raise FoveateError(f"saccader: unknown {name} {value!r} (use {' or '.join(allowed)})")
        if not 0 < view_scale <= 1:
            raise FoveateError(f"saccader: view_scale must be in (0, 1], got {view_scale}")
        if pretrain_steps < 1:
            raise FoveateError(f"saccader: pretrain_steps must be >= 1, got {pretrain_steps}")
        if policy_estimator == "vimco" and vimco_samples < 2:
            raise FoveateError(f"saccader: VIMCO needs vimco_samples >= 2, got {vimco_samples}")
        self.num_classes, self.in_chans, self.view_scale = num_classes, in_chans, float(view_scale)
        self.default_locations = self.budget(locations)
        self.pretrain_steps, self.pretrain_target = pretrain_steps, pretrain_target
        self.train_representation = train_representation
        self.policy_estimator, self.vimco_samples, self.reward = policy_estimator, vimco_samples, reward
        self.ce_weight, self.rl_weight, self.l2_weight = ce_weight, rl_weight, l2_weight
        self.policy = policy

        need = f"saccader needs a BagNet-style backbone with per-cell logits (e.g. bagnet77_lowd), got {backbone!r}"
        try:
            self.backbone = create_backbone(backbone, in_chans=in_chans, num_classes=num_classes,
                                            **(backbone_kwargs or {}))
        except FoveateError as e:
            raise FoveateError(f"{need}: {e}") from None
        if not all(hasattr(self.backbone, a) for a in ("forward_maps", "receptive_field", "stride")):
            raise FoveateError(need)
        feat, what = self.backbone.feature_channels, self.backbone.fmap_channels
        widths = tuple(where_widths) if where_widths else (max(1, feat // 2), what)
        self.where = WhereNetwork(feat, widths)
        self.mix = nn.Conv2d(self.where.out_channels + what, what, 1)    # no activation (spec §3)
        self.cell = SaccaderCell(what)
        self.stage = stage

    # -- stages -----------------------------------------------------------------------------
    @property
    def stage(self) -> str:
        return self._stage

    @stage.setter
    def stage(self, stage: str) -> None:
        """What trains in each stage: representation -> the BagNet; pretrain -> where/mix/cell;
        policy -> where/mix/cell, and the BagNet if train_representation."""
        if stage not in STAGES:
            raise FoveateError(f"saccader: unknown stage {stage!r} (use {' or '.join(STAGES)})")
        self._stage = stage
        rep = self.representation_trainable
        self.backbone.requires_grad_(rep)
        for part in (self.where, self.mix, self.cell):
            part.requires_grad_(stage != "representation")
        self.train(self.training)

    @property
    def representation_trainable(self) -> bool:
        return self._stage == "representation" or (self._stage == "policy" and self.train_representation)

    def train(self, mode: bool = True) -> Saccader:
        """A frozen representation stays in eval mode (its BatchNorm statistics do not drift)."""
        super().train(mode)
        if not self.representation_trainable:
            self.backbone.eval()
        return self

    def budget(self, locations) -> int:
        """T glimpses; at most the number of cells, checked in forward (it depends on the image)."""
        if isinstance(locations, bool) or not isinstance(locations, int) or locations < 1:
            raise FoveateError(f"saccader: locations must be a number of glimpses >= 1, got {locations!r}")
        return locations

    # -- geometry ---------------------------------------------------------------------------
    def _view_size(self, height: int, width: int) -> tuple[int, int]:
        if self.view_scale == 1.0:
            return height, width
        return max(1, round(height * self.view_scale)), max(1, round(width * self.view_scale))

    def cell_boxes(self, height: int, width: int, gh: int, gw: int, device=None) -> Tensor:
        """(gh * gw, 4) x1 y1 x2 y2 of every cell's receptive field in input pixels (row-major):
        cell (i, j) sees view rows [stride * i, stride * i + rf) (valid convolutions)."""
        vh, vw = self._view_size(height, width)
        rf, s = self.backbone.receptive_field, self.backbone.stride
        ys = torch.arange(gh, device=device, dtype=torch.float32) * s * (height / vh)
        xs = torch.arange(gw, device=device, dtype=torch.float32) * s * (width / vw)
        y1, x1 = torch.meshgrid(ys, xs, indexing="ij")
        y1, x1 = y1.reshape(-1), x1.reshape(-1)
        return torch.stack([x1, y1, x1 + rf * (width / vw), y1 + rf * (height / vh)], dim=1)

    # -- forward ----------------------------------------------------------------------------
    def maps(self, src: RegionSource, where: bool = True) -> tuple[Tensor, Tensor | None, Tensor]:
        """The image (read whole at view_scale) -> logits2d (B, K, h, w), M (B, C_m, h, w) (None
        without `where`) and the spatially averaged BagNet logits (B, K)."""
        height, width = src.size
        vh, vw = self._view_size(height, width)
        rf = self.backbone.receptive_field
        if min(vh, vw) < rf:
            raise FoveateError(f"{src.name}: image is {width}x{height} px (view {vw}x{vh} at view_scale "
                               f"{self.view_scale:g}), smaller than the backbone's receptive field ({rf} px)")
        view = src.view((vh, vw))
        view = network_range(view)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.representation_trainable):
            maps = self.backbone.forward_maps(view)
        # the "where" path sees the representation through a stop-gradient: the policy never
        # trains the BagNet, CE never trains the policy
        bag_logits = maps.logits.mean(dim=(2, 3))
        if not where:
            return maps.logits, None, bag_logits
        m = self.mix(torch.cat([self.where(maps.features.detach()), maps.what.detach()], dim=1))
        return maps.logits, m, bag_logits

    def unroll(self, m: Tensor, steps: int, mode: str, targets: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
        """Run the cell for `steps` glimpses over descriptors m (B, C, h, w).

        mode: "sample" | "argmax" | "teacher" (targets (B, steps) are written into the memory).
        Returns chosen (B, steps) long (no gradient), logp (B, steps) log pi_t(chosen_t), and
        the step logits (B, steps, n) (visited cells at mask_value).
        """
        b, _, h, w = m.shape
        flat = m.flatten(2)                                      # (B, C, n)
        visited = torch.zeros(b, h * w, dtype=torch.bool, device=m.device)
        chosen, logps, scores = [], [], []
        for t in range(steps):
            ell = self.cell.scores(flat, visited)                # (B, n)
            if mode == "teacher":
                idx = targets[:, t]
            elif mode == "sample":
                idx = torch.distributions.Categorical(logits=ell.detach().float()).sample()
            else:
                idx = ell.detach().argmax(dim=-1)
            logps.append(F.log_softmax(ell, dim=-1).gather(1, idx[:, None])[:, 0])
            chosen.append(idx)
            scores.append(ell)
            visited = visited.scatter(1, idx[:, None], True)
        return torch.stack(chosen, 1), torch.stack(logps, 1), torch.stack(scores, 1)

    def _heuristic(self, logits2d: Tensor, bag_logits: Tensor, steps: int) -> Tensor:
        """(B, steps) cells of a reference heuristic policy (distinct)."""
        b, _, h, w = logits2d.shape
        if self.policy == "random":
            return torch.rand(b, h * w, device=logits2d.device).argsort(dim=1)[:, :steps]
        return ranked_cells(logits2d, bag_logits.argmax(-1))[:, :steps]

    def forward(self, x: Tensor | RegionSource, locations: int | None = None) -> Output:
        """x: (B, C, H, W) in [0, 1] or a `RegionSource`. Glimpses are sampled in training and taken by argmax at
        inference. In the representation stage the logits are the BagNet's spatially averaged
        logits and nothing is selected (empty trace; the attention network does not run)."""
        steps = self.default_locations if locations is None else self.budget(locations)
        src = as_source(x, self.in_chans)
        height, width = src.size
        if self._stage == "representation":
            logits2d, _, bag_logits = self.maps(src, where=False)
            return Output(logits=bag_logits, extras={"logits2d": logits2d, "bag_logits": bag_logits})
        logits2d, m, bag_logits = self.maps(src)
        b, k, h, w = logits2d.shape
        if steps > h * w:
            raise FoveateError(f"saccader: locations={steps} glimpses but this image's grid has only {h * w} cells")
        if self.policy == "learned":
            chosen, logp, scores = self.unroll(m, steps, "sample" if self.training else "argmax")
            probs_steps = torch.softmax(scores.detach().float(), dim=-1)               # (B, T, n)
        else:
            chosen = self._heuristic(logits2d, bag_logits, steps)
            logp = logits2d.new_zeros(b, steps)
            probs_steps = F.one_hot(chosen, h * w).float()
        picked = logits2d.flatten(2).gather(2, chosen[:, None, :].expand(-1, k, -1))   # (B, K, T)
        logits = picked.mean(dim=2)
        # trace: every cell a candidate; a chosen cell carries its probability when it was picked,
        # the others their step-1 probability; `order` numbers the glimpses 1..T
        order = torch.zeros(b, h * w, dtype=torch.long, device=logits2d.device)
        order.scatter_(1, chosen, torch.arange(1, steps + 1, device=logits2d.device).expand(b, -1))
        probs = probs_steps[:, 0].clone()
        probs.scatter_(1, chosen, probs_steps.gather(2, chosen[..., None])[..., 0])
        boxes = self.cell_boxes(height, width, h, w, logits2d.device).expand(b, -1, -1)
        trace = [Glimpses(1, boxes, probs, order > 0, order=order)]
        return Output(logits=logits, aux_logits=picked.transpose(1, 2), trace=trace,
                      extras={"logp": logp, "chosen": chosen, "logits2d": logits2d, "mix": m,
                              "bag_logits": bag_logits})

    # -- training objective -----------------------------------------------------------------
    def loss(self, out: Output, target: Tensor) -> dict[str, Tensor]:
        """The current stage's loss (see the module docstring); "loss" is what is minimised."""
        target = class_targets(target, "Saccader")
        ex = out.extras
        if self._stage == "representation":
            ce = F.cross_entropy(ex["bag_logits"], target)
            return {"loss": ce, "ce": ce.detach()}
        if self._stage == "pretrain":
            return self._pretrain_loss(ex["mix"], ex["logits2d"].detach(), ex["bag_logits"].detach(), target)
        ce = F.cross_entropy(out.logits, target)
        l2 = self.l2_weight * l2_penalty(self)
        if self.policy_estimator == "vimco" and self.training:
            return self._vimco_loss(ex["mix"], ex["logits2d"], target, out.extras["chosen"].shape[1], l2)
        correct = (out.logits.detach().argmax(-1) == target).float()
        r = correct if self.reward == "binary" else 2 * correct - 1
        rl = batch_mean_reinforce(ex["logp"], r)
        total = self.ce_weight * ce + self.rl_weight * rl + l2
        return {"loss": total, "ce": ce.detach(), "rl": rl.detach(), "l2": l2.detach(), "reward": correct.mean()}

    def pretrain_targets(self, logits2d: Tensor, bag_logits: Tensor, target: Tensor, steps: int) -> Tensor:
        """(B, steps) distinct cells: the best cells for the predicted (or true) class."""
        cls = bag_logits.argmax(-1) if self.pretrain_target == "prediction" else target
        return ranked_cells(logits2d, cls)[:, :steps]

    def _pretrain_loss(self, m: Tensor, logits2d: Tensor, bag_logits: Tensor, target: Tensor) -> dict[str, Tensor]:
        n = m.shape[2] * m.shape[3]
        steps = min(self.pretrain_steps, n)
        targets = self.pretrain_targets(logits2d, bag_logits, target, steps)
        _, _, scores = self.unroll(m, steps, "teacher", targets)          # (B, T_pre, n)
        # teacher forcing: target_t is never masked at step t, so no CE touches mask_value
        ce = F.cross_entropy(scores.flatten(0, 1).float(), targets.flatten())
        return {"loss": ce, "pretrain_ce": ce.detach()}

    def _vimco_loss(self, m: Tensor, logits2d: Tensor, target: Tensor, steps: int, l2: Tensor) -> dict[str, Tensor]:
        """K trajectories per image from the same maps (only the cell and the gather repeat)."""
        kk = self.vimco_samples
        b, k = logits2d.shape[:2]
        chosen, logp, _ = self.unroll(m.repeat_interleave(kk, 0), steps, "sample")      # (B*K, T)
        chosen = chosen.view(b, kk * steps)
        traj = logits2d.flatten(2).gather(2, chosen[:, None, :].expand(-1, k, -1))      # (B, cls, K*T)
        traj = traj.view(b, k, kk, steps).mean(dim=3).transpose(1, 2)                   # (B, K, cls)
        logw = F.log_softmax(traj, dim=-1).gather(2, target[:, None, None].expand(-1, kk, 1))[..., 0]
        vimco, bound = vimco_loss(logw, logp.view(b, kk, steps).sum(dim=2))
        total = vimco + l2
        return {"loss": total, "vimco": vimco.detach(), "bound": bound.detach(), "l2": l2.detach(),
                "reward": (traj.detach().argmax(-1) == target[:, None]).float().mean()}


def ranked_cells(logits2d: Tensor, cls: Tensor) -> Tensor:
    """(B, n) cells sorted by descending logit of class cls (B,): the reference's ordered_logits."""
    per_cell = logits2d.flatten(2).gather(1, cls[:, None, None].expand(-1, 1, logits2d.shape[2] * logits2d.shape[3]))
    return per_cell[:, 0].argsort(dim=1, descending=True)


def l2_penalty(model: nn.Module) -> Tensor:
    """sum w^2 / (number of weights) over trainable weights, biases and normalisation parameters
    excluded (spec §5: the reference meant to exclude norms; here all of them are)."""
    norms = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    weights = [mod.weight for mod in model.modules()
               if not isinstance(mod, norms) and isinstance(getattr(mod, "weight", None), nn.Parameter)
               and mod.weight.requires_grad]
    weights += [p for mod in model.modules() for name, p in mod.named_parameters(recurse=False)
                if name == "w" and p.requires_grad]          # the cell's weight vector
    if not weights:
        return torch.zeros(())
    return sum(w.pow(2).sum() for w in weights) / sum(w.numel() for w in weights)

"""ResNet-18 with and without ExpAtt by name: shapes for both stems, the parameter change the
augmented conv implies, gradients reaching every radius, errors, and a short run on real digits."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from foveate.backbones import create_backbone
from foveate.backbones.expatt_resnet import ExpAttConv2d
from foveate.data import load_digits
from foveate.errors import FoveateError
from foveate.layers import ExpAtt


@pytest.mark.parametrize("name", ["resnet18", "expatt_resnet18"])
@pytest.mark.parametrize("stem, size, grid", [("cifar", 28, 4), ("imagenet", 60, 2), ("cifar", 13, 2)])
def test_shapes(name, stem, size, grid):
    m = create_backbone(name, in_chans=1, width=8, stem=stem)
    fmap, pooled = m(torch.randn(2, 1, size, size + 3))
    assert m.fmap_channels == m.num_features == 64
    assert fmap.shape[:2] == (2, 64) and fmap.shape[2] == grid
    assert pooled.shape == (2, 64)


def test_parameters_full_size_and_the_augmented_conv_saving():
    plain = create_backbone("resnet18", stem="imagenet")
    assert sum(p.numel() for p in plain.parameters()) == 11_176_512  # timm resnet18 without its head
    att = create_backbone("expatt_resnet18", in_chans=3, width=16)
    base = create_backbone("resnet18", in_chans=3, width=16)
    convs = [m for m in att.modules() if isinstance(m, ExpAttConv2d)]
    assert len(convs) == 8 and att.sigmas().keys() == {f"stages.layer{s}.{b}.conv1.att" for s in range(1, 5)
                                                        for b in range(2)}
    # per block the conv branch loses 9 C_in C_att weights, the value projection adds C_in C_att, theta 1
    saving = sum(8 * c.att.in_channels * c.att.out_channels - 1 for c in convs)
    assert sum(p.numel() for p in base.parameters()) - sum(p.numel() for p in att.parameters()) == saving
    for c in convs:
        assert c.att.out_channels == round(0.25 * (c.conv.out_channels + c.att.out_channels))
        assert {n for n, _ in c.att.named_parameters()} == {"theta", "value.weight"}


def test_gradients_reach_every_radius_and_stage_choice():
    m = create_backbone("expatt_resnet18", in_chans=1, width=8, expatt_stages=(2, 3, 4))
    assert len(m.sigmas()) == 6 and not any(".layer1." in k for k in m.sigmas())
    for bn in m.modules():  # undo timm's zero-init of each branch's last BN, which blocks gradients at step 0
        if isinstance(bn, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(bn.weight)
    m(torch.randn(4, 1, 28, 28))[1].pow(2).sum().backward()
    thetas = [mod.theta for mod in m.modules() if isinstance(mod, ExpAtt)]
    assert all(t.grad is not None and torch.isfinite(t.grad) and t.grad != 0 for t in thetas)


def test_residual_mode_starts_as_the_conv():
    m = create_backbone("expatt_resnet18", in_chans=1, width=8, mode="residual", coords="pixels", sigma_init=2.0)
    block = m.stages.layer2[0].conv1
    assert block.gamma.detach() == 0 and block.conv.out_channels == block.att.out_channels == 16
    x = torch.randn(2, 8, 14, 14)
    assert torch.equal(block(x), block.conv(x))
    assert abs(m.sigmas()["stages.layer2.0.conv1.att"] - 2.0) < 1e-6


def test_errors():
    with pytest.raises(FoveateError, match="stem"):
        create_backbone("resnet18", stem="tiny")
    with pytest.raises(FoveateError, match="kappa"):
        create_backbone("expatt_resnet18", kappa=1.0)
    with pytest.raises(FoveateError, match="expatt_stages"):
        create_backbone("expatt_resnet18", expatt_stages=(5,))
    with pytest.raises(FoveateError, match="mode"):
        create_backbone("expatt_resnet18", mode="sum")
    with pytest.raises(FoveateError, match="expatt_resnet18"):
        create_backbone("resnet18", expatt=True)
    with pytest.raises(FoveateError, match="sigma_init"):
        create_backbone("expatt_resnet18", sigma_init=-1.0)
    with pytest.raises(FoveateError, match="width"):
        create_backbone("resnet18", width=1)


def test_learns_real_digits(mnist_dir):
    """A short run on real MNIST digits (disjoint train / test pools): well above chance (10%)."""
    pools = load_digits(mnist_dir)
    train, test = pools["train"], pools["test"]
    torch.manual_seed(0)
    backbone = create_backbone("expatt_resnet18", in_chans=1, width=8, stem="imagenet")  # 7x7 after the stem
    head = torch.nn.Linear(backbone.num_features, 10)
    params = list(backbone.parameters()) + list(head.parameters())
    opt = torch.optim.Adam(params, lr=3e-3)
    rng = np.random.default_rng(0)
    sigma0 = backbone.sigmas()
    for _ in range(150):
        idx = rng.integers(len(train), size=32)
        x = torch.from_numpy(train.images[idx].astype(np.float32) / 255)[:, None]  # (32, 1, 28, 28)
        loss = F.cross_entropy(head(backbone(x)[1]), torch.from_numpy(train.labels[idx]))
        opt.zero_grad()
        loss.backward()
        opt.step()
    backbone.eval()
    with torch.no_grad():
        x = torch.from_numpy(test.images[:500].astype(np.float32) / 255)[:, None]
        acc = (head(backbone(x)[1]).argmax(1).numpy() == test.labels[:500]).mean()
    assert acc > 0.8, acc
    assert backbone.sigmas() != sigma0  # the radii are trained

"""BagNet backbones: the reference BagNet-77-lowD layout (grid, receptive field, size) and the
generic builder's contract."""
import pytest
import torch
from support import monotone

from foveate.backbones import create_backbone
from foveate.backbones.bagnet import BagNet
from foveate.errors import FoveateError


def _rf_support(model: BagNet, size: int, cell: tuple[int, int]) -> tuple[range, range, tuple[int, int]]:
    x = torch.rand(1, model.stem[0].in_channels, size, size, requires_grad=True)
    fmap = model.forward_features(x)
    fmap[0, :, cell[0], cell[1]].sum().backward()
    nz = x.grad[0].abs().sum(0).nonzero()
    rows, cols = nz[:, 0], nz[:, 1]
    return range(int(rows.min()), int(rows.max()) + 1), range(int(cols.min()), int(cols.max()) + 1), tuple(fmap.shape[-2:])


def test_bagnet77_lowd_reference_layout():
    m = create_backbone("bagnet77_lowd", num_classes=1001)
    assert sum(p.numel() for p in m.parameters() if p.requires_grad) == 20_574_249
    stats = sum(b.numel() for n, b in m.named_buffers() if "running" in n)
    assert sum(p.numel() for p in m.parameters()) + stats == 20_628_393   # the paper's count, BN statistics included
    assert (m.receptive_field, m.stride, m.grid_size(224)) == (77, 8, 19)
    m.eval()
    with torch.no_grad():
        maps = m.forward_maps(torch.rand(1, 3, 224, 224))
    assert maps.features.shape == (1, 2048, 19, 19)
    assert maps.what.shape == (1, 512, 19, 19)
    assert maps.logits.shape == (1, 1001, 19, 19)
    assert m.forward_head(maps.what).shape == (1, m.num_features) == (1, 512)


def test_bagnet77_receptive_field_measured():
    """Gradient of one output cell w.r.t. the input: cell (i, j) sees rows [8i, 8i + 77)."""
    m = monotone(create_backbone("bagnet77_lowd", width=0.0625, in_chans=1))
    for cell in [(0, 0), (5, 11)]:
        rows, cols, grid = _rf_support(m, 224, cell)
        assert grid == (19, 19)
        assert rows == range(8 * cell[0], 8 * cell[0] + 77)
        assert cols == range(8 * cell[1], 8 * cell[1] + 77)


@pytest.mark.parametrize("kernel3, rf", [((1, 1, 0, 0), 9), ((1, 1, 1, 1), 33), ((2, 2, 2, 2), 77)])
def test_generic_builder_rf_matches_declared(kernel3, rf):
    m = monotone(BagNet(in_chans=1, kernel3=kernel3, width=0.0625, lowd=0))
    assert m.receptive_field == rf and m.stride == 8
    rows, cols, _ = _rf_support(m, 96, (1, 1))
    assert len(rows) == len(cols) == rf and rows.start == 8


def test_bn_quirk_same_size_and_default_is_standard():
    std = create_backbone("bagnet77_lowd", width=0.125)
    quirk = create_backbone("bagnet77_lowd", width=0.125, bn_quirk=True)
    assert sum(p.numel() for p in std.parameters()) == sum(p.numel() for p in quirk.parameters())
    assert not std.groups[0][0].bn_quirk
    x = torch.rand(2, 3, 100, 100)
    assert std.forward_features(x).shape == quirk.forward_features(x).shape == (2, 64, 3, 3)


def test_errors():
    m = create_backbone("bagnet77_lowd", width=0.0625)
    with pytest.raises(FoveateError, match="smaller than the receptive field"):
        m.forward_features(torch.rand(1, 3, 60, 200))
    with pytest.raises(FoveateError, match="without a classifier"):
        m.logits2d(torch.rand(1, m.fmap_channels, 2, 2))
    with pytest.raises(FoveateError, match="fixes kernel3"):
        create_backbone("bagnet77_lowd", kernel3=(1, 1, 1, 1))

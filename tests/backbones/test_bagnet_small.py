"""BagNet-9/17/33 by name (the public BagNet layout): receptive field measured by the gradient of
one output cell w.r.t. a 224x224 input, grid size, per-cell logits."""
import pytest
import torch
from support import monotone

from foveate.backbones import create_backbone
from foveate.errors import FoveateError


@pytest.mark.parametrize("name, rf, grid", [("bagnet9", 9, 27), ("bagnet17", 17, 26), ("bagnet33", 33, 24)])
def test_receptive_field_and_grid_at_224(name, rf, grid):
    m = monotone(create_backbone(name, in_chans=1, width=0.0625)).requires_grad_(False)
    assert (m.receptive_field, m.stride, m.grid_size(224)) == (rf, 8, grid)
    x = torch.rand(1, 1, 224, 224, requires_grad=True)
    fmap = m.forward_features(x)  # (1, C, grid, grid)
    assert fmap.shape[-2:] == (grid, grid)
    # two cells whose fields do not overlap (8 (grid - 1) >= rf): one backward, two supports
    (fmap[0, :, 0, 0].sum() + fmap[0, :, grid - 1, grid - 1].sum()).backward()
    support = x.grad[0, 0] != 0  # (224, 224)
    for i in (0, grid - 1):
        box = torch.zeros_like(support)
        box[8 * i:8 * i + rf, 8 * i:8 * i + rf] = True
        assert support[box].all(), f"{name}: cell ({i}, {i}) misses part of its {rf}-px field"
    first, last = torch.zeros_like(support), torch.zeros_like(support)
    first[:rf, :rf] = True
    last[8 * (grid - 1):8 * (grid - 1) + rf, 8 * (grid - 1):8 * (grid - 1) + rf] = True
    assert not support[~(first | last)].any(), f"{name}: an output cell sees beyond {rf} px"


def test_full_width_layout_and_per_cell_logits():
    m = create_backbone("bagnet33", num_classes=10, width=0.125)
    assert m.fmap_channels == m.num_features == 2048 // 8
    m.eval()
    with torch.no_grad():
        maps = m.forward_maps(torch.rand(2, 3, 64, 48))
    cells = ((64 - 33) // 8 + 1, (48 - 33) // 8 + 1)
    assert maps.what.shape == (2, 256, *cells) and maps.logits.shape == (2, 10, *cells)
    assert m.lowd is None and m.classifier is not None


def test_fixed_layout_and_small_image_errors():
    with pytest.raises(FoveateError, match="bagnet17 fixes kernel3"):
        create_backbone("bagnet17", kernel3=(1, 1, 1, 1))
    m = create_backbone("bagnet9", width=0.0625)
    with pytest.raises(FoveateError, match="smaller than the receptive field"):
        m.forward_features(torch.rand(1, 3, 8, 100))

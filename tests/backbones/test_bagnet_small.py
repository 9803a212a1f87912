"""BagNet-9/17/33 by name (the public BagNet layout): receptive field measured by the gradient of
one output cell w.r.t. a 224x224 input, grid size, per-cell logits."""
import pytest
import torch

from foveate.backbones import create_backbone
from foveate.errors import FoveateError


@pytest.fixture(autouse=True)
def _one_thread():
    """Small tensors: one intra-op thread is as fast, and far faster on a loaded machine (threads
    of a 2-thread pool wait for each other when other processes hold the cores)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _monotone(model: torch.nn.Module) -> torch.nn.Module:
    """Positive weights, identity BatchNorm (eval): every ReLU passes and no zero-initialised
    residual gain hides a branch, so a cell's input-gradient support is its receptive field."""
    model.eval()
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Conv2d):
                m.weight.uniform_(0.01, 0.1)
            elif isinstance(m, torch.nn.BatchNorm2d):
                m.weight.fill_(1.0)
                m.bias.zero_()
                m.running_mean.zero_()
                m.running_var.fill_(1.0)
    return model


@pytest.mark.parametrize("name, rf, grid", [("bagnet9", 9, 27), ("bagnet17", 17, 26), ("bagnet33", 33, 24)])
def test_receptive_field_and_grid_at_224(name, rf, grid):
    m = _monotone(create_backbone(name, in_chans=1, width=0.0625)).requires_grad_(False)
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

"""RegionSource: the one way models read pixels (in-memory tensors and pyramids)."""
import pytest
import torch

from foveate.errors import FoveateError
from foveate.geometry import resize
from foveate.models import create_model
from foveate.sources import TensorSource, as_source, build_pyramid, pyramid_sizes


def test_native_crops_equal_slices_and_zero_outside():
    x = torch.rand(2, 3, 40, 50)
    src = TensorSource(x)
    top, left = torch.tensor([[0, 30], [-4, 5]]), torch.tensor([[45, 0], [-2, 10]])
    crops = src.crop(top, left, (12, 8))
    assert crops.shape == (4, 3, 12, 8)
    assert torch.equal(crops[1][:, :10], x[0, :, 30:40, 0:8]) and (crops[1][:, 10:] == 0).all()
    assert torch.equal(crops[0][:, :, :5], x[0, :, 0:12, 45:50]) and (crops[0][:, :, 5:] == 0).all()
    assert (crops[2][:, :4] == 0).all() and (crops[2][:, :, :2] == 0).all()
    assert torch.equal(crops[2][:, 4:, 2:], x[1, :, 0:8, 0:6])
    assert torch.equal(crops[3], x[1, :, 5:17, 10:18])


def test_view_without_pyramid_is_the_resized_image():
    x = torch.rand(2, 1, 300, 200)
    torch.testing.assert_close(TensorSource(x).view((60, 40)), resize(x, (60, 40)), rtol=0, atol=0)


def test_pyramid_views_read_the_coarsest_sufficient_level():
    x = torch.rand(1, 1, 512, 512)
    levels = build_pyramid(x, min_side=64)
    assert [tuple(t.shape[-2:]) for t in levels] == [(256, 256), (128, 128), (64, 64)]
    assert pyramid_sizes(512, 512, 64) == [(512, 512), (256, 256), (128, 128), (64, 64)]
    src = TensorSource(x, levels)
    assert src.level_for(1.0) == 0 and src.level_for(0.5) == 1 and src.level_for(0.3) == 1
    assert src.level_for(0.25) == 2 and src.level_for(0.01) == 3
    # a view at a level's own size is exactly that level; smaller views resize it
    assert torch.equal(src.view((128, 128)), levels[1])
    close = resize(x, (100, 100))
    assert (src.view((100, 100)) - close).abs().mean() < 0.02  # a 2x2 mean pyramid, then a resize


def test_pyramid_region_reads_map_corners_to_the_level():
    x = torch.zeros(1, 1, 400, 400)
    x[..., 100:200, 240:340] = 1.0  # a bright square
    src = TensorSource(x, build_pyramid(x, 50))
    top, left = torch.tensor([[100]]), torch.tensor([[240]])
    cell = src.crop(top, left, (100, 100), (25, 25))  # 1/4 density: level 2 (100 px), region 25 px
    assert cell.shape == (1, 1, 25, 25) and torch.allclose(cell, torch.ones_like(cell))


def test_read_arbitrary_boxes_groups_by_size():
    x = torch.rand(2, 1, 64, 64)
    src = TensorSource(x)
    boxes = torch.tensor([[[0.0, 0, 32, 32], [10, 20, 26, 36]], [[-8, -8, 8, 8], [40, 0, 64, 64]]])
    out = src.read(boxes, (16, 16))
    assert out.shape == (4, 1, 16, 16)
    torch.testing.assert_close(out[0], resize(x[0:1, :, 0:32, 0:32], (16, 16))[0])
    assert torch.equal(out[1], x[0, :, 20:36, 10:26])
    assert (out[2][:, :8] == 0).all() and torch.equal(out[2][:, 8:, 8:], x[1, :, 0:8, 0:8])
    with pytest.raises(FoveateError, match="x2 > x1"):
        src.read(torch.tensor([[[5.0, 5, 5, 9]], [[0, 0, 1, 1]]]), (4, 4))
    with pytest.raises(FoveateError, match=r"boxes must be \(2, k, 4\)"):
        src.read(torch.zeros(1, 1, 4), (4, 4))


def test_as_source_checks_channels_and_size():
    with pytest.raises(FoveateError, match="3-channel"):
        as_source(torch.rand(1, 1, 32, 32), in_chans=3)
    with pytest.raises(FoveateError, match="smaller than the patch size"):
        as_source(torch.rand(1, 1, 20, 32), in_chans=1, min_side=30, what="the patch size")
    with pytest.raises(FoveateError, match=r"\(B, C, H, W\)"):
        as_source(torch.rand(1, 32, 32))


@pytest.mark.parametrize("name,cfg", [
    ("tnet", {"backbone": "tiny_cnn", "levels": 2, "grid": 3, "overlap": 0.25, "base_resolution": 32, "locations": 2}),
    ("ats", {"backbone": "tiny_cnn", "scale": 0.25, "patch_size": 16, "locations": 3, "eval_mode": "topk"}),
    ("ips", {"backbone": "tiny_cnn", "patch_size": 32, "locations": 3, "chunk": 5, "dim": 32, "heads": 4,
             "dim_head": 8, "mlp_dim": 32}),
    ("lowres_cnn", {"backbone": "tiny_cnn", "scale": 0.25}),
])
def test_models_give_the_same_output_from_a_tensor_or_its_source(name, cfg):
    torch.manual_seed(0)
    model = create_model(name, num_classes=4, in_chans=1, **cfg).eval()
    x = torch.rand(2, 1, 128, 160)
    with torch.no_grad():
        a, b = model(x), model(TensorSource(x))
    torch.testing.assert_close(a.logits, b.logits)
    for ga, gb in zip(a.trace, b.trace):
        assert torch.equal(ga.boxes, gb.boxes)


def test_tnet_reads_only_the_chosen_cells_from_a_source():
    """Cost follows the attended pixels: a source that counts what it is asked for."""
    class Counting(TensorSource):
        def __init__(self, x):
            super().__init__(x, build_pyramid(x, 32))
            self.reads = []

        def _crop_level(self, level, top, left, size):
            self.reads.append((level, top.numel(), size))
            return super()._crop_level(level, top, left, size)

        def _whole_level(self, level):
            self.reads.append((level, "whole"))
            return super()._whole_level(level)

    model = create_model("tnet", num_classes=4, in_chans=1, backbone="tiny_cnn", levels=2, grid=4, overlap=0.25,
                         base_resolution=32, locations=2).eval()
    src = Counting(torch.rand(1, 1, 512, 512))
    with torch.no_grad():
        model(src)
    # the 32-px view is the 32-px level itself; then the 2 chosen 128-px cells, resized to 32 px, come
    # from the 128-px level (density 1/4): nothing else is read
    assert src.reads == [(4, "whole"), (2, 2, (32, 32))]

import pytest
import torch

from foveate.errors import FoveateError
from foveate.geometry import Grid, axis_geometry, child_boxes, gather_crops


@pytest.mark.parametrize("size,g,o,patch,stride,before,after", [
    (224, 5, 0.34375, 77, 37, 1, 0),   # ImageNet
    (448, 3, 0.5, 224, 112, 0, 0),     # fMoW stage 1
    (896, 3, 0.5, 448, 224, 0, 0),     # fMoW final, level 1
    (448, 3, 0.5, 224, 112, 0, 0),     # fMoW final, level 2 (448 crop)
    (448, 5, 0.35, 157, 73, 1, 0),     # CUB / NABirds
])
def test_reference_table(size, g, o, patch, stride, before, after):
    a = axis_geometry(size, g, o)
    assert (a.patch, a.stride, a.pad_before, a.pad_after) == (patch, stride, before, after)
    assert a.padded == (g - 1) * stride + patch


def test_crops_equal_slices_of_padded_input():
    x = torch.rand(2, 3, 224, 200)
    grid = Grid.over(224, 200, 5, 0.34375)
    idx = torch.tensor([[0, 7, 24], [3, 12, 20]])
    crops = gather_crops(x, *grid.cell_corners(idx), grid.cell_size)
    assert crops.shape == (6, 3, grid.h.patch, grid.w.patch)
    padded = torch.nn.functional.pad(x, (grid.w.pad_before, grid.w.pad_after, grid.h.pad_before, grid.h.pad_after))
    boxes = child_boxes(torch.tensor([[0.0, 0, 200, 224]] * 2), grid, idx)
    for n in range(2):
        for r in range(3):
            c = int(idx[n, r])
            i, j = divmod(c, 5)
            y0, x0 = i * grid.h.stride, j * grid.w.stride
            expected = padded[n, :, y0:y0 + grid.h.patch, x0:x0 + grid.w.patch]
            assert torch.equal(crops[n * 3 + r], expected)
            # the box is the same region in unpadded image pixels
            x1, y1, x2, y2 = boxes[n, r].tolist()
            assert (x1, y1) == (x0 - grid.w.pad_before, y0 - grid.h.pad_before)
            assert (x2 - x1, y2 - y1) == (grid.w.patch, grid.h.patch)
            inside = x[n, :, max(int(y1), 0):int(y2), max(int(x1), 0):int(x2)]
            assert torch.equal(expected[:, -inside.shape[1]:, -inside.shape[2]:], inside)


def test_child_boxes_add_parent_offset():
    grid = Grid.over(100, 100, 3, 0.5)
    parent = torch.tensor([[1000.0, 2000.0, 1100.0, 2100.0]])
    boxes = child_boxes(parent, grid)
    assert boxes.shape == (1, 9, 4)
    assert boxes[0, 0].tolist() == [1000.0, 2000.0, 1050.0, 2050.0]
    assert boxes[0, 8].tolist() == [1050.0, 2050.0, 1100.0, 2100.0]


def test_bad_grid_values():
    with pytest.raises(FoveateError, match="overlap"):
        axis_geometry(100, 3, 1.5)
    with pytest.raises(FoveateError, match="grid"):
        axis_geometry(100, 0, 0.5)

"""Grid ↔ image geometry (pipeline.geometry): the networks' real alignment and the helper."""
import numpy as np
import pytest
import torch

from pipeline.dsrg import cues_on_grid, grid_images
from pipeline.geometry import cell_pixels, grid_coords, grid_to_frame, pixel_cells
from pipeline.models.deeplab import DeepLabV2VGG16
from pipeline.models.vgg import VGG16Backbone


def _centre_taps(net):
    """Every conv averages the channels at its centre tap only (no bias): the response to an
    impulse then spreads only through the pools, far from the borders, symmetric where the
    pools are centred."""
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.zeros_(m.weight)
            torch.nn.init.zeros_(m.bias)
            with torch.no_grad():
                m.weight[:, :, m.kernel_size[0] // 2, m.kernel_size[1] // 2] = 1.0 / m.in_channels
    return net.eval()


@torch.no_grad()
def _impulse_response(fn, n, y, x):
    img = torch.zeros(1, 3, n, n)
    img[0, :, y, x] = 1000.0
    return fn(img)[0].sum(0)


@pytest.mark.parametrize("n", [161, 112])
def test_networks_put_cell_i_on_input_pixel_8i(n):
    """An impulse at input pixel (8i, 8j) gives a response symmetric about cell (i, j); one at
    8j + 4 one symmetric about j + ½. (Cells at 8i + 3.5, as align_corners=False upsampling
    assumes, would make both lopsided.)"""
    torch.manual_seed(0)
    nets = {"deeplab": _centre_taps(DeepLabV2VGG16(2, width=1 / 16, fc_channels=16, rates=(1,))),
            "classifier backbone": _centre_taps(VGG16Backbone(width=1 / 16))}
    fns = {"deeplab": nets["deeplab"], "classifier backbone": lambda t: nets["classifier backbone"](t)[0]}
    i, j = 6, 4
    for name, fn in fns.items():
        r = _impulse_response(fn, n, 8 * i, 8 * j)
        assert r.shape[-1] == DeepLabV2VGG16.output_size(n), name
        assert r[i, j] == r.max() and r[i, j] > 0, name
        assert r[i, j + 2] > 0 and r[i, j + 4] == 0, name            # a local response
        for k in (1, 2, 3, 4):
            torch.testing.assert_close(r[i - k, j], r[i + k, j], rtol=1e-5, atol=0, msg=name)
            torch.testing.assert_close(r[i, j - k], r[i, j + k], rtol=1e-5, atol=0, msg=name)
        half = _impulse_response(fn, n, 8 * i, 8 * j + 4)
        assert half[i, j - 2] > 0, name
        for k in (0, 1, 2, 3, 4):
            torch.testing.assert_close(half[i, j - k], half[i, j + 1 + k], rtol=1e-5, atol=0, msg=name)


@pytest.mark.parametrize("n,h", [(321, 41), (112, 15)])
def test_one_hot_cell_maps_to_pixel_8i(n, h):
    for i in (0, 3, h - 2):
        grid = torch.zeros(1, h, h)
        grid[0, i, h - 1 - i] = 1.0
        up = grid_to_frame(grid, (n, n))[0]
        assert up.shape == (n, n)
        y, x = 8 * i, 8 * (h - 1 - i)
        if x < n:
            assert up[y, x] == 1.0 and up.max() == 1.0
            assert up[y, x - 4] == pytest.approx(0.5) and up[y - 4 if y else y + 4, x] == pytest.approx(0.5)
            assert int(up.argmax()) == y * n + x
    # 321 -> 41 is align_corners=True; the old align_corners=False mapping is shifted
    maps = torch.randn(2, 3, 41, 41)
    ref = torch.nn.functional.interpolate(maps, size=(321, 321), mode="bilinear", align_corners=True)
    torch.testing.assert_close(grid_to_frame(maps, (321, 321)), ref, atol=1e-5, rtol=1e-5)
    old = torch.nn.functional.interpolate(maps, size=(321, 321), mode="bilinear", align_corners=False)
    assert (old - ref).abs().max() > 0.1


def test_one_hot_cell_on_a_resized_image():
    """A 500×375 image resized to a 321 square: cell i sits on image pixel (8i + ½)·L/321 − ½."""
    H, W = 500, 375
    grid = torch.zeros(41, 41)
    grid[10, 30] = 1.0
    up = grid_to_frame(grid, (321, 321), (H, W))
    y, x = (80.5 * H / 321 - 0.5), (240.5 * W / 321 - 0.5)      # 124.9, 280.5
    assert int(up.argmax()) // W == round(y) and int(up.argmax()) % W in (280, 281)
    assert cell_pixels(41, 321, H)[10] == round(y) and cell_pixels(41, 321, W)[30] in (280, 281)
    assert grid_coords(H, 321)[round(y)] == pytest.approx(10.0, abs=0.1)


def test_cells_pixels_round_trip_and_cues():
    for n, L in ((321, 321), (321, 500), (112, 112), (241, 90)):
        h = DeepLabV2VGG16.output_size(n)
        px = cell_pixels(h, n, L)
        assert px.min() >= 0 and px.max() <= L - 1
        if L >= n:
            assert (pixel_cells(L, h, n)[px] == np.arange(h)).all()
    lab = torch.full((1, 321, 321), 255)
    lab[0, 80, 160] = 1                         # cell (10, 20)
    lab[0, 83, 165] = 2                         # between cells: not sampled
    cues = cues_on_grid(lab, 3, (41, 41))
    assert cues[0, 1, 10, 20] and cues.sum() == 1
    img = np.zeros((1, 321, 321, 3), np.uint8)
    img[0, 80, 160] = 255
    small = grid_images(img, (41, 41))
    assert small.shape == (1, 41, 41, 3) and small[0, 10, 20, 0] == 255 and small.sum() == 3 * 255
    # a tensor is sampled where it is (no host copy before the torch CRF), at the same cells
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 256, (2, 321, 300, 3), dtype=np.uint8)
    as_tensor = grid_images(torch.from_numpy(raw), (41, 38))
    assert torch.is_tensor(as_tensor) and as_tensor.dtype == torch.uint8
    assert np.array_equal(as_tensor.numpy(), grid_images(raw, (41, 38)))

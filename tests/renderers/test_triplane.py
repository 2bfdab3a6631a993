import pytest
import torch

from scene3d.renderers.triplane import sample_triplane


def _linear_planes(res: int = 9) -> torch.Tensor:
    """Planes whose single channel is linear in the plane's (width, height) coordinates, so bilinear is exact."""
    lin = torch.linspace(-1.0, 1.0, res)
    v, u = torch.meshgrid(lin, lin, indexing="ij")  # u along width, v along height
    xy = 1.0 * u + 2.0 * v  # f(x, y) = x + 2y
    xz = 3.0 * u - 1.0 * v  # g(x, z) = 3x - z
    yz = -2.0 * u + 0.5 * v  # h(y, z) = -2y + z/2
    return torch.stack([xy, xz, yz])[None, :, None]  # (1, 3, 1, res, res)


def test_linear_planes_give_the_hand_computed_mean():
    planes = _linear_planes()
    pts = torch.tensor([[[0.2, -0.4, 0.6], [0.0, 0.0, 0.0], [-0.9, 0.3, 0.1]]])
    x, y, z = pts[0].unbind(-1)
    expected = ((x + 2 * y) + (3 * x - z) + (-2 * y + 0.5 * z)) / 3.0
    out = sample_triplane(planes, pts)
    torch.testing.assert_close(out[0, :, 0], expected, atol=1e-5, rtol=0)
    summed = sample_triplane(planes, pts, reduce="sum")
    torch.testing.assert_close(summed[0, :, 0], 3 * expected, atol=1e-5, rtol=0)


def test_cube_scale_and_concat_order():
    planes = _linear_planes()
    pts = torch.tensor([[[0.1, 0.2, -0.3]]])
    scaled = sample_triplane(planes, pts * 2.5, cube_scale=2.5, reduce="concat")
    x, y, z = 0.1, 0.2, -0.3
    torch.testing.assert_close(scaled[0, 0], torch.tensor([x + 2 * y, 3 * x - z, -2 * y + 0.5 * z]), atol=1e-5, rtol=0)


def test_corners_hit_border_texels_and_outside_reads_zero():
    planes = torch.zeros(1, 3, 2, 4, 4)
    planes[0, 0, :, 0, 0] = torch.tensor([5.0, 7.0])  # xy plane, texel (h=0, w=0) <-> (x, y) = (-1, -1)
    corner = sample_triplane(planes, torch.tensor([[[-1.0, -1.0, 0.3]]]), reduce="concat")
    torch.testing.assert_close(corner[0, 0, :2], torch.tensor([5.0, 7.0]))
    outside = sample_triplane(torch.ones(1, 3, 2, 4, 4), torch.tensor([[[3.0, 3.0, 3.0]]]))
    assert torch.all(outside == 0)


def test_gradients_reach_planes_and_points():
    planes = torch.randn(2, 3, 4, 8, 8, requires_grad=True)
    pts = (torch.rand(2, 10, 3) * 1.6 - 0.8).requires_grad_(True)
    sample_triplane(planes, pts).sum().backward()
    assert planes.grad is not None and planes.grad.abs().sum() > 0
    assert pts.grad is not None and torch.isfinite(pts.grad).all()


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="cube_scale"):
        sample_triplane(torch.zeros(1, 3, 1, 4, 4), torch.zeros(1, 5, 3), cube_scale=0.0)

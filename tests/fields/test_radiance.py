"""Radiance field, TensoRF encoding, spherical harmonics, MLP, trunc_exp."""

from __future__ import annotations

import pytest
import torch

from scene3d.core.cameras import fibonacci_sphere
from scene3d.fields.activations import trunc_exp
from scene3d.fields.encodings import frequency_encoding, sh_dim, spherical_harmonics
from scene3d.fields.hash_grid import HashGridEncoding
from scene3d.fields.mlp import MLP
from scene3d.fields.radiance import RadianceField
from scene3d.fields.tensorf import TensorVMEncoding

BOX = torch.tensor([[-1.0, -2.0, -0.5], [1.0, 2.0, 0.5]])


def small_field(**kwargs) -> RadianceField:
    enc = HashGridEncoding(n_levels=4, log2_hashmap_size=10, base_resolution=4, max_resolution=32, backend="torch")
    with torch.no_grad():
        enc.params.uniform_(-1, 1)
    return RadianceField(BOX, enc, density_hidden=16, color_hidden=16, **kwargs)


def test_spherical_harmonics_are_orthonormal():
    dirs = fibonacci_sphere(20000).double()
    for degree in range(4):
        basis = spherical_harmonics(dirs, degree)
        assert basis.shape == (20000, sh_dim(degree))
        gram = 4 * torch.pi * basis.T @ basis / dirs.shape[0]  # ∫ Y_i Y_j dΩ
        torch.testing.assert_close(gram, torch.eye(sh_dim(degree), dtype=torch.float64), atol=2e-3, rtol=0)


def test_frequency_encoding_values():
    x = torch.tensor([[0.25]])
    out = frequency_encoding(x, 2)
    # order: (x, sin(πx), sin(2πx), cos(πx), cos(2πx))
    expected = torch.tensor([[0.25, 2**-0.5, 1.0, 2**-0.5, 0.0]])
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_trunc_exp_gradient_is_clamped():
    x = torch.tensor([1.0, 30.0], requires_grad=True)
    trunc_exp(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.exp(torch.tensor([1.0, 15.0])))


def test_mlp_shapes_and_validation():
    mlp = MLP(5, 8, 2, 3, out_activation="sigmoid")
    out = mlp(torch.randn(7, 5))
    assert out.shape == (7, 3) and bool(((out > 0) & (out < 1)).all())
    assert len([m for m in mlp.modules() if isinstance(m, torch.nn.Linear)]) == 3
    with pytest.raises(ValueError):
        MLP(5, 8, -1, 3)


def test_field_density_zero_outside_box_and_extras():
    field = small_field(density_extra_dim=2, color_extra_dim=3)
    pos = torch.tensor([[0.0, 0.0, 0.0], [0.9, 1.9, 0.4], [1.5, 0.0, 0.0], [0.0, 0.0, -0.6]])
    dirs = torch.nn.functional.normalize(torch.randn(4, 3), dim=-1)
    out = field(pos, dirs, density_extra=torch.zeros(4, 2), color_extra=torch.zeros(4, 3))
    assert out.density.shape == (4,) and out.rgb.shape == (4, 3) and out.features.shape == (4, 15)
    assert bool((out.density[:2] > 0).all()) and bool((out.density[2:] == 0).all())
    # the extra inputs change the outputs
    other = field(pos, dirs, density_extra=torch.ones(4, 2), color_extra=torch.ones(4, 3))
    assert not torch.allclose(other.density[:2], out.density[:2])
    assert not torch.allclose(other.rgb, out.rgb)
    with pytest.raises(ValueError, match="density_extra"):
        field(pos, dirs, color_extra=torch.zeros(4, 3))
    with pytest.raises(ValueError, match="color_extra"):
        field(pos, dirs, density_extra=torch.zeros(4, 2), color_extra=torch.zeros(4, 5))


def test_density_gradient_matches_finite_differences():
    field = small_field().double()
    pos = torch.tensor([[0.13, -0.71, 0.07], [-0.42, 1.23, -0.21]], dtype=torch.float64)
    with torch.no_grad():  # the gradient must work in evaluation mode too
        density, grad = field.density_gradient(pos)
    eps = 1e-6
    for axis in range(3):
        step = torch.zeros(3, dtype=torch.float64)
        step[axis] = eps
        numeric = (field.density(pos + step) - field.density(pos - step)) / (2 * eps)
        torch.testing.assert_close(grad[:, axis], numeric.detach(), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(density, field.density(pos).detach())


def test_tensorf_encoding_reads_planes_and_lines():
    enc = TensorVMEncoding(components=2, resolution=5)
    with torch.no_grad():
        enc.planes.fill_(1.0)
        enc.lines.zero_()
        enc.lines[0, :, :, 0] = torch.linspace(0, 1, 5)  # line of plane xy runs along z
    x = torch.tensor([[0.3, 0.6, 0.25], [0.9, 0.1, 1.0]])
    out = enc(x)
    assert out.shape == (2, 6)
    torch.testing.assert_close(out[:, 0], x[:, 2])  # bilinear plane value 1 × linear line value z
    torch.testing.assert_close(out[:, 2:], torch.zeros(2, 4))
    out.sum().backward()
    assert enc.planes.grad is not None and enc.lines.grad is not None
    field = RadianceField(BOX, TensorVMEncoding(components=4, resolution=16))
    assert field.density(torch.zeros(3, 3)).shape == (3,)


def test_density_blob_makes_a_dense_ball_at_the_box_centre():
    from scene3d.fields.hash_grid import HashGridEncoding
    from scene3d.fields.radiance import RadianceField

    box = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])
    enc = HashGridEncoding(n_levels=2, log2_hashmap_size=10, base_resolution=4, max_resolution=8, backend="torch")
    field = RadianceField(box, enc, density_hidden=8, color_hidden=8, density_blob_scale=10.0, density_blob_std=0.5)
    plain = RadianceField(box, enc, density_hidden=8, color_hidden=8)
    plain.load_state_dict(field.state_dict())
    points = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.9, 0.0, 0.0]])
    ratio = field.density(points) / plain.density(points)
    # exp(a (1 − r/std)): e^10 at the centre, 1 on the blob's radius, below 1 outside
    torch.testing.assert_close(ratio, torch.exp(10.0 * (1.0 - points[:, 0] / 0.5)), rtol=1e-4, atol=0)


def test_density_only_field_has_the_same_geometry_and_no_colour_head():
    torch.manual_seed(0)
    with_color = small_field()
    torch.manual_seed(0)
    density_only = small_field(with_color=False)
    pos = torch.rand(6, 3) * 2 - 1
    assert density_only.color_mlp is None and "color_mlp.net.0.weight" not in density_only.state_dict()
    d0, f0 = with_color.geometry(pos)
    d1, f1 = density_only.geometry(pos)
    assert torch.equal(d0, d1) and torch.equal(f0, f1)
    with pytest.raises(ValueError, match="no colour head"):
        density_only(pos, torch.nn.functional.normalize(torch.randn(6, 3), dim=-1))

"""The SDF field (NeuS geometry / texture field) and DMTet's learnable tetrahedral grid."""

from __future__ import annotations

import pytest
import torch

from scene3d.fields.dmtet import DMTet
from scene3d.fields.hash_grid import HashGridEncoding
from scene3d.fields.sdf import SDFField

BOX = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


def _field(**kw) -> SDFField:
    enc = HashGridEncoding(n_levels=4, log2_hashmap_size=12, base_resolution=4, max_resolution=32, backend="torch")
    return SDFField(BOX, enc, hidden=16, color_hidden=16, **kw)


def test_untrained_field_is_its_base_sphere():
    field = _field(sphere_radius=0.5)
    x = torch.rand(64, 3) * 2 - 1
    torch.testing.assert_close(field.sdf(x), x.norm(dim=-1) - 0.5)
    rgb = field.albedo(x)
    assert rgb.shape == (64, 3) and bool(((rgb >= 0) & (rgb <= 1)).all())


def test_finite_difference_gradient_is_exact_for_the_sphere_away_from_its_centre():
    field = _field(sphere_radius=0.5, fd_epsilon=1e-3)
    x = torch.nn.functional.normalize(torch.randn(32, 3), dim=-1) * 0.7
    grad = field.gradient(x)
    torch.testing.assert_close(grad, torch.nn.functional.normalize(x, dim=-1), atol=1e-3, rtol=0)


def test_gradient_is_differentiable_in_the_parameters():
    field = _field(sphere_radius=0.5)
    with torch.no_grad():
        field.encoding.params.uniform_(-0.1, 0.1)
        field.sdf_mlp.net[-2].weight.normal_(0, 0.1)
    loss = ((field.gradient(torch.rand(16, 3)).norm(dim=-1) - 1) ** 2).mean()
    loss.backward()
    assert float(field.encoding.params.grad.abs().sum()) > 0


def test_bad_arguments():
    with pytest.raises(ValueError, match="fd_epsilon"):
        _field(fd_epsilon=0.0)


def test_dmtet_set_sdf_extract_and_gradients():
    dmtet = DMTet(12, (-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))
    dmtet.set_sdf(lambda x: x.norm(dim=-1) - 0.6)
    assert float(dmtet.deformation.detach().abs().sum()) == 0.0
    mesh = dmtet.extract()
    assert mesh.faces.shape[0] > 0
    radius = mesh.vertices.norm(dim=-1)
    assert float((radius - 0.6).abs().max()) < 0.05
    # losses on the mesh reach the SDF values and the offsets
    (radius - 0.5).pow(2).mean().backward()
    assert float(dmtet.sdf.grad.abs().sum()) > 0 and float(dmtet.deformation.grad.abs().sum()) > 0
    # offsets stay under half a cell
    with torch.no_grad():
        dmtet.deformation.fill_(100.0)
    step = (dmtet.positions - dmtet.grid_vertices).abs().max()
    assert float(step) < 0.5 * float(dmtet.cell_size.max())
    with pytest.raises(ValueError, match="max_deformation"):
        DMTet(4, (-1.0, -1.0, -1.0), (1.0, 1.0, 1.0), max_deformation=0.6)

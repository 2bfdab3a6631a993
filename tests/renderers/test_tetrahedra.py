"""Kuhn tetrahedral grids and marching tetrahedra (DMTet's surface extraction)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scene3d.renderers.tetrahedra import grid_edges, kuhn_grid, marching_tetrahedra, sdf_sign_regularizer


def _volumes(vertices: torch.Tensor, tets: torch.Tensor) -> torch.Tensor:
    v = vertices[tets].double()
    return torch.linalg.det(torch.stack([v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], v[:, 3] - v[:, 0]], -1)) / 6.0


def test_kuhn_grid_is_positive_and_conforming():
    grid = kuhn_grid(3, (-1.0, -2.0, 0.0), (1.0, 2.0, 3.0))
    assert grid.vertices.shape == (64, 3) and grid.tets.shape == (6 * 27, 4)
    vol = _volumes(grid.vertices, grid.tets)
    assert bool((vol > 0).all())
    assert math.isclose(float(vol.sum()), 2.0 * 4.0 * 3.0, rel_tol=1e-9)
    # conforming: every triangular face is shared by two tetrahedra, or lies on the box's boundary
    faces = torch.cat([grid.tets[:, [0, 1, 2]], grid.tets[:, [0, 1, 3]], grid.tets[:, [0, 2, 3]], grid.tets[:, [1, 2, 3]]])
    faces = torch.sort(faces, dim=1).values
    _, counts = torch.unique(faces, dim=0, return_counts=True)
    assert set(counts.tolist()) == {1, 2}
    n_boundary = int((counts == 1).sum())
    assert n_boundary == 2 * 6 * 3 * 3  # two triangles per boundary square, 6 sides of 3x3 squares


@pytest.mark.parametrize("resolution", [16, 32])
def test_sphere_is_watertight_and_close(resolution: int):
    import trimesh

    radius = 0.7
    grid = kuhn_grid(resolution, (-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))
    sdf = (grid.vertices.double().norm(dim=-1) - radius).requires_grad_(True)
    mesh = marching_tetrahedra(grid.vertices.double(), grid.tets, sdf)
    tm = trimesh.Trimesh(mesh.vertices.detach().numpy(), mesh.faces.numpy(), process=False)
    assert tm.is_watertight and tm.is_winding_consistent
    assert tm.volume > 0, "faces must be wound outward"
    cell = 2.0 / resolution
    # the zero crossing of a linear interpolation of |x| − R along an edge of length h is off by at most ~h²/(8R)
    err = (mesh.vertices.detach().norm(dim=-1) - radius).abs().max().item()
    assert err < cell**2 / radius
    assert abs(tm.volume / (4 / 3 * math.pi * radius**3) - 1.0) < 0.05
    assert mesh.edges.shape == (mesh.vertices.shape[0], 2)
    # gradients reach the SDF values (DMTet Eq. 2)
    mesh.vertices.norm(dim=-1).sum().backward()
    assert sdf.grad is not None and float(sdf.grad.abs().sum()) > 0


def test_two_spheres_make_two_closed_components():
    import trimesh

    grid = kuhn_grid(24, (-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))
    a = (grid.vertices - torch.tensor([0.45, 0.0, 0.0])).norm(dim=-1) - 0.3
    b = (grid.vertices + torch.tensor([0.45, 0.0, 0.0])).norm(dim=-1) - 0.3
    mesh = marching_tetrahedra(grid.vertices, grid.tets, torch.minimum(a, b))
    tm = trimesh.Trimesh(mesh.vertices.numpy(), mesh.faces.numpy(), process=False)
    assert len(tm.split(only_watertight=True)) == 2


def test_no_sign_change_gives_empty_mesh_and_bad_shapes_raise():
    grid = kuhn_grid(4, (-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))
    mesh = marching_tetrahedra(grid.vertices, grid.tets, torch.ones(grid.vertices.shape[0]))
    assert mesh.vertices.shape == (0, 3) and mesh.faces.shape == (0, 3)
    with pytest.raises(ValueError, match="sdf must have shape"):
        marching_tetrahedra(grid.vertices, grid.tets, torch.ones(3))
    with pytest.raises(ValueError, match="resolution"):
        kuhn_grid(0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))


def test_sign_regularizer_penalises_crossings_only():
    grid = kuhn_grid(4, (-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))
    edges = grid_edges(grid.tets)
    assert float(sdf_sign_regularizer(torch.ones(len(grid.vertices)), edges)) == 0.0
    sdf = (grid.vertices.norm(dim=-1) - 0.5).requires_grad_(True)
    loss = sdf_sign_regularizer(sdf, edges)
    loss.backward()
    assert float(loss) > 0 and np.isfinite(float(loss)) and float(sdf.grad.abs().sum()) > 0

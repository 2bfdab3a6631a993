"""Differentiable mesh rendering: barycentrics recomputed in torch from a raycaster's triangle ids, interpolation,
silhouette antialiasing; gradients against finite differences."""

from __future__ import annotations

import math

import pytest
import torch

from scene3d.core.cameras import intrinsics_from_fov, look_at, pinhole_rays
from scene3d.renderers.mesh import MeshRaycaster
from scene3d.renderers.mesh_raster import (
    antialias,
    mesh_edges,
    face_adjacency,
    fragments_from_hits,
    project,
    ray_triangle_hits,
    vertex_normals,
)

pytestmark = pytest.mark.data  # visibility comes from open3d's raycaster


def _triangle_ids(vertices: torch.Tensor, faces: torch.Tensor, origins: torch.Tensor, directions: torch.Tensor) -> torch.Tensor:
    return MeshRaycaster(vertices.detach().float(), faces, backend="open3d").cast(origins.float(), directions.float()).triangle


def _cameras(width: int = 24):
    c2w = look_at(torch.tensor([[0.0, -2.5, 0.5], [1.5, 1.5, 1.0]]), torch.zeros(2, 3)).double()
    K = intrinsics_from_fov(40.0, width, width).double()[None].expand(2, 3, 3)
    return c2w, K, width


def _sphere():
    import trimesh

    mesh = trimesh.creation.icosphere(2, radius=0.6)
    return torch.tensor(mesh.vertices, dtype=torch.float64), torch.tensor(mesh.faces)


def _render(vertices: torch.Tensor, faces: torch.Tensor, c2w, K, width: int, ids: torch.Tensor | None = None):
    origins, directions = pinhole_rays(c2w, K, width, width)
    if ids is None:
        ids = _triangle_ids(vertices, faces, origins, directions)
    frags = fragments_from_hits(vertices, faces, origins, directions, ids, c2w, K)
    colour = frags.interpolate(vertices * 0.5 + 0.5, faces)
    m = frags.mask[..., None].to(vertices.dtype)
    image = torch.cat([colour * m + (1 - m) * torch.tensor([0.2, 0.3, 0.9], dtype=vertices.dtype), m], -1)
    return antialias(image, ids, frags.depth, frags.screen, mesh_edges(faces), frags.facing), ids, frags


def test_barycentrics_and_distances_match_the_hit_points():
    vertices, faces = _sphere()
    c2w, K, width = _cameras()
    origins, directions = pinhole_rays(c2w, K, width, width)
    ids = _triangle_ids(vertices, faces, origins, directions)
    hit = ids >= 0
    bary, t = ray_triangle_hits(origins[hit], directions[hit], vertices, faces, ids[hit])
    assert bool((bary > -1e-6).all()) and torch.allclose(bary.sum(-1), torch.ones_like(t))
    on_ray = origins[hit] + t[:, None] * directions[hit]
    on_triangle = (bary[..., None] * vertices[faces[ids[hit]]]).sum(1)
    torch.testing.assert_close(on_ray, on_triangle)
    # the sphere's hits lie at its (inscribed) surface
    assert float((on_ray.norm(dim=-1) - 0.6).abs().max()) < 0.02


def test_projection_inverts_the_pinhole_rays():
    c2w, K, width = _cameras()
    origins, directions = pinhole_rays(c2w, K, width, width)
    points = origins[:, 5, 7] + 2.0 * directions[:, 5, 7]
    uv, depth = project(points[:1], c2w[:1], K[:1])
    torch.testing.assert_close(uv[0, 0], torch.tensor([7.5, 5.5], dtype=torch.float64))
    assert float(depth[0, 0]) > 0


def test_antialiased_coverage_is_closer_to_the_true_area():
    vertices, faces = _sphere()
    c2w, K, width = _cameras()
    image, ids, _ = _render(vertices, faces, c2w, K, width)
    # the icosphere's exact projected area, from a very fine hard render of the same mesh
    fine = 8
    c2w_f, K_f = c2w, K.clone()
    K_f[:, :2] *= fine
    _, ids_fine, _ = _render(vertices, faces, c2w_f, K_f, width * fine)
    truth = (ids_fine >= 0).sum((1, 2)).double() / fine**2
    hard = (ids >= 0).sum((1, 2)).double()
    soft = image[..., 3].sum((1, 2))
    assert bool(((soft - truth).abs() < (hard - truth).abs()).all()), (truth, hard, soft)


def test_gradients_match_finite_differences():
    vertices, faces = _sphere()
    vertices.requires_grad_(True)
    c2w, K, width = _cameras()
    image, ids, _ = _render(vertices, faces, c2w, K, width)
    weights = torch.randn(image.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    (image * weights).sum().backward()
    grad = vertices.grad.clone()
    assert float(grad.abs().sum()) > 0
    g = torch.Generator().manual_seed(1)
    eps = 1e-5
    for _ in range(6):
        direction = torch.randn(vertices.shape, generator=g, dtype=torch.float64)
        with torch.no_grad():
            plus, ids_p, _ = _render(vertices + eps * direction, faces, c2w, K, width)
            minus, ids_m, _ = _render(vertices - eps * direction, faces, c2w, K, width)
        assert torch.equal(ids_p, ids) and torch.equal(ids_m, ids)  # the visibility does not change at this step
        numeric = float(((plus - minus) * weights).sum() / (2 * eps))
        analytic = float((grad * direction).sum())
        assert math.isclose(numeric, analytic, rel_tol=1e-4, abs_tol=1e-6), (numeric, analytic)


def test_silhouette_gradient_moves_the_coverage():
    """Only the antialiased silhouette gives the coverage a gradient: growing the sphere must grow the mask."""
    vertices, faces = _sphere()
    scale = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    c2w, K, width = _cameras()
    image, _, _ = _render(vertices * scale, faces, c2w, K, width)
    image[..., 3].sum().backward()
    assert float(scale.grad) > 0


def test_adjacency_and_vertex_normals_of_a_closed_mesh():
    vertices, faces = _sphere()
    adjacency = face_adjacency(faces)
    assert bool((adjacency >= 0).all())
    own = torch.arange(len(faces))[:, None].expand_as(adjacency)
    back = adjacency[adjacency]  # neighbour's neighbours contain the face itself
    assert bool((back == own[..., None]).any(-1).all())
    normals = vertex_normals(vertices, faces)
    # area-weighted face normals of an icosphere deviate from the radial direction by about a degree
    torch.testing.assert_close(normals, torch.nn.functional.normalize(vertices, dim=-1), atol=0.03, rtol=0)

"""Mesh export: marching cubes of an analytic sphere field, colours as rendered, PLY / OBJ / GLB round trips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from scene3d.core.cameras import fibonacci_sphere, intrinsics_from_fov, look_at, pinhole_rays
from scene3d.export.mesh import Mesh, density_grid, extract_mesh, grid_shape, write_mesh
from scene3d.fields.hash_grid import HashGridEncoding
from scene3d.fields.radiance import RadianceField
from scene3d.renderers.marching import MarchSettings, render_rays
from scene3d.renderers.occupancy import OccupancyGrid

RADIUS = 0.5
BOX = torch.tensor([[-1.0, -1.0, -0.8], [1.0, 1.0, 0.8]])


class SphereField(RadianceField):
    """σ = 1000·sigmoid(200 (R − |x|)), a nearly hard sphere; red where x > 0, blue elsewhere (view-independent)."""

    def geometry(self, positions, density_extra=None):
        density = 1000.0 * torch.sigmoid(200.0 * (RADIUS - positions.norm(dim=-1)))
        features = torch.zeros(positions.shape[0], self.geo_feat_dim, dtype=positions.dtype, device=positions.device)
        features[:, 0] = (positions[:, 0] > 0).to(positions.dtype)
        return density, features

    def color(self, directions, features, color_extra=None):
        red = features[:, :1]
        return torch.cat([red, torch.zeros_like(red), 1.0 - red], dim=-1)


class SphereModel:
    """The parts of an s3d-nerf model the exporter uses."""

    def __init__(self) -> None:
        enc = HashGridEncoding(n_levels=2, log2_hashmap_size=8, base_resolution=4, max_resolution=8, backend="torch")
        self.field = SphereField(BOX, enc)
        self.occupancy_grid = OccupancyGrid(BOX.reshape(-1), resolution=(32, 32, 26))
        self.occupancy_grid.update(0, lambda x: self.field.density(x) * 0.01)
        self.background = torch.tensor([0.9, 0.9, 0.9])
        self.march = MarchSettings(step_size=0.01, backend="torch")

    def render(self, origins, directions, background=None, *, with_normals=False):
        bg = self.background if background is None else background
        return render_rays(self.field, self.occupancy_grid, origins, directions, self.march, background=bg,
                           with_normals=with_normals)


def ring_rays(n_cameras: int = 6, size: int = 24):
    eyes = fibonacci_sphere(n_cameras) * 3.0
    c2w = look_at(eyes, torch.zeros(n_cameras, 3))
    o, d = pinhole_rays(c2w, intrinsics_from_fov(40.0, size, size).expand(n_cameras, 3, 3), size, size)
    return o.reshape(-1, 3), d.reshape(-1, 3)


@pytest.fixture(scope="module")
def sphere_mesh() -> Mesh:
    return extract_mesh(SphereModel(), resolution=48, level_rays=ring_rays())


def test_grid_shape_keeps_cells_cubic():
    assert grid_shape(BOX, 41) == (41, 41, 33)


def test_density_grid_skips_unoccupied_points():
    model = SphereModel()
    shape = (9, 9, 9)
    full = density_grid(model.field.density, BOX, shape)
    masked = density_grid(model.field.density, BOX, shape, occupied_fn=model.occupancy_grid.query)
    assert full.shape == shape and float(full.max()) > 100
    assert np.array_equal(masked[masked > 0], full[masked > 0]) and (masked == 0).sum() > (full < 1e-3).sum() * 0.5


def test_sphere_surface_is_where_the_renders_put_it(sphere_mesh: Mesh):
    radii = np.linalg.norm(sphere_mesh.vertices, axis=-1)
    spacing = 2.0 / 47
    assert abs(float(np.median(radii)) - RADIUS) < spacing
    assert float(radii.max() - radii.min()) < 2 * spacing
    tm = trimesh.Trimesh(sphere_mesh.vertices, sphere_mesh.faces, process=False)
    assert tm.is_watertight and tm.volume > 0  # outward winding: positive volume
    # the rendered surface lies a little outside R (where the optical depth reaches ~1): within 4 % of the radius
    assert abs((tm.volume / (4 / 3 * np.pi)) ** (1 / 3) - RADIUS) < 0.04 * RADIUS


def test_vertex_colours_are_the_rendered_object_colours(sphere_mesh: Mesh):
    x = sphere_mesh.vertices[:, 0]
    right, left = sphere_mesh.colors[x > 0.1], sphere_mesh.colors[x < -0.1]
    assert right[:, 0].min() > 200 and right[:, 2].max() < 55, "the background must not tint the colours"
    assert left[:, 2].min() > 200 and left[:, 0].max() < 55


@pytest.mark.parametrize("suffix", [".ply", ".obj", ".glb"])
def test_write_and_reload(sphere_mesh: Mesh, tmp_path: Path, suffix: str):
    path = write_mesh(sphere_mesh, tmp_path / f"sphere{suffix}")
    loaded = trimesh.load(path, force="mesh", process=False)
    assert len(loaded.faces) == len(sphere_mesh.faces)
    colors = np.asarray(loaded.visual.vertex_colors)[:, :3]
    # per-vertex colours survive (GLB may re-order vertices: compare the colour histograms)
    assert abs(int((colors[:, 0] > 128).sum()) - int((sphere_mesh.colors[:, 0] > 128).sum())) <= 2
    assert abs(float(np.linalg.norm(loaded.vertices, axis=-1).mean()) - RADIUS) < 0.05


def test_bad_threshold_and_suffix(tmp_path: Path):
    with pytest.raises(ValueError, match="density range"):
        extract_mesh(SphereModel(), resolution=16, threshold=1e6)
    with pytest.raises(ValueError, match="must end in"):
        write_mesh(Mesh(np.zeros((3, 3), np.float32), np.array([[0, 1, 2]]), np.zeros((3, 3), np.uint8)), tmp_path / "m.stl")

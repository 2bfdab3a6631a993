"""Mesh export: the rendered depth of a few views fused (TSDF), colours as the views show them, PLY / OBJ / GLB.

Two analytic fields stand in for trained NeRFs: a nearly hard two-coloured sphere, and a checker floor whose light
squares are semi-transparent and lighter in the render than in the field (a trained s3d-nerf's floor against a
light background did that: accumulated opacity ≈ 0.5 on the light squares). On that floor the density iso-surface
exporter of before left the light squares out (about half the light area a hole) and coloured them with the
field's own darker colour; the fused surface keeps them and takes the colour the views show.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

from scene3d.core.cameras import fibonacci_sphere, intrinsics_from_fov, look_at, pinhole_rays
from scene3d.export.mesh import Mesh, PinholeCamera, extract_mesh, grid_shape, render_view, write_mesh
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


class AnalyticModel:
    """The parts of an s3d-nerf model the exporter uses: ``field.aabb`` and ``render``."""

    def __init__(self, field: RadianceField, box: torch.Tensor, resolution: tuple[int, int, int], background) -> None:
        self.field = field
        self.occupancy_grid = OccupancyGrid(box.reshape(-1), resolution=resolution)
        self.occupancy_grid.update(0, lambda x: self.field.density(x) * 0.01, occ_threshold=1e-3)
        self.background = torch.as_tensor(background)
        self.march = MarchSettings(step_size=0.005, backend="torch")

    def render(self, origins, directions, background=None, *, with_normals=False):
        bg = self.background if background is None else background
        return render_rays(self.field, self.occupancy_grid, origins, directions, self.march, background=bg,
                           with_normals=with_normals)


def _encoding() -> HashGridEncoding:
    return HashGridEncoding(n_levels=2, log2_hashmap_size=8, base_resolution=4, max_resolution=8, backend="torch")


def sphere_model() -> AnalyticModel:
    return AnalyticModel(SphereField(BOX, _encoding()), BOX, (32, 32, 26), (0.9, 0.9, 0.9))


def orbit(n: int, radius: float, size: int, fov: float = 40.0, **band) -> list[PinholeCamera]:
    eyes = fibonacci_sphere(n, **band) * radius
    c2w = look_at(eyes, torch.zeros(n, 3))
    return [PinholeCamera(c2w[i], intrinsics_from_fov(fov, size, size), size, size) for i in range(n)]


@pytest.fixture(scope="module")
def sphere_mesh() -> Mesh:
    return extract_mesh(sphere_model(), orbit(8, 3.0, 64), resolution=48)


def test_grid_shape_keeps_cells_cubic():
    assert grid_shape(BOX, 41) == (41, 41, 33)


def test_sphere_surface_is_where_the_renders_put_it(sphere_mesh: Mesh):
    radii = np.linalg.norm(sphere_mesh.vertices, axis=-1)
    spacing = 2.0 / 47
    assert abs(float(np.median(radii)) - RADIUS) < spacing
    assert float(radii.max() - radii.min()) < 3 * spacing
    tm = trimesh.Trimesh(sphere_mesh.vertices, sphere_mesh.faces, process=False)
    assert tm.is_watertight and tm.volume > 0  # seen from all round: closed; outward winding: positive volume
    # the rendered depth lies a little outside R (where the optical depth reaches ~1): within 4 % of the radius
    assert abs((tm.volume / (4 / 3 * np.pi)) ** (1 / 3) - RADIUS) < 0.04 * RADIUS


def test_vertex_colours_are_the_rendered_object_colours(sphere_mesh: Mesh):
    # away from the red/blue edge at x = 0 by more than four pixel footprints of the 64 px views (3.4 cm each)
    x = sphere_mesh.vertices[:, 0]
    right, left = sphere_mesh.colors[x > 0.15], sphere_mesh.colors[x < -0.15]
    for own, other in ((right[:, 0], right[:, 2]), (left[:, 2], left[:, 0])):
        # the background must not tint the colours; a grazing view may still tint the odd vertex a little (6 of
        # about 1000 here: these 8 views see each bump of the soft shell at a slant)
        assert float(np.mean((own > 200) & (other < 55))) > 0.99
        assert own.min() > 200 and other.max() < 100


# ------------------------------------------------------------------ a light floor against a light background

FLOOR_BOX = torch.tensor([[-1.0, -1.0, -0.3], [1.0, 1.0, 0.3]])
FLOOR_BG = (0.93, 0.95, 0.97)
LIGHT, DARK = torch.tensor([0.8, 0.86, 0.76]), torch.tensor([0.3, 0.35, 0.25])
HALF, CELL = 0.05, 0.5
"""The floor: a slab |z| < HALF of CELL-sized checker squares."""


def is_light(p: torch.Tensor) -> torch.Tensor:
    return (torch.floor(p[:, 0] / CELL) + torch.floor(p[:, 1] / CELL)) % 2 == 0


class FloorField(RadianceField):
    """Dark squares opaque; light squares half transparent straight down (σ · 2·HALF = ln 2), their own colour chosen
    so that, over the background, a view straight down shows LIGHT: the field's colour is darker than the render."""

    def geometry(self, positions, density_extra=None):
        sigma = torch.where(is_light(positions), torch.tensor(math.log(2.0) / (2 * HALF)), torch.tensor(300.0))
        density = sigma * torch.sigmoid(400.0 * (HALF - positions[:, 2].abs()))
        features = torch.zeros(positions.shape[0], self.geo_feat_dim, dtype=positions.dtype)
        features[:, 0] = is_light(positions).to(positions.dtype)
        return density, features

    def color(self, directions, features, color_extra=None):
        light = features[:, :1]
        own_light = 2.0 * LIGHT - torch.tensor(FLOOR_BG)
        return light * own_light + (1.0 - light) * DARK


@pytest.fixture(scope="module")
def floor():
    model = AnalyticModel(FloorField(FLOOR_BOX, _encoding()), FLOOR_BOX, (32, 32, 10), FLOOR_BG)
    cameras = orbit(6, 2.5, 32, fov=50.0, min_elevation_deg=35.0, max_elevation_deg=80.0)
    return model, cameras, extract_mesh(model, cameras, resolution=48)


def _shown(model, cameras) -> dict[str, torch.Tensor]:
    """Mean colour the views show where their rays meet a light and a dark square of the floor (z = 0)."""
    sums = {"light": [], "dark": []}
    for camera in cameras:
        o, d = pinhole_rays(camera.c2w, camera.K, camera.width, camera.height)
        o, d = o.reshape(-1, 3), d.reshape(-1, 3)
        hit = o - d * (o[:, 2:] / d[:, 2:])
        inner = hit[:, :2].abs().max(dim=1).values < 0.9
        rgb = render_view(model, camera).rgb.reshape(-1, 3)
        sums["light"].append(rgb[inner & is_light(hit)])
        sums["dark"].append(rgb[inner & ~is_light(hit)])
    return {k: torch.cat(v).mean(0) for k, v in sums.items()}


def test_semi_transparent_light_squares_are_no_holes(floor):
    _, _, mesh = floor
    xs = torch.linspace(-0.85, 0.85, 60)
    grid = torch.stack(torch.meshgrid(xs, xs, indexing="ij"), dim=-1).reshape(-1, 2)
    grid = torch.cat([grid, torch.zeros(grid.shape[0], 1)], dim=1)
    light = grid[is_light(grid)]
    dist = torch.cdist(light, torch.from_numpy(mesh.vertices).float()).min(dim=1).values
    cell = 2.0 / 47
    # density iso-surface export of before: 51 % of these points within two cells of the mesh
    assert float((dist < 2 * cell).float().mean()) > 0.98


def test_floor_colours_are_what_the_views_show(floor):
    model, cameras, mesh = floor
    shown = _shown(model, cameras)
    v = torch.from_numpy(mesh.vertices)
    top = (v[:, 2] > 0) & (v[:, :2].abs().max(dim=1).values < 0.9)
    colours = torch.from_numpy(mesh.colors).float() / 255.0
    light, dark = colours[top & is_light(v)].mean(0), colours[top & ~is_light(v)].mean(0)
    # density iso-surface export of before: light squares (0.36, 0.42, 0.30), the field's colour with the background
    # removed, darker still at the holes' rims
    assert float((light - shown["light"]).abs().max()) < 0.04, (light, shown["light"])
    assert float((dark - shown["dark"]).abs().max()) < 0.04, (dark, shown["dark"])
    assert float((light - DARK).abs().min()) > 0.2  # light squares are not coloured like the dark ones


@pytest.mark.parametrize("suffix", [".ply", ".obj", ".glb"])
def test_write_and_reload(sphere_mesh: Mesh, tmp_path: Path, suffix: str):
    path = write_mesh(sphere_mesh, tmp_path / f"sphere{suffix}")
    loaded = trimesh.load(path, force="mesh", process=False)
    assert len(loaded.faces) == len(sphere_mesh.faces)
    colors = np.asarray(loaded.visual.vertex_colors)[:, :3]
    # per-vertex colours survive (GLB may re-order vertices: compare the colour histograms)
    assert abs(int((colors[:, 0] > 128).sum()) - int((sphere_mesh.colors[:, 0] > 128).sum())) <= 2
    assert abs(float(np.linalg.norm(loaded.vertices, axis=-1).mean()) - RADIUS) < 0.05


def test_bad_arguments(tmp_path: Path):
    with pytest.raises(ValueError, match="resolution"):
        extract_mesh(sphere_model(), orbit(2, 3.0, 8), resolution=4)
    with pytest.raises(ValueError, match="at least one camera"):
        extract_mesh(sphere_model(), [], resolution=16)
    with pytest.raises(ValueError, match="no surface"):  # every view looks away from the sphere
        c2w = look_at(torch.tensor([[0.0, 0.0, 3.0]]), torch.tensor([[0.0, 5.0, 3.0]]))[0]
        away = [PinholeCamera(c2w, intrinsics_from_fov(40.0, 8, 8), 8, 8)]
        extract_mesh(sphere_model(), away, resolution=16)
    with pytest.raises(ValueError, match="must end in"):
        write_mesh(Mesh(np.zeros((3, 3), np.float32), np.array([[0, 1, 2]]), np.zeros((3, 3), np.uint8)), tmp_path / "m.stl")

"""Mesh ray casting: hits against analytic geometry, the torch twin against open3d, camera casts, visibility."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

from scene3d.core.cameras import equirect_directions, equirect_pixels, intrinsics_from_fov, look_at, project_pinhole
from scene3d.renderers.mesh import MeshRaycaster, face_normals, interpolate

pytestmark = pytest.mark.data  # the default backend on a CPU is open3d


def box(lo: tuple[float, float, float], hi: tuple[float, float, float], *, inward: bool = False):
    """An axis-aligned box, 12 triangles wound outward (or inward: a room seen from inside)."""
    x0, y0, z0 = lo
    x1, y1, z1 = hi
    v = torch.tensor(
        [[x0, y0, z0], [x1, y0, z0], [x1, y1, z0], [x0, y1, z0], [x0, y0, z1], [x1, y0, z1], [x1, y1, z1], [x0, y1, z1]],
        dtype=torch.float32,
    )
    f = torch.tensor(
        [[0, 2, 1], [0, 3, 2], [4, 5, 6], [4, 6, 7], [0, 1, 5], [0, 5, 4],
         [1, 2, 6], [1, 6, 5], [2, 3, 7], [2, 7, 6], [3, 0, 4], [3, 4, 7]]
    )  # fmt: skip
    return v, (f[:, [0, 2, 1]] if inward else f)


def room_with_box() -> tuple[torch.Tensor, torch.Tensor]:
    """A 4 × 4 × 3 m room (inward faces) with a 1 m box standing between its centre and the +Y wall."""
    return MeshRaycaster.from_parts([box((-2, -2, 0), (2, 2, 3), inward=True), box((-0.5, 0.7, 0), (0.5, 1.2, 1.0))])


def random_rays(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    origins = (torch.rand(n, 3, generator=g) - 0.5) * torch.tensor([3.0, 3.0, 2.0]) + torch.tensor([0, 0, 1.5])
    directions = torch.randn(n, 3, generator=g)
    return origins, directions


def test_room_centre_distances_normals_and_barycentrics() -> None:
    rc = MeshRaycaster(*box((-2, -2, 0), (2, 2, 3), inward=True))
    origins = torch.tensor([[0.0, 0.0, 1.0]]).expand(4, 3)
    directions = torch.tensor([[1.0, 0, 0], [0, -2.0, 0], [0, 0, 1.0], [0, 0, -1.0]])  # not unit on purpose
    hits = rc.cast(origins, directions)
    assert hits.mask.all()
    torch.testing.assert_close(hits.distance, torch.tensor([2.0, 2.0, 2.0, 1.0]))
    torch.testing.assert_close(hits.directions.norm(dim=-1), torch.ones(4))
    # inward room: normals point back at the centre, so the rays hit the front side
    assert hits.front_facing.all()
    torch.testing.assert_close(hits.normals, -hits.directions)
    # barycentrics reconstruct the hit points from the triangle corners
    corners = rc.vertices[rc.faces[hits.triangle]]
    torch.testing.assert_close((hits.barycentrics[..., None] * corners).sum(-2), hits.points, atol=1e-5, rtol=0)
    torch.testing.assert_close(hits.barycentrics.sum(-1), torch.ones(4))


def test_misses_hold_the_fill_values() -> None:
    rc = MeshRaycaster(*box((-0.5, -0.5, -0.5), (0.5, 0.5, 0.5)))
    hits = rc.cast(torch.tensor([[0.0, 0.0, 3.0], [0.0, 0.0, 3.0]]), torch.tensor([[0.0, 0.0, -1.0], [0, 0, 1.0]]))
    assert hits.mask.tolist() == [True, False]
    assert math.isinf(float(hits.distance[1])) and int(hits.triangle[1]) == -1
    assert hits.barycentrics[1].abs().sum() == 0 and hits.normals[1].abs().sum() == 0
    assert float(hits.distance[0]) == pytest.approx(2.5)
    torch.testing.assert_close(hits.points[1], torch.tensor([0.0, 0.0, 3.0]))


def test_torch_twin_matches_open3d() -> None:
    parts = [box((-2, -2, 0), (2, 2, 3), inward=True), box((-0.5, 0.7, 0), (0.5, 1.2, 1.0))]
    import trimesh

    sphere = trimesh.creation.icosphere(2, radius=0.4)
    parts.append((torch.tensor(sphere.vertices, dtype=torch.float32) + torch.tensor([1.0, -1.0, 1.2]),
                  torch.tensor(sphere.faces)))  # fmt: skip
    o3d = MeshRaycaster.from_parts(parts, backend="open3d")
    twin = MeshRaycaster.from_parts(parts, backend="torch", max_pairs=4096)  # several chunks
    origins, directions = random_rays(300)
    origins[:60] += torch.tensor([0.0, 0.0, 3.0])  # above the room: some hit its roof, most miss
    a, b = o3d.cast(origins, directions), twin.cast(origins, directions)
    assert 0 < int((~a.mask).sum()) < 60
    assert torch.equal(a.mask, b.mask)
    same = a.triangle == b.triangle
    # rays through a shared edge may report either neighbour: allow a few, with the same distance
    assert float(same.float().mean()) > 0.99
    torch.testing.assert_close(a.distance[a.mask], b.distance[b.mask], atol=1e-4, rtol=0)
    torch.testing.assert_close(a.barycentrics[same], b.barycentrics[same], atol=1e-4, rtol=0)
    torch.testing.assert_close(a.normals[same], b.normals[same])
    torch.testing.assert_close(a.points, b.points, atol=1e-4, rtol=0)
    # occlusion of segments agrees too
    span = directions * 1.5
    assert torch.equal(o3d.occluded(origins, span, t_far=1.0), twin.occluded(origins, span, t_far=1.0))
    assert torch.equal(o3d.part_of(a.triangle), twin.part_of(b.triangle))
    assert set(o3d.part_of(a.triangle).tolist()) == {-1, 0, 1, 2}


def test_pinhole_cast_z_depth_matches_projection() -> None:
    rc = MeshRaycaster(*box((-2, -2, 0), (2, 2, 3), inward=True))
    c2w = look_at(torch.tensor([[0.3, -0.2, 1.4], [0.0, 0.5, 2.0]]), torch.tensor([[0.0, 2.0, 1.0], [1.0, -1.0, 0.5]]))
    K = intrinsics_from_fov(70.0, 24, 16)
    hits = rc.cast_pinhole(c2w, K, 24, 16)
    assert hits.mask.shape == (2, 16, 24) and hits.mask.all()
    z = hits.z_depth(c2w)
    uv, z_proj = project_pinhole(hits.points.reshape(2, -1, 3), c2w, K.expand(2, 3, 3))
    torch.testing.assert_close(z.reshape(2, -1), z_proj, atol=1e-5, rtol=0)
    v, u = torch.meshgrid(torch.arange(16) + 0.5, torch.arange(24) + 0.5, indexing="ij")
    torch.testing.assert_close(uv.reshape(2, 16, 24, 2), torch.stack([u, v], -1).expand(2, 16, 24, 2), atol=1e-3, rtol=0)


def test_equirect_cast_round_trip_and_camera_batch() -> None:
    rc = MeshRaycaster(*box((-2, -2, 0), (2, 2, 3), inward=True))
    centre = torch.tensor([0.2, -0.1, 1.5])
    c2w = look_at(centre, centre + torch.tensor([0.0, 1.0, 0.0]))
    hits = rc.cast_equirect(c2w, 32, 16)
    assert hits.mask.shape == (16, 32) and hits.mask.all()
    # a hit point's direction from the centre, in camera axes, lands on its own pixel centre
    d_cam = (hits.points - centre) @ c2w[:3, :3]
    v, u = torch.meshgrid(torch.arange(16) + 0.5, torch.arange(32) + 0.5, indexing="ij")
    torch.testing.assert_close(equirect_pixels(d_cam, 32, 16), torch.stack([u, v], -1), atol=1e-3, rtol=0)

    @dataclass(frozen=True)
    class Cams:
        c2w: torch.Tensor
        K: torch.Tensor | None
        width: int
        height: int
        model: str

    batch = rc.cast_cameras(Cams(c2w[None], None, 32, 16, "equirectangular"))
    assert torch.equal(batch.triangle[0], hits.triangle)
    pin = rc.cast_cameras(Cams(c2w[None], intrinsics_from_fov(60.0, 8, 8)[None], 8, 8, "pinhole"))
    assert pin.mask.shape == (1, 8, 8)
    with pytest.raises(ValueError, match="intrinsics"):
        rc.cast_cameras(Cams(c2w[None], None, 8, 8, "pinhole"))
    with pytest.raises(ValueError, match="camera model"):
        rc.cast_cameras(Cams(c2w[None], None, 8, 8, "fisheye"))


def test_equirect_direction_round_trip() -> None:
    d = equirect_directions(64, 32)
    v, u = torch.meshgrid(torch.arange(32) + 0.5, torch.arange(64) + 0.5, indexing="ij")
    torch.testing.assert_close(equirect_pixels(d, 64, 32), torch.stack([u, v], -1), atol=1e-4, rtol=0)
    # and back: random directions -> pixels -> directions through the continuous mapping
    g = torch.Generator().manual_seed(1)
    dirs = torch.nn.functional.normalize(torch.randn(500, 3, generator=g), dim=-1)
    uv = equirect_pixels(dirs, 64, 32)
    lon = uv[:, 0] / 64 * 2 * math.pi - math.pi
    lat = math.pi / 2 - uv[:, 1] / 32 * math.pi
    back = torch.stack([lat.cos() * lon.sin(), lat.sin(), -lat.cos() * lon.cos()], -1)
    torch.testing.assert_close(back, dirs, atol=1e-5, rtol=0)


def test_visibility_with_an_occluding_box() -> None:
    rc = room_with_box()
    centre = torch.tensor([[0.0, 0.0, 0.6]])
    # points on the +Y wall (y = 2) at box height: behind the box from the centre, or beside it
    points = torch.tensor([[0.0, 2.0, 0.5], [0.2, 2.0, 0.3], [1.8, 2.0, 0.5], [-1.8, 2.0, 0.5], [0.0, 2.0, 2.5]])
    normals = torch.tensor([[0.0, -1.0, 0.0]]).expand(5, 3)
    seen = rc.visibility(points, centre, normals=normals)
    assert seen.tolist() == [[False, False, True, True, True]]
    # from a viewpoint beside the box the occluded wall points are visible
    side = torch.tensor([[1.6, 1.6, 0.5]])
    assert rc.visibility(points[:2], side, normals=normals[:2]).all()
    # the surface must face the camera: seen from behind the wall (outside the room) nothing is visible
    outside = torch.tensor([[0.0, 3.0, 0.5]])
    assert not rc.visibility(points[:1], outside, normals=normals[:1]).any()
    # points on the hidden side of the box: occluded by the box itself; on its front: visible
    box_points = torch.tensor([[0.0, 1.2, 0.5], [0.0, 0.7, 0.5]])
    box_normals = torch.tensor([[0.0, 1.0, 0.0], [0.0, -1.0, 0.0]])
    assert rc.visibility(box_points, centre, normals=box_normals).tolist() == [[False, True]]
    assert rc.visibility(box_points, centre).tolist() == [[False, True]]  # without normals: occlusion alone


def test_visibility_mask_of_the_wall_matches_an_equirect_cast() -> None:
    """Per-pixel: wall points the panorama hits first are visible, the ones behind the box are not."""
    rc = room_with_box()
    c2w = look_at(torch.tensor([0.0, 0.0, 0.6]), torch.tensor([0.0, 1.0, 0.6]))
    hits = rc.cast_equirect(c2w, 64, 32)
    wall = torch.stack(torch.meshgrid(torch.linspace(-1.9, 1.9, 20), torch.linspace(0.1, 2.9, 15), indexing="ij"), -1)
    points = torch.cat([wall[..., :1], torch.full_like(wall[..., :1], 2.0), wall[..., 1:]], -1).reshape(-1, 3)
    seen = rc.visibility(points, c2w[None, :3, 3], normals=torch.tensor([[0.0, -1.0, 0.0]]).expand_as(points))[0]
    # the same answer from the cast: the first hit along the ray towards the point is on the wall (part 0)
    direct = rc.cast(c2w[:3, 3].expand_as(points), points - c2w[:3, 3])
    first_on_wall = (rc.part_of(direct.triangle) == 0) & ((direct.points - points).norm(dim=-1) < 1e-3)
    assert torch.equal(seen, first_on_wall)
    assert 0 < int((~seen).sum()) < len(points) // 2
    assert int((rc.part_of(hits.triangle) == 1).sum()) > 0  # the panorama sees the box


def test_frustum() -> None:
    c2w = look_at(torch.tensor([0.0, -3.0, 0.0]), torch.zeros(3))[None]
    K = intrinsics_from_fov(60.0, 16, 16)
    points = torch.tensor([[0.0, 0.0, 0.0], [0.0, -4.0, 0.0], [10.0, 0.0, 0.0]])
    assert MeshRaycaster.frustum(points, c2w, K, 16, 16).tolist() == [[True, False, False]]


def test_interpolate_reads_corner_attributes() -> None:
    v, f = box((-1, -1, -1), (1, 1, 1))
    rc = MeshRaycaster(v, f)
    hits = rc.cast(torch.tensor([[0.3, -0.2, 5.0], [5.0, 5.0, 5.0]]), torch.tensor([[0.0, 0.0, -1.0], [0, 0, 1.0]]))
    xyz = interpolate(hits, v[f], fill=-7.0)  # per-corner positions: the hit point itself
    torch.testing.assert_close(xyz[0], torch.tensor([0.3, -0.2, 1.0]), atol=1e-5, rtol=0)
    assert xyz[1].tolist() == [-7.0, -7.0, -7.0]


def test_face_normals_and_bad_meshes() -> None:
    v, f = box((0, 0, 0), (1, 1, 1))
    n = face_normals(v, f)
    torch.testing.assert_close(n[2], torch.tensor([0.0, 0.0, 1.0]))  # top face, wound outward
    with pytest.raises(ValueError, match="no faces"):
        MeshRaycaster(v, torch.zeros(0, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="out of range"):
        MeshRaycaster(v, f + 10)
    with pytest.raises((ValueError, TypeError)):  # TypeError: the runtime type checker sees the Literal first
        MeshRaycaster(v, f, backend="cuda")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="part_sizes"):
        MeshRaycaster(v, f, part_sizes=[5, 5])
    with pytest.raises(ValueError, match="non-zero"):
        MeshRaycaster(v, f).cast(torch.zeros(1, 3), torch.zeros(1, 3))


def test_open3d_scene_is_built_on_the_first_cast() -> None:
    """(``tests/test_imports.py`` checks that importing the module does not import open3d.)"""
    rc = MeshRaycaster(torch.eye(3), torch.tensor([[0, 1, 2]]))
    assert rc._o3d is None
    hits = rc.cast(torch.tensor([[0.2, 0.2, 1.0]]), torch.tensor([[0.0, 0.0, -1.0]]))
    assert rc._o3d is not None and hits.mask.all()


@pytest.mark.gpu
def test_cuda_rays_use_the_torch_path_and_match_open3d() -> None:
    parts = [box((-2, -2, 0), (2, 2, 3), inward=True), box((-0.5, 0.7, 0), (0.5, 1.2, 1.0))]
    cpu = MeshRaycaster.from_parts(parts, backend="open3d")
    gpu = MeshRaycaster.from_parts([(v.to("cuda"), f.to("cuda")) for v, f in parts])
    origins, directions = random_rays(20000)
    a = cpu.cast(origins, directions)
    b = gpu.cast(origins.to("cuda"), directions.to("cuda"))
    assert b.distance.device.type == "cuda"
    assert torch.equal(a.mask, b.mask.cpu())
    torch.testing.assert_close(a.points, b.points.cpu(), atol=1e-4, rtol=0)

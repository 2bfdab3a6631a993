"""Texture atlases: xatlas unwrapping keeps the mesh, texels bake onto the surface, look-ups and gutter filling."""

from __future__ import annotations

import subprocess

import pytest
import torch

from scene3d.renderers import atlas as atlas_module
from scene3d.renderers.atlas import AtlasError, fill_gutters, rasterize_atlas, sample_texture, texel_centres, unwrap
from scene3d.renderers.mesh import MeshRaycaster, interpolate

pytestmark = pytest.mark.data  # texel rasterization casts with open3d


def room(extents=(4.0, 3.0, 2.5)) -> tuple[torch.Tensor, torch.Tensor]:
    import trimesh

    box = trimesh.creation.box(extents=extents)
    box = box.subdivide()  # 48 faces, shared vertices: the charts must be cut
    return torch.tensor(box.vertices, dtype=torch.float32), torch.tensor(box.faces[:, ::-1].copy())


@pytest.fixture(scope="module")
def unwrapped():
    v, f = room()
    a = unwrap(v, f, resolution=128)
    return v, f, a, rasterize_atlas(a)


def test_unwrap_keeps_every_triangle_and_packs_charts_without_overlap(unwrapped) -> None:
    v, f, a, texels = unwrapped
    assert a.faces.shape == f.shape
    torch.testing.assert_close(a.vertices[a.faces], v[f])  # same triangles, same order, same corners
    torch.testing.assert_close(v[a.source_vertex], a.vertices)
    assert a.vertices.shape[0] > v.shape[0]  # cut along seams
    assert 0.0 <= float(a.uvs.min()) and float(a.uvs.max()) <= 1.0
    assert 100 <= a.width <= 160 and 100 <= a.height <= 160  # about the resolution asked for
    # charts do not overlap: the texels covered equal the summed UV area of the triangles (to the border texels)
    uv = a.uvs[a.faces]
    e1, e2 = uv[:, 1] - uv[:, 0], uv[:, 2] - uv[:, 0]
    area = 0.5 * (e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]).abs().sum() * a.width * a.height
    assert texels.count == pytest.approx(float(area), rel=0.05)
    assert 0.3 < texels.count / (a.width * a.height) < 0.95


def test_baked_texels_lie_on_the_surface_with_its_normals(unwrapped) -> None:
    v, f, a, texels = unwrapped
    half = torch.tensor([2.0, 1.5, 1.25])
    assert (texels.positions.abs() <= half + 1e-4).all()
    # inward-wound room: each texel's normal is the axis of its wall, pointing into the room, and the texel lies
    # on that wall
    axis = texels.normals.abs().argmax(-1)
    n_axis = texels.normals.gather(1, axis[:, None])[:, 0]
    p_axis = texels.positions.gather(1, axis[:, None])[:, 0]
    torch.testing.assert_close(p_axis.abs(), half[axis], atol=1e-4, rtol=0)
    torch.testing.assert_close(n_axis, -torch.sign(p_axis))
    torch.testing.assert_close(texels.normals.norm(dim=-1), torch.ones(texels.count))
    # every face owns texels (none is smaller than a texel here)
    assert set(texels.triangle.tolist()) == set(range(f.shape[0]))
    # bilinear look-up at a texel centre returns that texel; a cast at the same surface point agrees on the UV
    image = texels.to_image(texels.positions)
    centres = texel_centres(a.height, a.width)[texels.rows, texels.cols]
    torch.testing.assert_close(sample_texture(image, centres), texels.positions, atol=1e-5, rtol=0)
    rc = MeshRaycaster(a.vertices, a.faces)
    pick = torch.arange(0, texels.count, 97)
    normal = texels.normals[pick]
    hits = rc.cast(texels.positions[pick] + 0.3 * normal, -normal)
    same = hits.triangle == texels.triangle[pick]  # a texel on a room edge may be hit on the neighbouring wall
    assert float(same.float().mean()) > 0.95
    torch.testing.assert_close(interpolate(hits, a.corner_uvs)[same], centres[pick][same], atol=1e-4, rtol=0)


def test_fill_gutters_keeps_filled_texels_and_leaves_none_empty(unwrapped) -> None:
    _, _, _, texels = unwrapped
    colours = torch.rand(texels.count, 3)
    image = texels.to_image(colours, fill=-1.0)
    one_ring = fill_gutters(image, texels.mask, iterations=1)
    full = fill_gutters(image, texels.mask)
    assert torch.equal(full[texels.rows, texels.cols], colours)
    assert (full >= 0).all()
    ring = (one_ring >= 0).all(-1) & ~texels.mask
    assert 0 < int(ring.sum()) < int((~texels.mask).sum())
    with pytest.raises(ValueError, match="no texel"):
        fill_gutters(image, torch.zeros_like(texels.mask))


def test_sample_texture_conventions() -> None:
    texture = torch.zeros(2, 2, 1)
    texture[0, 0] = 1.0  # top-left texel: u small, v large
    uv = torch.tensor([[0.25, 0.75], [0.75, 0.25], [0.5, 0.5]])
    torch.testing.assert_close(sample_texture(texture, uv)[:, 0], torch.tensor([1.0, 0.0, 0.25]))


def test_a_crashing_xatlas_is_one_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(*args, **kwargs):
        return subprocess.CompletedProcess(args, -11, "", "")

    monkeypatch.setattr(atlas_module.subprocess, "run", crash)
    v, f = room()
    with pytest.raises(AtlasError, match="signal 11.*decimate"):
        unwrap(v, f, resolution=64)
    with pytest.raises(ValueError, match="non-empty"):
        unwrap(v, f[:0], resolution=64)

"""Small rooms shared by the DreamSpace tests: a box room with one box standing in it, and its texture atlas."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import torch

from scene3d.renderers.atlas import Atlas, AtlasTexels, rasterize_atlas, unwrap
from scene3d.renderers.mesh import MeshRaycaster

CENTRE = torch.tensor([0.0, 0.0, 1.5])


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    """One intra-op thread (the machine is shared; OpenMP's spinning threads slow everything under load)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def room_mesh(subdivisions: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """A 4 × 4 × 3 m room (faces wound inwards) with a 1 × 0.5 × 1 m box between the centre and the +Y wall."""
    import trimesh

    room = trimesh.creation.box(extents=(4.0, 4.0, 3.0))
    room.apply_translation((0.0, 0.0, 1.5))
    room = trimesh.Trimesh(room.vertices, room.faces[:, ::-1])
    box = trimesh.creation.box(extents=(1.0, 0.5, 1.0))
    box.apply_translation((0.0, 1.0, 0.5))
    for _ in range(subdivisions):
        room, box = room.subdivide(), box.subdivide()
    mesh = trimesh.util.concatenate([room, box])
    return torch.tensor(mesh.vertices, dtype=torch.float32), torch.tensor(mesh.faces, dtype=torch.long)


def color_of(points: torch.Tensor) -> torch.Tensor:
    """A smooth, known colour field over the room (what a 'true' texture looks like in these tests)."""
    p = points.float()
    return torch.stack([0.5 + 0.4 * torch.sin(1.3 * p[..., 0] + 0.4 * p[..., 2]),
                        0.5 + 0.4 * torch.cos(1.1 * p[..., 1] - 0.7 * p[..., 2]),
                        0.5 + 0.3 * torch.sin(0.9 * (p[..., 0] + p[..., 1]))], -1)  # fmt: skip


@dataclass
class TexturedRoom:
    vertices: torch.Tensor
    faces: torch.Tensor
    raycaster: MeshRaycaster
    atlas: Atlas
    texels: AtlasTexels


@pytest.fixture(scope="session")
def textured_room() -> TexturedRoom:
    v, f = room_mesh()
    atlas = unwrap(v, f, resolution=96)
    return TexturedRoom(v, f, MeshRaycaster(v, f, backend="open3d"), atlas, rasterize_atlas(atlas))

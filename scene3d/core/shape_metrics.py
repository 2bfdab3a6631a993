"""Shape metrics against a ground-truth mesh: surface samples, Chamfer distance, normal angle error.

* :func:`chamfer_distance`: the symmetric mean nearest-neighbour distance between two point sets
  ``½ (mean_{a∈A} min_{b∈B} |a − b| + mean_{b∈B} min_{a∈A} |a − b|)`` (the L1-style Chamfer of Fan et al. 2017 /
  Kaolin, not squared);
* :func:`normal_angle_error`: the mean angle, in degrees, between each sampled point's face normal on one mesh and
  the face normal at its nearest sample on the other (orientation kept: a flipped face counts as 180°).

Both sample the surfaces area-uniformly with a seeded generator, so they are deterministic.

Example:
    >>> import torch
    >>> v = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]]); f = torch.tensor([[0, 1, 2]])
    >>> a, _ = sample_surface(v, f, 500, seed=0)
    >>> round(float(chamfer_distance(a, a)), 6)
    0.0
"""

from __future__ import annotations

import torch
from jaxtyping import Float, Int
from torch import Tensor


def sample_surface(
    vertices: Float[Tensor, "V 3"], faces: Int[Tensor, "F 3"], n: int, *, seed: int = 0
) -> tuple[Float[Tensor, "n 3"], Int[Tensor, " n"]]:
    """``n`` points uniform over the surface's area, and the face each lies on."""
    if faces.shape[0] == 0:
        raise ValueError("the mesh has no faces to sample")
    g = torch.Generator().manual_seed(seed)
    v = vertices.detach().double().cpu()
    tri = v[faces.cpu()]
    area = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1).norm(dim=-1)
    face = torch.multinomial(area / area.sum(), n, replacement=True, generator=g)
    r1, r2 = torch.rand(n, generator=g, dtype=torch.float64), torch.rand(n, generator=g, dtype=torch.float64)
    s = r1.sqrt()
    w = torch.stack([1 - s, s * (1 - r2), s * r2], dim=-1)
    points = (w[..., None] * tri[face]).sum(1)
    return points.float(), face


def nearest(
    a: Float[Tensor, "Na 3"], b: Float[Tensor, "Nb 3"], *, chunk: int = 2048
) -> tuple[Float[Tensor, " Na"], Int[Tensor, " Na"]]:
    """Distance from each point of ``a`` to its nearest point of ``b``, and that point's index."""
    dist, index = [], []
    for start in range(0, a.shape[0], chunk):
        d = torch.cdist(a[start : start + chunk].double(), b.double())
        m = d.min(dim=1)
        dist.append(m.values)
        index.append(m.indices)
    return torch.cat(dist).float(), torch.cat(index)


def chamfer_distance(a: Float[Tensor, "Na 3"], b: Float[Tensor, "Nb 3"]) -> Float[Tensor, ""]:
    """Symmetric mean nearest-neighbour distance (module docstring)."""
    if a.shape[0] == 0 or b.shape[0] == 0:
        raise ValueError(f"both point sets need points, got {a.shape[0]} and {b.shape[0]}")
    return 0.5 * (nearest(a, b)[0].mean() + nearest(b, a)[0].mean())


def face_normals(vertices: Float[Tensor, "V 3"], faces: Int[Tensor, "F 3"]) -> Float[Tensor, "F 3"]:
    """Unit normals of counter-clockwise faces."""
    tri = vertices.double()[faces]
    n = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    return torch.nn.functional.normalize(n, dim=-1).float()


def normal_angle_error(
    vertices: Float[Tensor, "V 3"],
    faces: Int[Tensor, "F 3"],
    true_vertices: Float[Tensor, "U 3"],
    true_faces: Int[Tensor, "G 3"],
    *,
    n: int = 20000,
    seed: int = 0,
) -> Float[Tensor, ""]:
    """Mean angle (degrees) between the normals of ``n`` samples of a mesh and the true normals nearest to them."""
    pts, face = sample_surface(vertices, faces, n, seed=seed)
    true_pts, true_face = sample_surface(true_vertices, true_faces, n, seed=seed + 1)
    _, idx = nearest(pts, true_pts)
    normals = face_normals(vertices.detach().cpu(), faces.cpu())[face]
    true_normals = face_normals(true_vertices.detach().cpu(), true_faces.cpu())[true_face[idx]]
    cos = (normals * true_normals).sum(-1).clamp(-1.0, 1.0)
    return torch.rad2deg(torch.acos(cos)).mean()

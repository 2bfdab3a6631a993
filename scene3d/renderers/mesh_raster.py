"""Differentiable mesh rendering on top of a raycaster's visibility: nvdiffrast's split, in torch.

nvdiffrast (Laine et al., SIGGRAPH Asia 2020) splits rendering into *rasterise* (which triangle covers each pixel;
not differentiable), *interpolate* (barycentric attribute interpolation; differentiable) and *antialias*
(analytic blending across silhouette edges, which is what carries gradients of coverage to the vertex positions).
scene3d does the same with a CPU raycaster in place of the hardware rasteriser:

1. **Visibility.** The triangle id hit by each pixel's ray comes from a raycaster (open3d's ``RaycastingScene``
   through :mod:`scene3d.renderers.mesh`) on detached vertices.
2. **Barycentrics, recomputed in torch** (:func:`ray_triangle_hits`): for the hit triangle ``(v₀, v₁, v₂)`` and
   the ray ``o + t d``, Möller–Trumbore's closed form (Möller & Trumbore 1997)::

       e₁ = v₁ − v₀,  e₂ = v₂ − v₀,  p = d × e₂,  s = o − v₀,  q = s × e₁,
       u = (s·p)/(e₁·p),  v = (d·q)/(e₁·p),  t = (e₂·q)/(e₁·p),   barycentrics (1 − u − v, u, v),

   a smooth function of the vertex positions, so gradients reach them (the raycaster only picks the triangle).
3. **Interpolation** (:func:`interpolate`): any per-vertex attribute, ``a = Σ_k b_k a_{f_k}``.
4. **Silhouette antialiasing** (:func:`antialias`). A hard visibility mask has no gradient with respect to the
   vertex positions: moving a silhouette edge changes which pixels are covered, a step. As nvdiffrast's antialias
   does (its paper, Sec. 3.3), every pair of horizontally or vertically adjacent pixels whose triangles differ is
   tested for a silhouette edge of the mesh (an edge whose two faces look different ways, or a boundary edge)
   crossing the segment between the two pixel centres; where several cross, the one nearest the back pixel is
   the outline. (nvdiffrast looks only at the front pixel's own triangle; on finely tessellated meshes the segment
   often leaves that triangle before it reaches the silhouette, and pixels half covered by a neighbour were missed.) The crossing point, at a fraction ``d`` of
   the way from the front pixel's centre to the other's, splits the two pixels' footprints (each one pixel wide
   along that axis) into covered and uncovered parts, and the pixel whose footprint the edge cuts is blended::

       d < ½:  c_front ← c_front + (½ − d)(c_back − c_front)      (the front pixel is partly uncovered)
       d > ½:  c_back  ← c_back  + (d − ½)(c_front − c_back)      (the back pixel is partly covered)

   ``d`` comes from the projected edge end points, so the blended colours — and the coverage, when the hit mask
   is one of the blended channels — are piecewise linear in the vertex positions. An edge closer to vertical is
   handled by the horizontal pairs only and one closer to horizontal by the vertical pairs only, so no pixel's
   coverage is counted twice (nvdiffrast's rule). This is a box-filter coverage along one axis at a time, not a
   true area coverage: a corner pixel gets the sum of two one-dimensional corrections.

Only pinhole cameras have a screen projection here: equirectangular renders skip step 4.

Example:
    >>> import torch
    >>> verts = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]], requires_grad=True)
    >>> faces = torch.tensor([[0, 1, 2]])
    >>> o, d = torch.tensor([[0.2, 0.2, 1.0]]), torch.tensor([[0.0, 0.0, -1.0]])
    >>> bary, t = ray_triangle_hits(o, d, verts, faces, torch.tensor([0]))
    >>> [round(x, 3) for x in bary[0].detach().tolist()], round(float(t[0].detach()), 3)
    ([0.6, 0.2, 0.2], 1.0)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from scene3d.core.cameras import project_pinhole
from scene3d.renderers.mesh import face_normals

__all__ = [
    "MeshEdges", "MeshFragments", "antialias", "face_adjacency", "face_normals", "fragments_from_hits", "interpolate",
    "mesh_edges", "project", "ray_triangle_hits", "vertex_normals",
]  # fmt: skip


def ray_triangle_hits(
    origins: Float[Tensor, "R 3"],
    directions: Float[Tensor, "R 3"],
    vertices: Float[Tensor, "V 3"],
    faces: Int[Tensor, "F 3"],
    triangle_ids: Int[Tensor, " R"],
) -> tuple[Float[Tensor, "R 3"], Float[Tensor, " R"]]:
    """Barycentrics and ray distances of each ray's intersection with the plane of its given triangle.

    Möller–Trumbore (module docstring), differentiable in ``vertices`` (and in the rays). The barycentrics are not
    clamped: they lie in the triangle when the raycaster's triangle id is right, and stay a smooth function of the
    vertices under small moves.

    Args:
        origins, directions: rays (directions need not be unit; ``t`` is in their units).
        vertices, faces: the mesh.
        triangle_ids: the triangle each ray hits (all valid: select the hit rays first).
    """
    if triangle_ids.shape != origins.shape[:1]:
        raise ValueError(f"triangle_ids must have shape ({origins.shape[0]},), got {tuple(triangle_ids.shape)}")
    tri = vertices[faces[triangle_ids]]  # (R, 3, 3)
    v0 = tri[:, 0]
    e1, e2 = tri[:, 1] - v0, tri[:, 2] - v0
    p = torch.linalg.cross(directions, e2, dim=-1)
    det = (e1 * p).sum(-1)
    # a ray in the triangle's plane has det = 0; the raycaster never reports such a hit, but keep it finite
    det = torch.where(det.abs() < 1e-12, torch.full_like(det, 1e-12), det)
    s = origins - v0
    q = torch.linalg.cross(s, e1, dim=-1)
    u = (s * p).sum(-1) / det
    v = (directions * q).sum(-1) / det
    t = (e2 * q).sum(-1) / det
    return torch.stack([1.0 - u - v, u, v], dim=-1), t


def interpolate(
    attributes: Float[Tensor, "V A"],
    faces: Int[Tensor, "F 3"],
    triangle_ids: Int[Tensor, "*batch"],
    barycentrics: Float[Tensor, "*batch 3"],
) -> Float[Tensor, "*batch A"]:
    """``Σ_k b_k a_{f_k}`` per pixel; zero where ``triangle_ids < 0`` (a miss).

    The differentiable counterpart of :func:`scene3d.renderers.mesh.interpolate` (which reads a cast's own
    barycentrics and per-corner values): here the barycentrics are the ones recomputed by :func:`ray_triangle_hits`.
    """
    hit = triangle_ids >= 0
    ids = triangle_ids.clamp_min(0)
    corner = attributes[faces[ids]]  # (*batch, 3, A)
    out = (barycentrics[..., None] * corner).sum(-2)
    return out * hit[..., None].to(out.dtype)


def vertex_normals(vertices: Float[Tensor, "V 3"], faces: Int[Tensor, "F 3"]) -> Float[Tensor, "V 3"]:
    """Area-weighted average of the adjacent face normals, unit (differentiable)."""
    tri = vertices[faces]
    n = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)  # length = 2 · area
    out = torch.zeros_like(vertices).index_add(0, faces.reshape(-1), n.repeat_interleave(3, dim=0))
    return torch.nn.functional.normalize(out, dim=-1, eps=1e-12)


def face_adjacency(faces: Int[Tensor, "F 3"]) -> Int[Tensor, "F 3"]:
    """For edge ``k`` of each face (from corner ``k`` to corner ``k + 1``), the other face sharing it, or −1.

    Edges shared by more than two faces (non-manifold) pair up arbitrarily.
    """
    n_faces = faces.shape[0]
    a = faces
    b = faces[:, [1, 2, 0]]
    lo, hi = torch.minimum(a, b).reshape(-1), torch.maximum(a, b).reshape(-1)
    n_vert = int(faces.max()) + 1 if n_faces else 1
    key = lo * n_vert + hi
    order = torch.argsort(key, stable=True)
    sorted_key = key[order]
    out = torch.full((n_faces * 3,), -1, dtype=torch.long, device=faces.device)
    same = sorted_key[1:] == sorted_key[:-1]
    first, second = order[:-1][same], order[1:][same]
    out[first] = second // 3
    out[second] = first // 3
    return out.reshape(n_faces, 3)


def project(
    points: Float[Tensor, "V 3"], c2w: Float[Tensor, "C 4 4"], K: Float[Tensor, "C 3 3"]
) -> tuple[Float[Tensor, "C V 2"], Float[Tensor, "C V"]]:
    """Pixel coordinates and z-depths of one set of world points in every camera
    (:func:`scene3d.core.cameras.project_pinhole`, the inverse of ``pinhole_rays``)."""
    return project_pinhole(points[None].expand(c2w.shape[0], -1, -1), c2w, K)


def front_facing(
    vertices: Float[Tensor, "V 3"], faces: Int[Tensor, "F 3"], eyes: Float[Tensor, "C 3"]
) -> Bool[Tensor, "C F"]:
    """Whether each (counter-clockwise) face turns its front to each camera centre."""
    tri = vertices[faces]
    n = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    centroid = tri.mean(1)
    return torch.einsum("fi,cfi->cf", n, eyes[:, None] - centroid[None]) > 0


@dataclass(frozen=True)
class MeshEdges:
    """The unique edges of a triangle mesh and the (one or two) faces on each side."""

    vertices: Int[Tensor, "E 2"]
    """End points of each edge."""
    faces: Int[Tensor, "E 2"]
    """The faces sharing each edge; the second is −1 on a boundary edge."""


def mesh_edges(faces: Int[Tensor, "F 3"]) -> MeshEdges:
    """Unique edges with their faces (edges of more than two faces pair up arbitrarily)."""
    adjacency = face_adjacency(faces)
    own = torch.arange(faces.shape[0], device=faces.device)[:, None].expand(-1, 3)
    ends = torch.stack([faces, faces[:, [1, 2, 0]]], dim=-1)  # (F, 3, 2)
    # keep each shared edge once (from its lower-index face) and every boundary edge
    keep = (adjacency < 0) | (own < adjacency)
    return MeshEdges(ends[keep], torch.stack([own[keep], adjacency[keep]], dim=-1))


def antialias(
    colors: Float[Tensor, "C H W K"],
    triangle_ids: Int[Tensor, "C H W"],
    depth: Float[Tensor, "C H W"],
    screen: Float[Tensor, "C V 2"],
    edges: MeshEdges,
    facing: Bool[Tensor, "C F"],
    *,
    chunk: int = 1024,
) -> Float[Tensor, "C H W K"]:
    """Blend colours across silhouette edges so coverage is differentiable in the vertex positions.

    See the module docstring (step 4) for the rule. For each discontinuous pixel pair, the silhouette edges of the
    camera (edges whose two faces look different ways, and boundary edges) are tested for a crossing of the segment
    between the two pixel centres; where several cross, the one nearest the back pixel is the object's outline.

    Args:
        colors: shaded pixels, background already composited where rays miss.
        triangle_ids: triangle per pixel, −1 for a miss.
        depth: distance of each hit (any monotone depth; used only to find the front pixel of a pair).
        screen: pixel coordinates of every vertex in every camera (:func:`project`), differentiable.
        edges: :func:`mesh_edges` of the mesh's faces.
        facing: :func:`front_facing` per camera.
        chunk: pixel pairs tested against all silhouette edges at once.
    """
    c, h, w, _ = colors.shape
    delta = torch.zeros_like(colors).reshape(-1, colors.shape[-1])
    flat = colors.reshape(-1, colors.shape[-1])
    with torch.no_grad():
        second = edges.faces[:, 1]
        own = facing[:, edges.faces[:, 0]]  # (C, E)
        other = facing[:, second.clamp_min(0)]
        silhouette = (second[None] < 0) | (own != other)
    for axis in (2, 1):  # horizontal pairs (along W), then vertical pairs (along H)
        _pairs(flat, delta, triangle_ids, depth, screen, edges, silhouette, axis, (c, h, w), chunk)
    return (flat + delta).reshape(colors.shape)


def _pairs(
    flat: Tensor,
    delta: Tensor,
    triangle_ids: Tensor,
    depth: Tensor,
    screen: Tensor,
    edges: MeshEdges,
    silhouette: Tensor,
    axis: int,
    shape: tuple[int, int, int],
    chunk: int,
) -> None:
    c, h, w = shape
    across_dim, along_dim = (1, 0) if axis == 2 else (0, 1)
    with torch.no_grad():
        cam, row, col = torch.meshgrid(torch.arange(c), torch.arange(h), torch.arange(w), indexing="ij")
        index = (cam * h + row) * w + col
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis] = slice(0, -1)
        hi[axis] = slice(1, None)
        tp, tq = triangle_ids[tuple(lo)].reshape(-1), triangle_ids[tuple(hi)].reshape(-1)
        dp, dq = depth[tuple(lo)].reshape(-1), depth[tuple(hi)].reshape(-1)
        ip, iq = index[tuple(lo)].reshape(-1), index[tuple(hi)].reshape(-1)
        cams = cam[tuple(lo)].reshape(-1)
        rows, cols = row[tuple(lo)].reshape(-1), col[tuple(lo)].reshape(-1)
        candidate = (tp != tq) & ((tp >= 0) | (tq >= 0))
        sel = candidate.nonzero()[:, 0]
        if sel.numel() == 0:
            return
        front_p = ((tq < 0) | ((tp >= 0) & (dp <= dq)))[sel]
        cams = cams[sel]
        i_front = torch.where(front_p, ip[sel], iq[sel])
        i_back = torch.where(front_p, iq[sel], ip[sel])
        # the line the pixel pair lies on, and the lower-index centre's coordinate along it
        line = (rows if axis == 2 else cols)[sel].to(screen.dtype) + 0.5
        along_p = (cols if axis == 2 else rows)[sel].to(screen.dtype) + 0.5
        chosen = torch.full_like(sel, -1)
        for camera in range(c):
            in_cam = (cams == camera).nonzero()[:, 0]
            sil = silhouette[camera].nonzero()[:, 0]
            if in_cam.numel() == 0 or sil.numel() == 0:
                continue
            a = screen[camera, edges.vertices[sil, 0]]
            b = screen[camera, edges.vertices[sil, 1]]
            steep = (b[:, across_dim] - a[:, across_dim]).abs() >= (b[:, along_dim] - a[:, along_dim]).abs()
            for start in range(0, in_cam.numel(), chunk):
                pick = in_cam[start : start + chunk]
                y0, x0 = line[pick, None], along_p[pick, None]
                da, db = a[None, :, across_dim] - y0, b[None, :, across_dim] - y0
                x = a[None, :, along_dim] + (y0 - a[None, :, across_dim]) / (b[None, :, across_dim] - a[None, :, across_dim]) * (
                    b[None, :, along_dim] - a[None, :, along_dim]
                )
                ok = (da * db < 0) & steep[None] & (x >= x0) & (x <= x0 + 1.0)
                # distance of each crossing from the front pixel's centre; the nearest to the back pixel wins
                d = torch.where(front_p[pick, None], x - x0, x0 + 1.0 - x)
                score = torch.where(ok, d, torch.full_like(d, -1.0))
                best = score.argmax(dim=1)
                has = ok.any(dim=1)
                chosen[pick] = torch.where(has, sil[best], torch.full_like(best, -1))
        keep = (chosen >= 0).nonzero()[:, 0]
        if keep.numel() == 0:
            return
        cams, front_p, chosen = cams[keep], front_p[keep], chosen[keep]
        i_front, i_back, line, along_p = i_front[keep], i_back[keep], line[keep], along_p[keep]
        ka, kb = edges.vertices[chosen, 0], edges.vertices[chosen, 1]
    # the crossing, differentiable in the edge's projected end points
    a, b = screen[cams, ka], screen[cams, kb]
    x = a[:, along_dim] + (line - a[:, across_dim]) / (b[:, across_dim] - a[:, across_dim]) * (
        b[:, along_dim] - a[:, along_dim]
    )
    offset = x - along_p  # in [0, 1] from the lower-index pixel's centre
    d = torch.where(front_p, offset, 1.0 - offset)  # from the front pixel's centre
    c_front, c_back = flat[i_front], flat[i_back]
    towards_back = (0.5 - d).clamp_min(0.0)[:, None] * (c_back - c_front)
    towards_front = (d - 0.5).clamp_min(0.0)[:, None] * (c_front - c_back)
    delta.index_put_((i_front,), towards_back, accumulate=True)
    delta.index_put_((i_back,), towards_front, accumulate=True)


@dataclass
class MeshFragments:
    """Per-pixel results of rendering a mesh from pinhole cameras (:func:`rasterize`)."""

    triangle_ids: Int[Tensor, "C H W"]
    """Hit triangle, −1 where the ray misses."""
    barycentrics: Float[Tensor, "C H W 3"]
    """Recomputed in torch (differentiable); zero on misses."""
    depth: Float[Tensor, "C H W"]
    """Distance along the (unit) ray, differentiable; zero on misses."""
    mask: Bool[Tensor, "C H W"]
    """Where a ray hits."""
    screen: Float[Tensor, "C V 2"]
    """Projected vertices (for :func:`antialias`)."""
    facing: Bool[Tensor, "C F"]
    """Which faces turn to each camera."""

    def interpolate(self, attributes: Float[Tensor, "V A"], faces: Int[Tensor, "F 3"]) -> Float[Tensor, "C H W A"]:
        """Per-vertex attributes at every pixel (zero on misses)."""
        return interpolate(attributes, faces, self.triangle_ids, self.barycentrics)


def fragments_from_hits(
    vertices: Float[Tensor, "V 3"],
    faces: Int[Tensor, "F 3"],
    origins: Float[Tensor, "C H W 3"],
    directions: Float[Tensor, "C H W 3"],
    triangle_ids: Int[Tensor, "C H W"],
    c2w: Float[Tensor, "C 4 4"],
    K: Float[Tensor, "C 3 3"],
) -> MeshFragments:
    """Differentiable per-pixel fragments from a raycaster's triangle ids (steps 2–3 of the module docstring)."""
    hit = triangle_ids >= 0
    bary = torch.zeros(*triangle_ids.shape, 3, dtype=vertices.dtype, device=vertices.device)
    depth = torch.zeros(triangle_ids.shape, dtype=vertices.dtype, device=vertices.device)
    if bool(hit.any()):
        b, t = ray_triangle_hits(origins[hit], directions[hit], vertices, faces, triangle_ids[hit])
        bary = bary.index_put((hit,), b)
        depth = depth.index_put((hit,), t)
    screen, _ = project(vertices, c2w, K)
    facing = front_facing(vertices.detach(), faces, c2w[:, :3, 3])
    return MeshFragments(triangle_ids, bary, depth, hit, screen, facing)

"""Mesh ray casting: first hits of rays on a triangle mesh, camera casts and point-to-camera visibility.

:class:`MeshRaycaster` holds a triangle mesh (optionally several parts, e.g. one per object) and answers, for any
batch of rays, the first hit of each as torch tensors (:class:`MeshHits`): the distance along the unit ray, the
triangle, the barycentric weights of its three corners, its geometric normal and a hit mask. On top of that:

* :meth:`MeshRaycaster.cast_pinhole` / :meth:`~MeshRaycaster.cast_equirect` / :meth:`~MeshRaycaster.cast_cameras`
  cast every pixel-centre ray of pinhole or equirectangular cameras (the rays of :mod:`scene3d.core.cameras`, OpenGL
  axes, so they match nerfstudio's ``Cameras.generate_rays`` for the same ``transforms.json``);
* :meth:`MeshRaycaster.occluded` tests segments for any hit (shadow rays);
* :meth:`MeshRaycaster.visibility` says which points each camera sees (in its frame, facing it, unoccluded);
* :func:`interpolate` reads per-corner attributes (UVs, colours, normals) at the hits.

Two backends give the same answers (tested against each other):

* ``"open3d"``: open3d's ``RaycastingScene`` (Intel Embree, a BVH, multi-threaded on the CPU). open3d is imported
  on first use, never at ``import scene3d``. Its ``RaycastingScene`` runs on CPU (and SYCL) devices only.
* ``"torch"``: Möller–Trumbore intersection of every ray with every triangle, in chunks, on the rays' device. It
  is the CUDA path (a room mesh of a few thousand triangles casts a 512² image in milliseconds on a GPU) and
  needs nothing beyond torch; on a CPU it is O(rays × triangles) and only meant for small meshes and tests.

``"auto"`` picks ``"torch"`` for rays on a CUDA device and ``"open3d"`` otherwise. Casts are not differentiable:
a method that needs gradients with respect to the vertices recomputes the barycentrics in torch from
``hits.triangle`` and the rays.

Conventions: the barycentrics ``(w0, w1, w2)`` weight the triangle's corners ``faces[t, 0..2]``, so the hit point
is ``w0 v0 + w1 v1 + w2 v2`` (Embree's ``(u, v)`` are ``(w1, w2)``). Normals are the unit geometric normal
``(v1 − v0) × (v2 − v0)`` of the hit triangle as wound (counter-clockwise seen from the side it points to), not
turned towards the ray: ``hits.front_facing`` says on which side the ray arrived. Both sides of a triangle are hit.

Example:
    >>> import torch
    >>> from scene3d.core.cameras import intrinsics_from_fov, look_at
    >>> vertices = torch.tensor([[-1.0, -1.0, 0.0], [1.0, -1.0, 0.0], [0.0, 1.0, 0.0]])
    >>> raycaster = MeshRaycaster(vertices, torch.tensor([[0, 1, 2]]))
    >>> c2w = look_at(torch.tensor([0.0, 0.0, 2.0]), torch.zeros(3), up=(0.0, 1.0, 0.0))
    >>> hits = raycaster.cast_pinhole(c2w, intrinsics_from_fov(60.0, 8, 8), 8, 8)
    >>> tuple(hits.mask.shape), round(float(hits.distance[4, 4]), 3)
    ((8, 8), 2.0)
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from scene3d.core.cameras import equirect_rays, pinhole_rays, project_pinhole

logger = logging.getLogger(__name__)

MeshBackend = Literal["auto", "open3d", "torch"]
"""``"auto"``: torch on CUDA rays, open3d elsewhere; ``"open3d"``: Embree on the CPU; ``"torch"``: brute force on the
rays' device."""

_BACKENDS = ("auto", "open3d", "torch")


@dataclass(frozen=True)
class MeshHits:
    """First hits of a batch of rays (any leading shape ``*batch``); misses hold the fill values given per field."""

    origins: Float[Tensor, "*batch 3"]
    """Ray origins."""
    directions: Float[Tensor, "*batch 3"]
    """Unit ray directions."""
    distance: Float[Tensor, "*batch"]
    """Distance from the origin along the unit direction to the hit; ``inf`` where the ray missed."""
    triangle: Int[Tensor, "*batch"]
    """Index of the hit triangle into the raycaster's faces (int64); ``-1`` where the ray missed."""
    barycentrics: Float[Tensor, "*batch 3"]
    """Weights of the hit triangle's three corners (sum 1); zeros where the ray missed."""
    normals: Float[Tensor, "*batch 3"]
    """Unit geometric normal of the hit triangle as wound; zeros where the ray missed."""
    mask: Bool[Tensor, "*batch"]
    """True where the ray hit the mesh."""

    @property
    def points(self) -> Float[Tensor, "*batch 3"]:
        """World positions of the hits; the ray origin where the ray missed."""
        t = torch.where(self.mask, self.distance, torch.zeros_like(self.distance))
        return self.origins + t[..., None] * self.directions

    @property
    def front_facing(self) -> Bool[Tensor, "*batch"]:
        """True where the ray hit the side of the triangle its normal points to (False where it missed)."""
        return self.mask & ((self.normals * self.directions).sum(-1) < 0)

    def z_depth(self, c2w: Float[Tensor, "*batch_c 4 4"]) -> Float[Tensor, "*batch"]:
        """z-depth (distance along each camera's viewing axis −Z) of pinhole hits; 0 where the ray missed.

        ``c2w`` broadcasts against the hits' leading dimensions without the last two (e.g. ``(C, 4, 4)`` for hits
        of shape ``(C, H, W)``).
        """
        forward = -c2w[..., :3, 2]
        while forward.dim() < self.directions.dim():
            forward = forward[..., None, :]
        z = self.distance * (self.directions * forward).sum(-1)
        return torch.where(self.mask, z, torch.zeros_like(z))

    def reshape(self, *shape: int) -> MeshHits:
        """The same hits with another leading shape."""
        return MeshHits(
            origins=self.origins.reshape(*shape, 3),
            directions=self.directions.reshape(*shape, 3),
            distance=self.distance.reshape(*shape),
            triangle=self.triangle.reshape(*shape),
            barycentrics=self.barycentrics.reshape(*shape, 3),
            normals=self.normals.reshape(*shape, 3),
            mask=self.mask.reshape(*shape),
        )


@runtime_checkable
class CameraLike(Protocol):
    """What :meth:`MeshRaycaster.cast_cameras` reads of a camera batch (``scene3d.core.cameras.CameraBatch``)."""

    c2w: Tensor
    K: Tensor | None
    width: int
    height: int
    model: str


def face_normals(vertices: Float[Tensor, "V 3"], faces: Int[Tensor, "F 3"]) -> Float[Tensor, "F 3"]:
    """Unit geometric normals ``(v1 − v0) × (v2 − v0)`` of the faces as wound; zero vectors for degenerate faces."""
    tri = vertices[faces]
    n = torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1)
    length = n.norm(dim=-1, keepdim=True)
    return torch.where(length > 0, n / length.clamp_min(1e-30), torch.zeros_like(n))


def _check_mesh(vertices: Tensor, faces: Tensor) -> None:
    if vertices.dim() != 2 or vertices.shape[-1] != 3:
        raise ValueError(f"vertices must have shape (V, 3), got {tuple(vertices.shape)}")
    if faces.dim() != 2 or faces.shape[-1] != 3:
        raise ValueError(f"faces must have shape (F, 3), got {tuple(faces.shape)}")
    if faces.dtype.is_floating_point or faces.dtype == torch.bool:
        raise ValueError(f"faces must be an integer tensor, got {faces.dtype}")
    if faces.shape[0] == 0:
        raise ValueError("the mesh has no faces: nothing to cast rays against")
    if int(faces.min()) < 0 or int(faces.max()) >= vertices.shape[0]:
        raise ValueError(
            f"faces index vertices out of range: indices span [{int(faces.min())}, {int(faces.max())}], "
            f"{vertices.shape[0]} vertices"
        )
    if not bool(torch.isfinite(vertices).all()):
        raise ValueError("vertices hold non-finite coordinates")


class MeshRaycaster:
    """Ray casting against a fixed triangle mesh (module docstring).

    Args:
        vertices: vertex positions; their device is where the torch backend runs and where hits are returned.
        faces: vertex indices of each triangle.
        backend: ``"auto"`` | ``"open3d"`` | ``"torch"`` (module docstring).
        part_sizes: face counts of consecutive parts (objects) of ``faces``; each part is its own geometry in
            open3d's scene (the same hits, but a BVH per object, as the scene generator casts its scenes). Use
            :meth:`part_of` to map triangles to parts. Default: one part.
        max_pairs: the torch backend tests at most this many ray-triangle pairs at once (memory ≈ 60 bytes each).

    Raises:
        ValueError: for malformed or empty meshes, an unknown backend, or part sizes that do not add up.
    """

    def __init__(
        self,
        vertices: Float[Tensor, "V 3"],
        faces: Int[Tensor, "F 3"],
        *,
        backend: MeshBackend = "auto",
        part_sizes: Sequence[int] | None = None,
        max_pairs: int = 1 << 22,
    ) -> None:
        _check_mesh(vertices, faces)
        if backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
        sizes = [int(faces.shape[0])] if part_sizes is None else [int(s) for s in part_sizes]
        if any(s <= 0 for s in sizes) or sum(sizes) != faces.shape[0]:
            raise ValueError(f"part_sizes must be positive and add up to {faces.shape[0]} faces, got {sizes}")
        self.vertices = vertices.float()
        self.faces = faces.long().to(vertices.device)
        self.device = vertices.device
        self.backend: MeshBackend = backend
        self.part_offsets = torch.tensor([0, *torch.tensor(sizes).cumsum(0).tolist()], dtype=torch.long)
        self.max_pairs = int(max_pairs)
        self.face_normals = face_normals(self.vertices, self.faces)
        self._o3d: Any = None  # (open3d module, RaycastingScene), built on first open3d cast
        tri = self.vertices[self.faces]
        self._v0, self._e1, self._e2 = tri[:, 0], tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
        lo, hi = self.vertices.min(0).values, self.vertices.max(0).values
        self.extent = float((hi - lo).norm())
        """Diagonal of the mesh's bounding box (the scale of the visibility tolerance)."""

    @classmethod
    def from_parts(
        cls,
        parts: Sequence[tuple[Tensor, Tensor]],
        *,
        backend: MeshBackend = "auto",
        max_pairs: int = 1 << 22,
    ) -> MeshRaycaster:
        """One raycaster over several meshes ``(vertices (Vp, 3), faces (Fp, 3))``, concatenated in order (faces
        re-indexed); part ``p`` of :meth:`part_of` is ``parts[p]``."""
        if not parts:
            raise ValueError("parts is empty: nothing to cast rays against")
        verts, faces, offset = [], [], 0
        for v, f in parts:
            verts.append(v.float())
            faces.append(f.long().to(v.device) + offset)
            offset += v.shape[0]
        return cls(
            torch.cat(verts), torch.cat(faces), backend=backend, part_sizes=[f.shape[0] for f in faces],
            max_pairs=max_pairs,
        )  # fmt: skip

    # ------------------------------------------------------------------ backends
    def _use_torch(self, device: torch.device) -> bool:
        if self.backend == "torch":
            return True
        if self.backend == "open3d":
            return False
        return device.type == "cuda"

    def _open3d_scene(self) -> tuple[Any, Any]:
        if self._o3d is None:
            import open3d as o3d

            scene = o3d.t.geometry.RaycastingScene()
            v = self.vertices.detach().cpu().numpy()
            f = self.faces.cpu().numpy().astype("uint32")
            offsets = self.part_offsets.tolist()
            for part, (start, stop) in enumerate(zip(offsets[:-1], offsets[1:])):
                used = f[start:stop]
                gid = scene.add_triangles(o3d.core.Tensor(v), o3d.core.Tensor(used))
                if gid != part:
                    raise RuntimeError(f"open3d gave geometry id {gid} to part {part}")
            self._o3d = (o3d, scene)
        return self._o3d

    def _cast_open3d(
        self, origins: Float[Tensor, "R 3"], directions: Float[Tensor, "R 3"]
    ) -> tuple[Float[Tensor, " R"], Int[Tensor, " R"], Float[Tensor, "R 2"]]:
        o3d, scene = self._open3d_scene()
        rays = torch.cat([origins, directions], dim=-1).detach().float().cpu().contiguous().numpy()
        out = scene.cast_rays(o3d.core.Tensor(rays))
        gid = torch.from_numpy(out["geometry_ids"].numpy().astype("int64"))
        hit = gid != int(scene.INVALID_ID)
        prim = torch.from_numpy(out["primitive_ids"].numpy().astype("int64"))
        triangle = torch.where(hit, self.part_offsets[gid.clamp(0, len(self.part_offsets) - 2)] + prim, -1)
        t = torch.from_numpy(out["t_hit"].numpy())
        uv = torch.from_numpy(out["primitive_uvs"].numpy())
        return t.to(origins.device), triangle.to(origins.device), uv.to(origins.device)

    def _cast_torch(
        self, origins: Float[Tensor, "R 3"], directions: Float[Tensor, "R 3"], *, t_far: float = math.inf
    ) -> tuple[Float[Tensor, " R"], Int[Tensor, " R"], Float[Tensor, "R 2"]]:
        """Möller–Trumbore (J. Graphics Tools 1997) against every triangle, both sides, in ray chunks."""
        device = origins.device
        v0, e1, e2 = (x.to(device) for x in (self._v0, self._e1, self._e2))
        n_rays, n_faces = origins.shape[0], v0.shape[0]
        t_out = torch.full((n_rays,), math.inf, device=device)
        tri_out = torch.full((n_rays,), -1, dtype=torch.long, device=device)
        uv_out = torch.zeros(n_rays, 2, device=device)
        chunk = max(1, self.max_pairs // n_faces)
        for start in range(0, n_rays, chunk):
            o = origins[start : start + chunk, None, :]
            d = directions[start : start + chunk, None, :]
            p = torch.linalg.cross(d.expand(-1, n_faces, -1), e2[None].expand(o.shape[0], -1, -1), dim=-1)
            det = (e1[None] * p).sum(-1)
            inv = 1.0 / torch.where(det.abs() > 1e-12, det, torch.ones_like(det))
            s = o - v0[None]
            u = (s * p).sum(-1) * inv
            q = torch.linalg.cross(s, e1[None].expand_as(s), dim=-1)
            v = (d * q).sum(-1) * inv
            t = (e2[None] * q).sum(-1) * inv
            ok = (det.abs() > 1e-12) & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0) & (t < t_far)
            t = torch.where(ok, t, torch.full_like(t, math.inf))
            t_min, index = t.min(dim=-1)
            found = torch.isfinite(t_min)
            rows = torch.arange(t.shape[0], device=device)
            t_out[start : start + chunk] = t_min
            tri_out[start : start + chunk] = torch.where(found, index, torch.full_like(index, -1))
            uv_out[start : start + chunk] = torch.stack([u[rows, index], v[rows, index]], -1) * found[:, None]
        return t_out, tri_out, uv_out

    # ------------------------------------------------------------------ rays
    def cast(self, origins: Float[Tensor, "*batch 3"], directions: Float[Tensor, "*batch 3"]) -> MeshHits:
        """First hit of each ray. ``directions`` need not be unit (they are normalised; distances are metric).

        Raises:
            ValueError: if the shapes differ or a direction is zero or not finite.
        """
        if origins.shape != directions.shape or origins.shape[-1:] != (3,):
            raise ValueError(
                f"origins and directions must have the same shape (..., 3), got {tuple(origins.shape)} and "
                f"{tuple(directions.shape)}"
            )
        batch = origins.shape[:-1]
        o = origins.reshape(-1, 3).float()
        length = directions.reshape(-1, 3).float().norm(dim=-1, keepdim=True)
        if o.shape[0] and not bool(((length > 0) & torch.isfinite(length)).all()):
            raise ValueError("directions must be finite and non-zero")
        d = directions.reshape(-1, 3).float() / length
        if self._use_torch(o.device):
            t, triangle, uv = self._cast_torch(o, d)
        else:
            t, triangle, uv = self._cast_open3d(o, d)
        hit = triangle >= 0
        bary = torch.stack([1.0 - uv[:, 0] - uv[:, 1], uv[:, 0], uv[:, 1]], dim=-1)
        bary = torch.where(hit[:, None], bary, torch.zeros_like(bary))
        normals = self.face_normals.to(o.device)[triangle.clamp_min(0)]
        normals = torch.where(hit[:, None], normals, torch.zeros_like(normals))
        return MeshHits(
            origins=o.reshape(*batch, 3),
            directions=d.reshape(*batch, 3),
            distance=torch.where(hit, t, torch.full_like(t, math.inf)).reshape(batch),
            triangle=triangle.reshape(batch),
            barycentrics=bary.reshape(*batch, 3),
            normals=normals.reshape(*batch, 3),
            mask=hit.reshape(batch),
        )

    def occluded(
        self,
        origins: Float[Tensor, "*batch 3"],
        directions: Float[Tensor, "*batch 3"],
        *,
        t_near: float = 0.0,
        t_far: float = math.inf,
    ) -> Bool[Tensor, "*batch"]:
        """Whether each ray hits anything with ``t_near < t < t_far``, ``t`` in units of the (not normalised)
        direction's length, as open3d's ``test_occlusions``: pass segment vectors with ``t_far=1`` to test segments.
        """
        if origins.shape != directions.shape or origins.shape[-1:] != (3,):
            raise ValueError(
                f"origins and directions must have the same shape (..., 3), got {tuple(origins.shape)} and "
                f"{tuple(directions.shape)}"
            )
        batch = origins.shape[:-1]
        o, d = origins.reshape(-1, 3).float(), directions.reshape(-1, 3).float()
        if o.shape[0] == 0:
            return torch.zeros(batch, dtype=torch.bool, device=o.device)
        if self._use_torch(o.device):
            start = o + t_near * d
            t, _, _ = self._cast_torch(start, d, t_far=t_far - t_near)
            return torch.isfinite(t).reshape(batch)
        o3d, scene = self._open3d_scene()
        rays = torch.cat([o, d], dim=-1).detach().cpu().contiguous().numpy()
        out = scene.test_occlusions(o3d.core.Tensor(rays), tnear=t_near, tfar=t_far)
        return torch.from_numpy(out.numpy().astype(bool)).reshape(batch).to(o.device)

    def part_of(self, triangle: Int[Tensor, "*batch"]) -> Int[Tensor, "*batch"]:
        """The part (``part_sizes`` order) each triangle belongs to; ``-1`` for ``-1``."""
        offsets = self.part_offsets.to(triangle.device)
        part = torch.searchsorted(offsets[1:], triangle, right=True)
        return torch.where(triangle >= 0, part, torch.full_like(part, -1))

    # ------------------------------------------------------------------ cameras
    def cast_pinhole(
        self, c2w: Float[Tensor, "*cams 4 4"], K: Float[Tensor, "*kcams 3 3"], width: int, height: int
    ) -> MeshHits:
        """Hits of every pixel-centre ray of pinhole cameras (OpenGL ``c2w``), shape ``(*cams, H, W)``.

        ``K`` broadcasts against ``c2w`` (one ``(3, 3)`` for all cameras). z-depth: ``hits.z_depth(c2w)``.
        """
        _check_size(width, height)
        Ks = K.float().to(c2w.device).expand(*c2w.shape[:-2], 3, 3)
        origins, directions = pinhole_rays(c2w.float(), Ks, width, height)
        return self.cast(origins, directions)

    def cast_equirect(self, c2w: Float[Tensor, "*cams 4 4"], width: int, height: int) -> MeshHits:
        """Hits of every pixel-centre ray of equirectangular panoramas centred at ``c2w``'s position, shape
        ``(*cams, H, W)`` (directions: :func:`scene3d.core.cameras.equirect_directions` rotated by ``c2w``)."""
        _check_size(width, height)
        origins, directions = equirect_rays(c2w.float(), width, height)
        return self.cast(origins, directions)

    def cast_cameras(self, cameras: CameraLike) -> MeshHits:
        """Hits of every pixel of a camera batch (``c2w`` ``(B, 4, 4)``, ``K``, ``width``, ``height``, ``model``
        ``"pinhole"`` or ``"equirectangular"``), shape ``(B, H, W)``."""
        if cameras.model == "equirectangular":
            return self.cast_equirect(cameras.c2w, cameras.width, cameras.height)
        if cameras.model != "pinhole":
            raise ValueError(f"camera model must be 'pinhole' or 'equirectangular', got {cameras.model!r}")
        if cameras.K is None:
            raise ValueError("pinhole cameras need intrinsics K, got None")
        return self.cast_pinhole(cameras.c2w, cameras.K, cameras.width, cameras.height)

    # ------------------------------------------------------------------ visibility
    def visibility(
        self,
        points: Float[Tensor, "N 3"],
        centres: Float[Tensor, "C 3"],
        *,
        normals: Float[Tensor, "N 3"] | None = None,
        min_cos: float = 0.0,
        tolerance: float | None = None,
    ) -> Bool[Tensor, "C N"]:
        """Which points each camera centre sees: nothing of the mesh lies on the segment between them, and, when
        ``normals`` are given, the point's surface faces the centre (``n · (c − p) / |c − p| > min_cos``).

        The segment is tested from the centre up to ``tolerance`` before the point (default ``1e-4`` of the mesh's
        bounding-box diagonal), so a point on the mesh does not occlude itself. Use :meth:`frustum` as well for
        pinhole cameras (the field of view).
        """
        if points.dim() != 2 or points.shape[-1] != 3:
            raise ValueError(f"points must have shape (N, 3), got {tuple(points.shape)}")
        if centres.dim() != 2 or centres.shape[-1] != 3:
            raise ValueError(f"centres must have shape (C, 3), got {tuple(centres.shape)}")
        if normals is not None and normals.shape != points.shape:
            raise ValueError(f"normals must have the points' shape {tuple(points.shape)}, got {tuple(normals.shape)}")
        tol = 1e-4 * self.extent if tolerance is None else float(tolerance)
        span = points[None, :, :].float() - centres[:, None, :].float()  # (C, N, 3)
        length = span.norm(dim=-1, keepdim=True)
        # shorten every segment by tol; points closer than tol to the centre are trivially visible
        shortened = span * ((length - tol).clamp_min(0.0) / length.clamp_min(1e-12))
        seen = ~self.occluded(centres[:, None, :].float().expand_as(span), shortened, t_far=1.0)
        if normals is not None:
            cos = -(normals[None].float() * span).sum(-1) / length[..., 0].clamp_min(1e-12)
            seen &= cos > min_cos
        return seen

    @staticmethod
    def frustum(
        points: Float[Tensor, "N 3"], c2w: Float[Tensor, "C 4 4"], K: Float[Tensor, "*cams 3 3"], width: int, height: int
    ) -> Bool[Tensor, "C N"]:
        """Which points project in front of each pinhole camera and inside its image."""
        Ks = K.float().expand(c2w.shape[0], 3, 3)
        uv, z = project_pinhole(points.float()[None].expand(c2w.shape[0], -1, -1), c2w.float(), Ks)
        return (z > 0) & (uv[..., 0] >= 0) & (uv[..., 0] < width) & (uv[..., 1] >= 0) & (uv[..., 1] < height)


def interpolate(
    hits: MeshHits, corner_values: Float[Tensor, "F 3 D"], fill: float = 0.0
) -> Float[Tensor, "*batch D"]:
    """Per-corner attributes at the hits, ``Σ_k w_k a[t, k]`` (``fill`` where the ray missed).

    ``corner_values[t, k]`` is the attribute at corner ``k`` of triangle ``t`` (a per-vertex attribute ``a`` becomes
    ``a[faces]``; a seam-split one such as an atlas' UVs is per corner already). Not differentiable with respect to
    the vertex positions (the barycentrics come from the cast).
    """
    values = corner_values.to(hits.barycentrics.device)[hits.triangle.clamp_min(0)]  # (*batch, 3, D)
    out = (hits.barycentrics[..., None] * values).sum(-2)
    return torch.where(hits.mask[..., None], out, torch.full_like(out, fill))


def _check_size(width: int, height: int) -> None:
    if width <= 0 or height <= 0:
        raise ValueError(f"width and height must be positive, got {width}x{height}")

"""Camera conventions: pinhole and equirectangular cameras, pose helpers and ray generation.

scene3d uses nerfstudio's conventions everywhere (``transforms.json``): a camera-to-world 4×4 matrix in the
OpenGL convention (+X right, +Y up, the camera looks along −Z), world up +Z, pixel centres at ``+0.5``. Depth
images hold z-depth (distance along the camera's viewing axis), not distance along the ray.

Example:
    >>> import torch
    >>> c2w = look_at(torch.tensor([0.0, -3.0, 1.0]), torch.zeros(3))
    >>> K = intrinsics_from_fov(50.0, 64, 48)
    >>> origins, directions = pinhole_rays(c2w, K, 64, 48)
    >>> tuple(directions.shape)
    (48, 64, 3)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

OPENGL_TO_OPENCV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))
"""Right-multiply a camera-to-world matrix by this to switch between the OpenGL and OpenCV camera axes."""

Z_UP_TO_Y_UP = torch.tensor([[1.0, 0, 0, 0], [0, 0, 1, 0], [0, -1, 0, 0], [0, 0, 0, 1]], dtype=torch.float64)
"""World +Z up (scene3d, nerfstudio) to +Y up (glTF): ``(x, y, z) → (x, z, −y)``, a −90° turn about X. Its
transpose turns a glTF file's frame back to scene3d's."""


def look_at(
    eye: Float[Tensor, "*batch 3"],
    target: Float[Tensor, "*batch 3"],
    up: tuple[float, float, float] = (0.0, 0.0, 1.0),
) -> Float[Tensor, "*batch 4 4"]:
    """Camera-to-world matrices (OpenGL axes) of cameras at ``eye`` looking at ``target``.

    Raises:
        ValueError: if a camera looks straight along ``up`` (the roll is undefined) or ``eye == target``.
    """
    eye, target = torch.broadcast_tensors(eye, target)
    forward = target - eye
    dist = forward.norm(dim=-1, keepdim=True)
    if bool((dist < 1e-9).any()):
        raise ValueError("look_at needs eye != target")
    forward = forward / dist
    up_t = torch.tensor(up, dtype=eye.dtype, device=eye.device).expand_as(forward)
    right = torch.linalg.cross(forward, up_t, dim=-1)
    right_norm = right.norm(dim=-1, keepdim=True)
    if bool((right_norm < 1e-6).any()):
        raise ValueError("look_at: a camera looks straight along the up vector; its roll is undefined")
    right = right / right_norm
    true_up = torch.linalg.cross(right, forward, dim=-1)
    c2w = torch.zeros(*eye.shape[:-1], 4, 4, dtype=eye.dtype, device=eye.device)
    c2w[..., :3, 0] = right
    c2w[..., :3, 1] = true_up
    c2w[..., :3, 2] = -forward
    c2w[..., :3, 3] = eye
    c2w[..., 3, 3] = 1.0
    return c2w


def intrinsics_from_fov(fov_y_deg: float, width: int, height: int) -> Float[Tensor, "3 3"]:
    """Pinhole intrinsics ``K`` for a vertical field of view, principal point at the image centre."""
    if not 0.0 < fov_y_deg < 180.0:
        raise ValueError(f"fov_y_deg must be in (0, 180), got {fov_y_deg}")
    if width <= 0 or height <= 0:
        raise ValueError(f"width and height must be positive, got {width}x{height}")
    focal = 0.5 * height / math.tan(math.radians(fov_y_deg) / 2.0)
    return torch.tensor([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])


def camera_directions(
    K: Float[Tensor, "*batch 3 3"], width: int, height: int, pixel_offset: float = 0.5
) -> Float[Tensor, "*batch H W 3"]:
    """Un-normalised ray directions in camera space (OpenGL axes, z = −1) through each pixel centre."""
    device, dtype = K.device, K.dtype
    v, u = torch.meshgrid(
        torch.arange(height, device=device, dtype=dtype) + pixel_offset,
        torch.arange(width, device=device, dtype=dtype) + pixel_offset,
        indexing="ij",
    )
    fx = K[..., 0, 0, None, None]
    fy = K[..., 1, 1, None, None]
    cx = K[..., 0, 2, None, None]
    cy = K[..., 1, 2, None, None]
    x = (u - cx) / fx
    y = -(v - cy) / fy
    z = -torch.ones_like(x)
    return torch.stack(torch.broadcast_tensors(x, y, z), dim=-1)


def pinhole_rays(
    c2w: Float[Tensor, "*batch 4 4"], K: Float[Tensor, "*batch 3 3"], width: int, height: int
) -> tuple[Float[Tensor, "*batch H W 3"], Float[Tensor, "*batch H W 3"]]:
    """World-space ray origins and unit directions for every pixel of pinhole cameras.

    The z-depth of a point at distance ``t`` along a ray is ``t / |d_cam|`` where ``d_cam`` is the un-normalised
    camera-space direction from :func:`camera_directions`.
    """
    d_cam = camera_directions(K, width, height)
    rot = c2w[..., None, None, :3, :3]
    d_world = (rot @ d_cam[..., None])[..., 0]
    directions = d_world / d_world.norm(dim=-1, keepdim=True)
    origins = c2w[..., None, None, :3, 3].expand_as(directions)
    return origins, directions


def equirect_directions(width: int, height: int, device: torch.device | str = "cpu") -> Float[Tensor, "H W 3"]:
    """Unit directions (camera space, OpenGL axes) of an equirectangular panorama's pixels.

    Longitude φ runs from −π at the left edge to +π at the right, 0 looking along −Z; latitude θ from +π/2 at the
    top row to −π/2 at the bottom. ``width`` should be ``2 · height``.
    """
    v, u = torch.meshgrid(
        torch.arange(height, device=device, dtype=torch.float32) + 0.5,
        torch.arange(width, device=device, dtype=torch.float32) + 0.5,
        indexing="ij",
    )
    lon = (u / width) * 2.0 * math.pi - math.pi
    lat = math.pi / 2.0 - (v / height) * math.pi
    x = torch.cos(lat) * torch.sin(lon)
    y = torch.sin(lat)
    z = -torch.cos(lat) * torch.cos(lon)
    return torch.stack([x, y, z], dim=-1)


def equirect_pixels(directions: Float[Tensor, "*batch 3"], width: int, height: int) -> Float[Tensor, "*batch 2"]:
    """Continuous pixel coordinates ``(u, v)`` (``u`` right, ``v`` down) of camera-space directions in an
    equirectangular panorama: the inverse of :func:`equirect_directions`.

    Pixel ``(row, col)`` covers ``[col, col + 1) × [row, row + 1)``, its centre at ``+0.5``, so
    ``equirect_pixels(equirect_directions(W, H), W, H)`` gives the pixel centres. Longitude
    ``φ = atan2(x, −z) ∈ (−π, π]``, ``u = (φ + π) / 2π · W``; latitude ``θ = asin(y)``, ``v = (π/2 − θ) / π · H``.
    Directions need not be unit; zero vectors map to the image centre.

    Example:
        >>> d = equirect_directions(8, 4)
        >>> torch.allclose(equirect_pixels(d, 8, 4)[0, 0], torch.tensor([0.5, 0.5]), atol=1e-5)
        True
    """
    d = directions / directions.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    lon = torch.atan2(d[..., 0], -d[..., 2])
    lat = torch.asin(d[..., 1].clamp(-1.0, 1.0))
    u = (lon + math.pi) / (2.0 * math.pi) * width
    v = (math.pi / 2.0 - lat) / math.pi * height
    return torch.stack([u, v], dim=-1)


def equirect_rays(
    c2w: Float[Tensor, "*batch 4 4"], width: int, height: int
) -> tuple[Float[Tensor, "*batch H W 3"], Float[Tensor, "*batch H W 3"]]:
    """World-space ray origins and unit directions of equirectangular panoramas centred at ``c2w``'s position:
    :func:`equirect_directions` rotated by ``c2w`` (the panorama's middle column looks along the camera's −Z)."""
    d_cam = equirect_directions(width, height, device=c2w.device).to(c2w.dtype)
    rot = c2w[..., None, None, :3, :3]
    directions = (rot @ d_cam[..., None])[..., 0]
    origins = c2w[..., None, None, :3, 3].expand_as(directions)
    return origins, directions


def project_pinhole(
    points: Float[Tensor, "*batch N 3"], c2w: Float[Tensor, "*batch 4 4"], K: Float[Tensor, "*batch 3 3"]
) -> tuple[Float[Tensor, "*batch N 2"], Float[Tensor, "*batch N"]]:
    """Pixel coordinates ``(u, v)`` (``u`` right, ``v`` down, pixel centres at ``+0.5``) of world points in pinhole
    cameras, and their z-depth (positive in front of the camera): the inverse of :func:`pinhole_rays`.

    Points at or behind the camera plane (``z ≤ 0``) get meaningless ``(u, v)``: test ``z > 0`` first.
    """
    rot = c2w[..., :3, :3]
    cam = (points - c2w[..., None, :3, 3]) @ rot  # world -> camera: R^T (p - t), row vectors
    z = -cam[..., 2]
    safe = torch.where(z.abs() < 1e-12, torch.full_like(z, 1e-12), z)
    u = K[..., None, 0, 0] * cam[..., 0] / safe + K[..., None, 0, 2]
    v = -K[..., None, 1, 1] * cam[..., 1] / safe + K[..., None, 1, 2]
    return torch.stack([u, v], dim=-1), z


def fibonacci_sphere(n: int, *, min_elevation_deg: float = -90.0, max_elevation_deg: float = 90.0) -> Tensor:
    """``n`` nearly uniform unit vectors on a sphere band (z up), as an ``(n, 3)`` tensor; deterministic."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z_lo = math.sin(math.radians(min_elevation_deg))
    z_hi = math.sin(math.radians(max_elevation_deg))
    z = z_lo + (z_hi - z_lo) * i / n
    golden = math.pi * (3.0 - math.sqrt(5.0))
    theta = golden * i
    r = torch.sqrt((1.0 - z * z).clamp_min(0.0))
    return torch.stack([r * torch.cos(theta), r * torch.sin(theta), z], dim=-1).float()


CameraModel = Literal["pinhole", "equirectangular"]
"""The projection of a :class:`CameraBatch`: ``pinhole`` (intrinsics ``K``) or ``equirectangular`` (a full panorama,
longitude across the width, latitude down the height; see :func:`equirect_directions`)."""


@dataclass(frozen=True, eq=False)
class CameraBatch:
    """The cameras a prior operation is asked about: one per image of the batch, all of one size and projection.

    Generation methods pass their cameras to every prior operation (``cameras=``); real and ``tiny-random`` models
    ignore them, the ``groundtruth:`` twins answer from the scene at exactly these cameras. Poses use scene3d's
    convention everywhere: OpenGL camera-to-world (+X right, +Y up, looking along −Z), world up +Z.

    Attributes:
        c2w: camera-to-world matrices ``[B, 4, 4]``.
        K: pinhole intrinsics ``[B, 3, 3]`` in pixels of a ``width`` × ``height`` image (pixel centres at +0.5);
            ``None`` for equirectangular cameras.
        width: image width in pixels.
        height: image height in pixels.
        model: ``"pinhole"`` or ``"equirectangular"`` (then ``width`` is normally ``2 · height``).

    Example:
        >>> c2w = look_at(torch.tensor([0.0, -3.0, 1.0]), torch.zeros(3))
        >>> cams = CameraBatch.from_fov(c2w, 50.0, 64, 48)
        >>> len(cams), tuple(cams.K.shape), cams.scaled(32, 24).K[0, 0, 0].item() == cams.K[0, 0, 0].item() / 2
        (1, (1, 3, 3), True)
        >>> pano = CameraBatch.equirectangular(c2w, 128, 64)
        >>> tuple(pano.rays()[1].shape)
        (1, 64, 128, 3)
    """

    c2w: Float[Tensor, "B 4 4"]
    K: Float[Tensor, "B 3 3"] | None
    width: int
    height: int
    model: CameraModel = "pinhole"

    def __post_init__(self) -> None:
        if not isinstance(self.c2w, Tensor) or self.c2w.ndim != 3 or tuple(self.c2w.shape[1:]) != (4, 4):
            shape = tuple(self.c2w.shape) if isinstance(self.c2w, Tensor) else type(self.c2w).__name__
            raise ValueError(f"c2w must have shape (B, 4, 4), got {shape}")
        if self.c2w.shape[0] == 0:
            raise ValueError("a CameraBatch needs at least one camera, got c2w of shape (0, 4, 4)")
        if not bool(torch.isfinite(self.c2w).all()):
            raise ValueError("c2w must be finite, got non-finite values")
        if isinstance(self.width, bool) or isinstance(self.height, bool) or not (
            isinstance(self.width, int) and isinstance(self.height, int) and self.width > 0 and self.height > 0
        ):
            raise ValueError(f"width and height must be positive integers, got {self.width!r} x {self.height!r}")
        if self.model not in ("pinhole", "equirectangular"):
            raise ValueError(f"model must be 'pinhole' or 'equirectangular', got {self.model!r}")
        if self.model == "pinhole":
            if self.K is None:
                raise ValueError("a pinhole CameraBatch needs K of shape (B, 3, 3), got None")
            if self.K.ndim != 3 or tuple(self.K.shape) != (self.c2w.shape[0], 3, 3):
                raise ValueError(f"K must have shape ({self.c2w.shape[0]}, 3, 3) to match c2w, got {tuple(self.K.shape)}")
            if self.K.device != self.c2w.device:
                raise ValueError(f"K and c2w must be on one device, got {self.K.device} and {self.c2w.device}")
        elif self.K is not None:
            raise ValueError(f"an equirectangular CameraBatch has no intrinsics: K must be None, got {tuple(self.K.shape)}")

    # ------------------------------------------------------------------------------------------- constructors
    @classmethod
    def pinhole(
        cls, c2w: Float[Tensor, "*batch 4 4"], K: Float[Tensor, "*kbatch 3 3"], width: int, height: int
    ) -> CameraBatch:
        """Pinhole cameras; ``c2w`` ``[4, 4]`` or ``[B, 4, 4]``, ``K`` ``[3, 3]`` (shared) or ``[B, 3, 3]``."""
        c2w = c2w.reshape(-1, 4, 4) if c2w.ndim == 2 else c2w
        K = K.to(c2w).expand(c2w.shape[0], 3, 3).clone() if K.ndim == 2 else K.to(c2w)
        return cls(c2w=c2w, K=K, width=width, height=height, model="pinhole")

    @classmethod
    def from_fov(cls, c2w: Float[Tensor, "*batch 4 4"], fov_y_deg: float, width: int, height: int) -> CameraBatch:
        """Pinhole cameras with a vertical field of view and the principal point at the image centre."""
        return cls.pinhole(c2w, intrinsics_from_fov(fov_y_deg, width, height), width, height)

    @classmethod
    def equirectangular(cls, c2w: Float[Tensor, "*batch 4 4"], width: int, height: int) -> CameraBatch:
        """Equirectangular panoramas centred at ``c2w``'s position (its −Z is the middle column, +Y up)."""
        c2w = c2w.reshape(-1, 4, 4) if c2w.ndim == 2 else c2w
        return cls(c2w=c2w, K=None, width=width, height=height, model="equirectangular")

    @staticmethod
    def cat(batches: list[CameraBatch]) -> CameraBatch:
        """One batch from several of the same size and model."""
        if not batches:
            raise ValueError("cat needs at least one CameraBatch")
        first = batches[0]
        for other in batches[1:]:
            if (other.width, other.height, other.model) != (first.width, first.height, first.model):
                raise ValueError(
                    f"cat needs cameras of one size and model, got {first.width}x{first.height} {first.model} and "
                    f"{other.width}x{other.height} {other.model}"
                )
        K = None if first.K is None else torch.cat([b.K for b in batches])  # type: ignore[misc]
        return CameraBatch(torch.cat([b.c2w for b in batches]), K, first.width, first.height, first.model)

    # ------------------------------------------------------------------------------------------- batch
    def __len__(self) -> int:
        return int(self.c2w.shape[0])

    def __getitem__(self, index: int | slice | Tensor | list[int]) -> CameraBatch:
        """A sub-batch (an integer index keeps the batch dimension: a batch of one)."""
        if isinstance(index, int):
            index = slice(index, index + 1 if index != -1 else None)
        return CameraBatch(
            self.c2w[index], None if self.K is None else self.K[index], self.width, self.height, self.model
        )

    @property
    def device(self) -> torch.device:
        return self.c2w.device

    @property
    def centers(self) -> Float[Tensor, "B 3"]:
        """Camera positions in the world."""
        return self.c2w[:, :3, 3]

    def to(self, device: torch.device | str) -> CameraBatch:
        return CameraBatch(
            self.c2w.to(device), None if self.K is None else self.K.to(device), self.width, self.height, self.model
        )

    def repeat_interleave(self, n: int) -> CameraBatch:
        """Each camera repeated ``n`` times (camera-major), matching ``PromptEmbeddings.repeat`` and the ``B·k``
        candidates of ``num_images_per_prompt``."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        K = None if self.K is None else self.K.repeat_interleave(n, 0)
        return CameraBatch(self.c2w.repeat_interleave(n, 0), K, self.width, self.height, self.model)

    def expand_to(self, batch: int) -> CameraBatch:
        """These cameras for a batch of ``batch`` images: as they are (``len == batch``), one camera repeated
        (``len == 1``), or each camera repeated ``batch / len`` times (``k`` candidates per camera).

        Raises:
            ValueError: when ``batch`` is not a multiple of ``len(self)``.
        """
        n = len(self)
        if batch == n:
            return self
        if batch % n:
            raise ValueError(f"cameras hold {n} cameras, which cannot serve a batch of {batch} images")
        return self.repeat_interleave(batch // n)

    def scaled(self, width: int, height: int) -> CameraBatch:
        """The same cameras imaging ``width`` × ``height`` pixels (intrinsics scaled per axis; a panorama just
        changes its resolution)."""
        if self.K is None:
            return CameraBatch(self.c2w, None, width, height, self.model)
        K = self.K.clone()
        K[:, 0] *= width / self.width
        K[:, 1] *= height / self.height
        return CameraBatch(self.c2w, K, width, height, self.model)

    def rays(self) -> tuple[Float[Tensor, "B H W 3"], Float[Tensor, "B H W 3"]]:
        """World-space origins and unit directions of every pixel centre."""
        if self.model == "pinhole":
            assert self.K is not None
            return pinhole_rays(self.c2w, self.K, self.width, self.height)
        d_cam = equirect_directions(self.width, self.height, self.device).to(self.c2w.dtype)
        directions = torch.einsum("bij,hwj->bhwi", self.c2w[:, :3, :3], d_cam)
        origins = self.c2w[:, None, None, :3, 3].expand_as(directions)
        return origins, directions


def camera_angles(c2w: Float[Tensor, "B 4 4"]) -> Float[Tensor, "B 2"]:
    """(yaw, pitch) of cameras orbiting the origin, world up +Z: the inverse of :func:`orbit_c2w`'s placement.

    ``pitch = arccos(z / |p|) ∈ [0, π]`` (0 looks down from the top), ``yaw = atan2(−y, x) ∈ (−π, π]``.
    """
    p = c2w[:, :3, 3]
    r = p.norm(dim=-1).clamp_min(1e-9)
    pitch = torch.arccos((p[:, 2] / r).clamp(-1.0, 1.0))
    yaw = torch.atan2(-p[:, 1], p[:, 0])
    return torch.stack([yaw, pitch], dim=-1)


def orbit_c2w(yaw: Float[Tensor, " B"], pitch: Float[Tensor, " B"], radius: float | Float[Tensor, " B"]) -> Float[Tensor, "B 4 4"]:
    """Camera-to-world (OpenGL axes, world up +Z) of cameras at (yaw, pitch) on a sphere, looking at the origin.

    This is EpiGRAF's official ``compute_cam2world_matrix`` (world up +Y, position ``r (sinφ cosθ, cosφ, sinφ sinθ)``)
    rotated into scene3d's +Z-up world by ``(x, y, z) → (x, −z, y)``.
    """
    pitch = pitch.clamp(1e-5, torch.pi - 1e-5)
    eye = torch.stack([torch.sin(pitch) * torch.cos(yaw), -torch.sin(pitch) * torch.sin(yaw), torch.cos(pitch)], dim=-1)
    eye = eye * (radius if isinstance(radius, float) else radius[:, None])
    return look_at(eye, torch.zeros_like(eye))

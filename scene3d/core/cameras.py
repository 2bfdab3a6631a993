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

import torch
from jaxtyping import Float
from torch import Tensor

OPENGL_TO_OPENCV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))
"""Right-multiply a camera-to-world matrix by this to switch between the OpenGL and OpenCV camera axes."""


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

"""Depth-based forward warping of the stylized reference view into other views (ReGS's pseudo-views).

ReGS (``train_ref.py`` with ``utils/warp_utils.py``) renders the depth of the reference view from the *original*
Gaussians, back-projects every reference pixel to a world point, projects those points into another training view,
and keeps a point where it passes three tests:

* it lands inside the image (pixel = ``round(u − 0.5), round(v − 0.5)``, pixel centres at ``+0.5``);
* the two viewing directions agree, ``cos(ray_ref, ray_view) > 0.01`` (``mask_by_cos``);
* the **z-test**: its depth in the view is not behind the original depth there,
  ``z_point <= z_view(pixel) + tol`` with ``tol = 1e-3`` (``colorize_image``).

The reference colour of each surviving point is the pseudo-target of its pixel; the pseudo-view loss is an L1 over
those pixels only. Everything here is a pure function of explicit tensors (world-to-camera ``viewmats`` in OpenCV
axes and pinhole ``K``, as :func:`scene3d.renderers.gaussians.rasterize` takes them).

Where several points land on one pixel the official code keeps whichever write the GPU happens to do last; here the
nearest point wins (deterministic, and what a z-buffer means).

Example:
    >>> import torch
    >>> K = torch.tensor([[20.0, 0.0, 8.0], [0.0, 20.0, 8.0], [0.0, 0.0, 1.0]])
    >>> depth = torch.full((16, 16), 3.0)
    >>> points = backproject_depth(depth, torch.eye(4), K)
    >>> corr = forward_warp(points, torch.ones(256, dtype=torch.bool), torch.eye(4), K, 16, 16, depth)
    >>> bool((corr.target_pixels == corr.source_pixels).all()), len(corr.target_pixels)
    (True, 256)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor


@dataclass
class WarpCorrespondence:
    """Which reference pixel gives the pseudo-target of which target pixel (flat ``row * W + col`` indices)."""

    target_pixels: Int[Tensor, " P"]
    """Pixels of the target view that receive a reference colour (unique)."""
    source_pixels: Int[Tensor, " P"]
    """The reference pixel whose colour each of them receives."""
    width: int
    height: int

    def __len__(self) -> int:
        return int(self.target_pixels.shape[0])

    def mask(self) -> Bool[Tensor, "H W"]:
        """The target pixels that have a pseudo-target (ReGS's visibility mask)."""
        out = torch.zeros(self.height * self.width, dtype=torch.bool, device=self.target_pixels.device)
        out[self.target_pixels] = True
        return out.view(self.height, self.width)


def _check_camera(viewmat: Tensor, K: Tensor) -> None:
    if viewmat.shape != (4, 4):
        raise ValueError(f"viewmat must have shape (4, 4), got {tuple(viewmat.shape)}")
    if K.shape != (3, 3):
        raise ValueError(f"K must have shape (3, 3), got {tuple(K.shape)}")


def camera_center(viewmat: Float[Tensor, "4 4"]) -> Float[Tensor, "3"]:
    """World position of a camera given its world-to-camera matrix: ``−Rᵀ t``."""
    return -(viewmat[:3, :3].T @ viewmat[:3, 3])


def backproject_depth(
    depth: Float[Tensor, "H W"], viewmat: Float[Tensor, "4 4"], K: Float[Tensor, "3 3"]
) -> Float[Tensor, "HW 3"]:
    """World points of every pixel centre at its z-depth (``depth_to_world``), row-major ``[H·W, 3]``.

    ``x_cam = ((u − cx) z / fx, (v − cy) z / fy, z)`` with ``(u, v)`` the pixel centre, then
    ``x_world = Rᵀ (x_cam − t)`` for ``viewmat = [R | t]``.
    """
    _check_camera(viewmat, K)
    h, w = depth.shape
    v, u = torch.meshgrid(
        torch.arange(h, device=depth.device, dtype=depth.dtype) + 0.5,
        torch.arange(w, device=depth.device, dtype=depth.dtype) + 0.5,
        indexing="ij",
    )
    z = depth.reshape(-1)
    cam = torch.stack([(u.reshape(-1) - K[0, 2]) * z / K[0, 0], (v.reshape(-1) - K[1, 2]) * z / K[1, 1], z], dim=-1)
    rot, trans = viewmat[:3, :3].to(depth.dtype), viewmat[:3, 3].to(depth.dtype)
    return (cam - trans) @ rot


def project_points(
    points: Float[Tensor, "P 3"], viewmat: Float[Tensor, "4 4"], K: Float[Tensor, "3 3"]
) -> tuple[Float[Tensor, "P 2"], Float[Tensor, " P"]]:
    """Pixel coordinates ``(u, v)`` (pixel centres at ``+0.5``) and camera z of world points."""
    _check_camera(viewmat, K)
    cam = points @ viewmat[:3, :3].T.to(points.dtype) + viewmat[:3, 3].to(points.dtype)
    z = cam[:, 2]
    safe_z = torch.where(z.abs() > 1e-12, z, torch.full_like(z, 1e-12))
    uv = torch.stack([K[0, 0] * cam[:, 0] / safe_z + K[0, 2], K[1, 1] * cam[:, 1] / safe_z + K[1, 2]], dim=-1)
    return uv, z


def view_cosine_mask(
    points: Float[Tensor, "P 3"],
    source_center: Float[Tensor, "3"],
    target_center: Float[Tensor, "3"],
    threshold: float = 0.01,
) -> Bool[Tensor, " P"]:
    """Points seen from both cameras along directions whose cosine exceeds ``threshold`` (``mask_by_cos``)."""
    a = torch.nn.functional.normalize(points - source_center, dim=-1)
    b = torch.nn.functional.normalize(points - target_center, dim=-1)
    return (a * b).sum(-1) > threshold


def forward_warp(
    points: Float[Tensor, "P 3"],
    valid: Bool[Tensor, " P"],
    viewmat: Float[Tensor, "4 4"],
    K: Float[Tensor, "3 3"],
    width: int,
    height: int,
    target_depth: Float[Tensor, "H W"],
    *,
    depth_tolerance: float = 1e-3,
) -> WarpCorrespondence:
    """Forward-warp reference points into a view with ReGS's z-test (``colorize_image``).

    Args:
        points: back-projected reference pixels (``[H_ref·W_ref, 3]``, row-major), see :func:`backproject_depth`.
        valid: which of them to warp (surface pixels of the reference that pass :func:`view_cosine_mask`).
        viewmat, K: the target camera.
        width, height: the target image size.
        target_depth: the target view's z-depth rendered from the original Gaussians; ``0`` where there is no
            surface (no point passes there).
        depth_tolerance: a point is visible where ``z_point <= z_target + depth_tolerance`` (world units).

    Returns:
        The target pixels that receive a reference colour and the reference pixel each receives it from. When
        several points land on one pixel, the nearest wins (ties: the lowest reference index).
    """
    if points.shape[0] != valid.shape[0]:
        raise ValueError(f"valid must have one entry per point ({points.shape[0]}), got {valid.shape[0]}")
    if target_depth.shape != (height, width):
        raise ValueError(f"target_depth must have shape ({height}, {width}), got {tuple(target_depth.shape)}")
    if depth_tolerance < 0:
        raise ValueError(f"depth_tolerance must be >= 0, got {depth_tolerance}")
    uv, z = project_points(points, viewmat, K)
    col = torch.round(uv[:, 0] - 0.5).long()
    row = torch.round(uv[:, 1] - 0.5).long()
    inside = valid & (z > 0) & (col >= 0) & (col < width) & (row >= 0) & (row < height)
    src = inside.nonzero(as_tuple=True)[0]
    pix = row[src] * width + col[src]
    z_src = z[src]
    z_tgt = target_depth.reshape(-1)[pix]
    visible = (z_src <= z_tgt + depth_tolerance) & (z_tgt > 0)
    src, pix, z_src = src[visible], pix[visible], z_src[visible]
    # z-buffer among the points that share a pixel: nearest first, then lowest source index
    nearest = torch.full((height * width,), float("inf"), dtype=z_src.dtype, device=z_src.device)
    nearest = nearest.scatter_reduce(0, pix, z_src, reduce="amin")
    front = z_src <= nearest[pix]
    src, pix = src[front], pix[front]
    first = torch.full((height * width,), points.shape[0], dtype=torch.long, device=src.device)
    first = first.scatter_reduce(0, pix, src, reduce="amin")
    keep = first[pix] == src
    return WarpCorrespondence(target_pixels=pix[keep], source_pixels=src[keep], width=width, height=height)


def warp_image(
    image: Float[Tensor, "H W 3"], corr: WarpCorrespondence, *, fill: float = 1.0
) -> Float[Tensor, "H2 W2 3"]:
    """The pseudo-view itself (reference colours at the warped pixels, ``fill`` elsewhere), for inspection."""
    out = torch.full((corr.height * corr.width, image.shape[-1]), fill, dtype=image.dtype, device=image.device)
    out[corr.target_pixels] = image.reshape(-1, image.shape[-1])[corr.source_pixels]
    return out.view(corr.height, corr.width, image.shape[-1])

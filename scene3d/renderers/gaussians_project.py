"""Projection of 3D Gaussians onto pinhole cameras, and spherical-harmonics colours, in pure torch.

These are the first two stages of :func:`scene3d.renderers.gaussians.rasterize` on its torch backend, written to
gsplat 1.4.0's numerical conventions (its CUDA kernels ``fully_fused_projection_fwd.cu`` and
``spherical_harmonics.cuh`` were read for them; the code is scene3d's own):

* covariance ``Σ = R S Sᵀ Rᵀ`` from a quaternion (``wxyz``, normalised here) and per-axis scales;
* EWA projection ``Σ₂ = J W Σ Wᵀ Jᵀ`` with the pinhole Jacobian ``J`` evaluated at the mean clamped to 1.3× the
  field of view (gsplat's ``lim_x``/``lim_y``), the mean itself projected unclamped;
* a ``eps2d`` blur added to the diagonal of ``Σ₂`` (the ``0.3`` px² low-pass filter of 3DGS) and, in
  ``antialiased`` mode, the Mip-Splatting opacity compensation ``sqrt(det Σ₂ / det(Σ₂ + eps2d I))``;
* a 3-sigma pixel radius ``ceil(3 sqrt(λ_max))`` (integer, not differentiable) that is 0 for Gaussians culled by
  the near/far planes, a non-positive determinant, ``radius <= radius_clip`` or a footprint outside the image;
* SH colours from the view direction ``mean − camera centre`` with gsplat's real SH constants (degrees 0 to 4);
  the caller adds ``0.5`` and clamps at 0, as gsplat's ``rasterization`` does.

Example:
    >>> import torch
    >>> means = torch.tensor([[0.0, 0.0, 2.0]])
    >>> quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    >>> scales = torch.full((1, 3), 0.1)
    >>> K = torch.tensor([[[50.0, 0.0, 16.0], [0.0, 50.0, 16.0], [0.0, 0.0, 1.0]]])
    >>> proj = project_gaussians(means, quats, scales, torch.eye(4)[None], K, 32, 32)
    >>> proj.means2d[0, 0].tolist(), int(proj.radii[0, 0])
    ([16.0, 16.0], 8)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

SH_C0 = 0.28209479177387814
"""The degree-0 real SH basis value ``1 / (2 sqrt(π))``: ``rgb = SH_C0 · f_dc + 0.5``."""

MAX_SH_DEGREE = 4


def rgb_to_sh(rgb: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch 3"]:
    """The degree-0 SH coefficient that renders as ``rgb`` (the inverse of :func:`sh_to_rgb`)."""
    return (rgb - 0.5) / SH_C0


def sh_to_rgb(sh: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch 3"]:
    """The colour a degree-0 SH coefficient renders as, before gsplat's clamp at 0."""
    return sh * SH_C0 + 0.5


def num_sh_bases(degree: int) -> int:
    """``(degree + 1)²``, the number of SH coefficients per channel up to ``degree``."""
    return (degree + 1) ** 2


def quat_to_rotmat(quats: Float[Tensor, "*batch 4"]) -> Float[Tensor, "*batch 3 3"]:
    """Rotation matrices of quaternions in ``wxyz`` order; the quaternions are normalised first."""
    w, x, y, z = (quats / quats.norm(dim=-1, keepdim=True)).unbind(-1)
    rows = (
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    )  # fmt: skip
    return torch.stack(rows, dim=-1).reshape(*quats.shape[:-1], 3, 3)


def covariances(quats: Float[Tensor, "N 4"], scales: Float[Tensor, "N 3"]) -> Float[Tensor, "N 3 3"]:
    """3D covariances ``Σ = (R S)(R S)ᵀ`` of Gaussians with rotations ``quats`` and per-axis ``scales``."""
    m = quat_to_rotmat(quats) * scales[:, None, :]
    return m @ m.transpose(-1, -2)


@dataclass
class Projection:
    """Gaussians projected onto ``C`` cameras (gsplat's unpacked ``[C, N]`` layout).

    Entries with ``radii == 0`` are culled: their other fields hold finite placeholder values that carry no
    gradient into the rendered image.
    """

    means2d: Float[Tensor, "C N 2"]
    """Pixel coordinates of the projected means (pixel centres at ``+0.5``)."""
    conics: Float[Tensor, "C N 3"]
    """Upper triangle ``(a, b, c)`` of the inverse blurred 2D covariance: ``σ(d) = ½(a dx² + c dy²) + b dx dy``."""
    covars2d: Float[Tensor, "C N 3"]
    """Upper triangle ``(xx, xy, yy)`` of the blurred 2D covariance ``Σ₂ + eps2d I`` (no gradient)."""
    depths: Float[Tensor, "C N"]
    """z-depth of each mean in camera space."""
    radii: Int[Tensor, "C N"]
    """3-sigma radius in whole pixels (int32); 0 where the Gaussian is culled."""
    compensations: Float[Tensor, "C N"] | None
    """Mip-Splatting opacity factors in ``antialiased`` mode, else ``None``."""


def project_gaussians(
    means: Float[Tensor, "N 3"],
    quats: Float[Tensor, "N 4"],
    scales: Float[Tensor, "N 3"],
    viewmats: Float[Tensor, "C 4 4"],
    Ks: Float[Tensor, "C 3 3"],
    width: int,
    height: int,
    *,
    eps2d: float = 0.3,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    compensate: bool = False,
) -> Projection:
    """Project 3D Gaussians with the EWA approximation (Zwicker et al. 2002; 3DGS Eq. 5), differentiably.

    Args:
        means, quats, scales: world-space Gaussians (quaternions ``wxyz``, any norm but not 0).
        viewmats: world-to-camera matrices (OpenCV axes: +z forward, +y down).
        Ks: pinhole intrinsics.
        width, height: image size in pixels.
        eps2d: blur added to the diagonal of the 2D covariance, in px².
        near_plane, far_plane: z-range of Gaussians that are kept.
        radius_clip: Gaussians with a pixel radius ``<=`` this are culled.
        compensate: compute the antialiasing opacity compensation.

    Returns:
        The :class:`Projection`; gradients flow to ``means``, ``quats``, ``scales`` and ``viewmats`` through
        ``means2d``, ``conics``, ``depths`` and ``compensations``.
    """
    rot_w2c, t_w2c = viewmats[:, :3, :3], viewmats[:, :3, 3]
    means_c = torch.einsum("cij,nj->cni", rot_w2c, means) + t_w2c[:, None, :]  # [C, N, 3]
    # Σ_c = W Σ Wᵀ = (W R S)(W R S)ᵀ; keep the square root M_c = W R S, so Σ₂ = (J M_c)(J M_c)ᵀ.
    m_world = quat_to_rotmat(quats) * scales[:, None, :]  # [N, 3, 3]
    m_cam = torch.einsum("cij,njk->cnik", rot_w2c, m_world)  # [C, N, 3, 3]

    x, y, z = means_c.unbind(-1)
    in_depth = (z >= near_plane) & (z <= far_plane)
    # Culled Gaussians get z = 1 so nothing below divides by ~0 (0 · inf would be a NaN gradient).
    z = torch.where(in_depth, z, torch.ones_like(z))
    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    lim_x_pos = (width - cx) / fx + 0.3 * (0.5 * width / fx)
    lim_x_neg = cx / fx + 0.3 * (0.5 * width / fx)
    lim_y_pos = (height - cy) / fy + 0.3 * (0.5 * height / fy)
    lim_y_neg = cy / fy + 0.3 * (0.5 * height / fy)
    tx = z * torch.minimum(torch.maximum(x / z, -lim_x_neg), lim_x_pos)
    ty = z * torch.minimum(torch.maximum(y / z, -lim_y_neg), lim_y_pos)
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], dim=-1)

    # Rows of J M_c, with J = [[fx/z, 0, -fx tx/z²], [0, fy/z, -fy ty/z²]].
    row_x = (fx / z)[..., None] * m_cam[..., 0, :] - (fx * tx / (z * z))[..., None] * m_cam[..., 2, :]
    row_y = (fy / z)[..., None] * m_cam[..., 1, :] - (fy * ty / (z * z))[..., None] * m_cam[..., 2, :]
    cov_xx = (row_x * row_x).sum(-1)
    cov_xy = (row_x * row_y).sum(-1)
    cov_yy = (row_y * row_y).sum(-1)

    det_orig = cov_xx * cov_yy - cov_xy * cov_xy
    cov_xx, cov_yy = cov_xx + eps2d, cov_yy + eps2d
    det = cov_xx * cov_yy - cov_xy * cov_xy
    det_ok = det > 0
    det_safe = torch.where(det_ok, det, torch.ones_like(det))
    conics = torch.stack([cov_yy / det_safe, -cov_xy / det_safe, cov_xx / det_safe], dim=-1)
    compensations = None
    if compensate:
        # sqrt(max(0, ratio)); the 1e-12 keeps the gradient finite where the ratio is 0 (gsplat's vjp adds 1e-6
        # to the compensation for the same reason), and changes the value by at most 1e-6.
        compensations = torch.sqrt((det_orig / det_safe).clamp_min(0.0) + 1e-12)

    with torch.no_grad():
        half_trace = 0.5 * (cov_xx + cov_yy)
        v1 = half_trace + torch.sqrt((half_trace * half_trace - det).clamp_min(0.01))
        radius = torch.ceil(3.0 * torch.sqrt(v1))
        mx, my = means2d.unbind(-1)
        inside = (mx + radius > 0) & (mx - radius < width) & (my + radius > 0) & (my - radius < height)
        keep = in_depth & det_ok & (radius > radius_clip) & inside
        radii = torch.where(keep, radius, torch.zeros_like(radius)).to(torch.int32)
        covars2d = torch.stack([cov_xx, cov_xy, cov_yy], dim=-1).detach()
    return Projection(
        means2d=means2d, conics=conics, covars2d=covars2d, depths=means_c[..., 2], radii=radii, compensations=compensations
    )


def sh_basis(degree: int, dirs: Float[Tensor, "*batch 3"]) -> Float[Tensor, "*batch K"]:
    """Real SH basis values up to ``degree`` (0..4) at unit ``dirs``, in gsplat's (and 3DGS's) order and signs.

    The constants are those of Sloan, "Efficient Spherical Harmonic Evaluation" (JCGT 2013), as gsplat uses them.
    """
    if not 0 <= degree <= MAX_SH_DEGREE:
        raise ValueError(f"sh degree must be in 0..{MAX_SH_DEGREE}, got {degree}")
    out = [torch.full_like(dirs[..., 0], SH_C0)]
    if degree >= 1:
        x, y, z = dirs.unbind(-1)
        out += [-0.48860251190292 * y, 0.48860251190292 * z, -0.48860251190292 * x]
    if degree >= 2:
        z2 = z * z
        c1, s1 = x * x - y * y, 2.0 * x * y
        p6 = 0.9461746957575601 * z2 - 0.3153915652525201
        out += [0.5462742152960395 * s1, -1.092548430592079 * z * y, p6, -1.092548430592079 * z * x]
        out += [0.5462742152960395 * c1]
    if degree >= 3:
        tmp_c = -2.285228997322329 * z2 + 0.4570457994644658
        tmp_b = 1.445305721320277 * z
        c2, s2 = x * c1 - y * s1, x * s1 + y * c1
        p12 = z * (1.865881662950577 * z2 - 1.119528997770346)
        out += [-0.5900435899266435 * s2, tmp_b * s1, tmp_c * y, p12, tmp_c * x, tmp_b * c1]
        out += [-0.5900435899266435 * c2]
    if degree >= 4:
        tmp_d = z * (-4.683325804901025 * z2 + 2.007139630671868)
        tmp_c4 = 3.31161143515146 * z2 - 0.47308734787878
        tmp_b4 = -1.770130769779931 * z
        c3, s3 = x * c2 - y * s2, x * s2 + y * c2
        p20 = 1.984313483298443 * z * p12 - 1.006230589874905 * p6
        out += [0.6258357354491763 * s3, tmp_b4 * s2, tmp_c4 * s1, tmp_d * y, p20]
        out += [tmp_d * x, tmp_c4 * c1, tmp_b4 * c2, 0.6258357354491763 * c3]
    return torch.stack(out, dim=-1)


def eval_sh(degree: int, dirs: Float[Tensor, "*batch 3"], coeffs: Float[Tensor, "*batch K 3"]) -> Float[Tensor, "*batch 3"]:
    """``Σ_k Y_k(d̂) c_k`` over the first ``(degree + 1)²`` coefficients; ``dirs`` need not be unit length.

    Degree 0 ignores ``dirs`` (so a zero direction is fine there); higher degrees need non-zero directions.
    """
    n = num_sh_bases(degree)
    if coeffs.shape[-2] < n:
        raise ValueError(f"sh degree {degree} needs at least {n} coefficients per channel, got {coeffs.shape[-2]}")
    if degree == 0:
        return SH_C0 * coeffs[..., 0, :]
    unit = dirs / dirs.norm(dim=-1, keepdim=True)
    basis = sh_basis(degree, unit)
    return (basis[..., None] * coeffs[..., :n, :]).sum(-2)

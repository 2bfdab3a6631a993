"""A dense brute-force Gaussian rasterizer: every Gaussian against every pixel, autograd for gradients.

It implements the conventions of :mod:`scene3d.renderers.gaussians` in the most direct way (3×3 matrix products
for the projection, one ``[Gaussians, pixels]`` block per camera for compositing, no tiles, no custom backward),
so tests can check the fast torch rasterizer against it and the benchmark can time it. Memory is
``O(N · H · W)``: use it on small scenes only.

Example:
    >>> import torch
    >>> means = torch.tensor([[0.0, 0.0, 3.0]])
    >>> K = torch.tensor([[[40.0, 0.0, 8.0], [0.0, 40.0, 8.0], [0.0, 0.0, 1.0]]])
    >>> rgb, alpha = rasterize_reference(
    ...     means, torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), 0.1), torch.ones(1), torch.ones(1, 3),
    ...     torch.eye(4)[None], K, 16, 16)
    >>> round(float(alpha[0, 8, 8, 0]), 3)
    0.887
"""

from __future__ import annotations

import math

import torch
from jaxtyping import Float
from torch import Tensor

from scene3d.renderers.gaussians_project import eval_sh, quat_to_rotmat

_GSPLAT_TILE = 16


def project_reference(means, quats, scales, viewmats, Ks, width, height, eps2d, near_plane, far_plane, radius_clip):
    """Per camera: means2d [C,N,2], blurred cov2d [C,N,2,2], depths [C,N], radii [C,N], det ratio [C,N]."""
    rot = quat_to_rotmat(quats)
    cov3 = rot @ torch.diag_embed(scales * scales) @ rot.transpose(-1, -2)  # [N, 3, 3]
    w, t = viewmats[:, None, :3, :3], viewmats[:, None, :3, 3]
    p = (w @ means[None, :, :, None])[..., 0] + t  # [C, N, 3]
    cov_c = w @ cov3[None] @ w.transpose(-1, -2)
    z = p[..., 2]
    ok_z = (z >= near_plane) & (z <= far_plane)
    z = torch.where(ok_z, z, torch.ones_like(z))
    k = Ks[:, None]
    fx, fy, cx, cy = k[..., 0, 0], k[..., 1, 1], k[..., 0, 2], k[..., 1, 2]
    lim_x = ((cx / fx + 0.15 * width / fx), ((width - cx) / fx + 0.15 * width / fx))
    lim_y = ((cy / fy + 0.15 * height / fy), ((height - cy) / fy + 0.15 * height / fy))
    u = torch.maximum(torch.minimum(p[..., 0] / z, lim_x[1]), -lim_x[0])
    v = torch.maximum(torch.minimum(p[..., 1] / z, lim_y[1]), -lim_y[0])
    zero = torch.zeros_like(z)
    jac = torch.stack(
        [torch.stack([fx / z, zero, -fx * u / z], -1), torch.stack([zero, fy / z, -fy * v / z], -1)], dim=-2
    )  # [C, N, 2, 3]
    cov2 = jac @ cov_c @ jac.transpose(-1, -2)
    det0 = torch.linalg.det(cov2)
    cov2 = cov2 + eps2d * torch.eye(2, dtype=means.dtype, device=means.device)
    det = torch.linalg.det(cov2)
    means2d = torch.stack([fx * p[..., 0] / z + cx, fy * p[..., 1] / z + cy], dim=-1)
    with torch.no_grad():
        half = 0.5 * (cov2[..., 0, 0] + cov2[..., 1, 1])
        radius = torch.ceil(3 * torch.sqrt(half + torch.sqrt((half * half - det).clamp_min(0.01))))
        mx, my = means2d[..., 0], means2d[..., 1]
        inside = (mx + radius > 0) & (mx - radius < width) & (my + radius > 0) & (my - radius < height)
        radius = torch.where(ok_z & (det > 0) & (radius > radius_clip) & inside, radius, torch.zeros_like(radius))
    return means2d, cov2, p[..., 2], radius.to(torch.int32), det0 / torch.where(det > 0, det, torch.ones_like(det))


def rasterize_reference(
    means: Float[Tensor, "N 3"],
    quats: Float[Tensor, "N 4"],
    scales: Float[Tensor, "N 3"],
    opacities: Float[Tensor, " N"],
    colors: Float[Tensor, "..."],
    viewmats: Float[Tensor, "C 4 4"],
    Ks: Float[Tensor, "C 3 3"],
    width: int,
    height: int,
    *,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    eps2d: float = 0.3,
    sh_degree: int | None = None,
    backgrounds: Float[Tensor, "C D"] | None = None,
    render_mode: str = "RGB",
    rasterize_mode: str = "classic",
) -> tuple[Float[Tensor, "C H W X"], Float[Tensor, "C H W 1"]]:
    """``rasterize``'s images, computed densely (same arguments; no validation, no meta)."""
    n, c = means.shape[0], viewmats.shape[0]
    means2d, cov2, depths, radii, ratio = project_reference(
        means, quats, scales, viewmats, Ks, width, height, eps2d, near_plane, far_plane, radius_clip
    )
    opac = opacities.expand(c, n)
    if rasterize_mode == "antialiased":
        opac = opac * torch.sqrt(ratio.clamp_min(0.0) + 1e-12)
    if render_mode in ("D", "ED"):
        feats = depths[..., None]
    else:
        if sh_degree is None:
            feats = colors.expand(c, n, colors.shape[-1])
        else:
            centres = torch.linalg.inv(viewmats)[:, None, :3, 3]
            coeffs = colors.expand(c, n, *colors.shape[-2:])
            valid = (radii > 0)[..., None]
            dirs = torch.where(valid, means[None] - centres, torch.ones_like(means[None]))
            feats = (eval_sh(sh_degree, dirs, coeffs) + 0.5).clamp_min(0.0)
        if render_mode != "RGB":
            feats = torch.cat([feats, depths[..., None]], dim=-1)
    conic = torch.linalg.inv(torch.where((radii > 0)[..., None, None], cov2, torch.eye(2, dtype=cov2.dtype)))

    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    px, py = xs.reshape(-1).to(means.dtype) + 0.5, ys.reshape(-1).to(means.dtype) + 0.5
    tile_x, tile_y = xs.reshape(-1) // _GSPLAT_TILE, ys.reshape(-1) // _GSPLAT_TILE
    renders, alphas = [], []
    for cam in range(c):
        order = torch.sort(depths[cam].detach(), stable=True).indices
        m, q, o, f, r = means2d[cam, order], conic[cam, order], opac[cam, order], feats[cam, order], radii[cam, order]
        dx, dy = m[:, 0:1] - px, m[:, 1:2] - py  # [N, HW]
        sigma = 0.5 * (q[:, 0, 0:1] * dx * dx + q[:, 1, 1:2] * dy * dy) + q[:, 0, 1:2] * dx * dy
        raw = o[:, None] * torch.exp(-sigma)
        alpha = raw.clamp(max=0.999)
        # gsplat evaluates a Gaussian on the pixels of the 16-px tiles its radius box overlaps
        rr = r.to(means.dtype)[:, None]
        gx, gy = -(-width // _GSPLAT_TILE), -(-height // _GSPLAT_TILE)
        tx0 = torch.floor((m[:, 0:1].detach() - rr) / _GSPLAT_TILE).clamp(0, gx)
        tx1 = torch.ceil((m[:, 0:1].detach() + rr) / _GSPLAT_TILE).clamp(0, gx)
        ty0 = torch.floor((m[:, 1:2].detach() - rr) / _GSPLAT_TILE).clamp(0, gy)
        ty1 = torch.ceil((m[:, 1:2].detach() + rr) / _GSPLAT_TILE).clamp(0, gy)
        in_box = (tile_x >= tx0) & (tile_x < tx1) & (tile_y >= ty0) & (tile_y < ty1) & (rr > 0)
        keep = in_box & (sigma >= 0) & (alpha >= 1.0 / 255.0)
        log1m = torch.where(keep, torch.log1p(-alpha), torch.zeros_like(alpha))
        incl = torch.cumsum(log1m, dim=0)
        contrib = keep & (incl > math.log(1e-4))
        w = torch.where(contrib, alpha * torch.exp(incl - log1m), torch.zeros_like(alpha))
        renders.append((w.transpose(0, 1) @ f).reshape(height, width, -1))
        alphas.append((1 - torch.exp(torch.where(contrib, log1m, torch.zeros_like(log1m)).sum(0))).reshape(height, width, 1))
    render, alpha = torch.stack(renders), torch.stack(alphas)
    if backgrounds is not None and render_mode not in ("D", "ED"):
        bg = backgrounds if render_mode == "RGB" else torch.cat([backgrounds, backgrounds.new_zeros(c, 1)], -1)
        render = render + (1 - alpha) * bg[:, None, None, :]
    if render_mode in ("ED", "RGB+ED"):
        render = torch.cat([render[..., :-1], render[..., -1:] / alpha.clamp_min(1e-10)], dim=-1)
    return render, alpha


def random_gaussians(
    n: int,
    width: int,
    height: int,
    *,
    n_cameras: int = 1,
    distance: float = 2.5,
    fov_deg: float = 60.0,
    scale_range: tuple[float, float] = (0.005, 0.03),
    opacity_range: tuple[float, float] = (0.1, 0.9),
    sh_degree: int | None = None,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> dict[str, Tensor]:
    """A seeded random scene for tests and benchmarks: ``rasterize``'s tensor arguments by name.

    Means are uniform in the cube ``[-1, 1]³``; camera 0 sits at ``z = -distance`` looking along +z (it sees the
    cube fill its view at the defaults), further cameras are small random shifts of it. Scales are log-uniform in
    ``scale_range``; colours are RGB features ``[N, 3]``, or SH coefficients ``[N, (sh_degree + 1)², 3]``.
    """
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(n, 3, generator=g, dtype=torch.float64) * 2 - 1
    quats = torch.randn(n, 4, generator=g, dtype=torch.float64)
    lo, hi = math.log(scale_range[0]), math.log(scale_range[1])
    scales = torch.exp(torch.rand(n, 3, generator=g, dtype=torch.float64) * (hi - lo) + lo)
    opacities = torch.rand(n, generator=g, dtype=torch.float64) * (opacity_range[1] - opacity_range[0]) + opacity_range[0]
    if sh_degree is None:
        colors = torch.rand(n, 3, generator=g, dtype=torch.float64)
    else:
        colors = torch.randn(n, (sh_degree + 1) ** 2, 3, generator=g, dtype=torch.float64) * 0.3
    viewmats = torch.eye(4, dtype=torch.float64).repeat(n_cameras, 1, 1)
    viewmats[:, 2, 3] = distance
    viewmats[1:, :3, 3] += torch.randn(n_cameras - 1, 3, generator=g, dtype=torch.float64) * 0.1
    f = 0.5 * height / math.tan(math.radians(fov_deg) / 2)
    K = torch.tensor([[f, 0.0, width / 2], [0.0, f, height / 2], [0.0, 0.0, 1.0]], dtype=torch.float64)
    scene = {
        "means": means, "quats": quats, "scales": scales, "opacities": opacities, "colors": colors,
        "viewmats": viewmats, "Ks": K.repeat(n_cameras, 1, 1),
    }  # fmt: skip
    return {k: v.to(dtype) for k, v in scene.items()}

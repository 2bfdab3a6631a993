"""3D Gaussian splatting: one ``rasterize`` for gsplat on CUDA and scene3d's own pure-torch rasterizer elsewhere.

:func:`rasterize` takes the arguments of gsplat 1.4.0's ``rasterization()`` (the version nerfstudio 1.1.5 pins),
with the same shapes and meaning, and returns ``(render_colors, render_alphas, meta)`` like it. ``backend="auto"``
calls gsplat when the inputs are on a CUDA device and gsplat works there (probed once, :mod:`scene3d.core.backends`),
and the torch rasterizer otherwise; ``"torch"`` forces the torch path on any device and ``"cuda-lib"`` demands
gsplat. Nothing here imports gsplat until a CUDA render needs it.

Conventions (shared by both backends; the torch path follows gsplat's CUDA kernels number for number):

* **Cameras.** ``viewmats`` are world-to-camera matrices in OpenCV axes (+x right, +y down, +z forward);
  ``Ks`` pinhole intrinsics; pixel ``(i, j)`` has its centre at ``(j + 0.5, i + 0.5)``. From a nerfstudio
  camera-to-world ``c2w`` (OpenGL axes), ``viewmat = inverse(c2w @ diag(1, -1, -1, 1))``.
* **Gaussians.** ``quats`` are ``wxyz`` and normalised inside (any non-zero norm is fine); ``scales`` are
  standard deviations (not logs), ``opacities`` in ``[0, 1]`` (not logits). Covariance ``Σ = R S² Rᵀ``.
* **Projection.** EWA with the Jacobian at the mean clamped to 1.3× the field of view; ``eps2d`` (px²) is added
  to the 2D covariance's diagonal; ``antialiased`` multiplies opacities by ``sqrt(det Σ₂ / det(Σ₂ + eps2d I))``.
  A Gaussian is culled (``meta.radii == 0``) when its depth is outside ``[near_plane, far_plane]``, its
  3σ radius ``ceil(3 sqrt(λ_max))`` is ``<= radius_clip`` or its box misses the image.
* **Colours.** ``sh_degree=None``: ``colors`` are per-Gaussian features ``[N, D]`` or ``[C, N, D]`` used as
  they are. Otherwise SH coefficients ``[N, K, 3]`` or ``[C, N, K, 3]``, evaluated for the direction
  ``mean − camera centre`` on the first ``(sh_degree + 1)²`` bases, then ``max(0, · + 0.5)``.
* **Compositing.** Front to back by z-depth: ``α = min(0.999, o exp(−σ))``; Gaussians with ``α < 1/255`` are
  skipped; a pixel stops before the Gaussian that would take its transmittance to ``<= 1e-4``; the background
  is added as ``C + (1 − A) · bg``. No gradient flows through ``α`` where ``o exp(−σ) > 0.999``.
* **Render modes.** ``RGB`` (D channels), ``D`` (accumulated depth ``Σ w z``), ``ED`` (expected depth, ``D / A``
  with ``A`` clamped at 1e-10), ``RGB+D``/``RGB+ED`` (depth as the last channel; its background is 0).
* **meta.** A :class:`RasterMeta`; it also reads like gsplat's dict (``meta["means2d"]``, ``"radii" in meta``),
  which is what gsplat's ``DefaultStrategy``/``MCMCStrategy`` read: ``means2d`` ``[C, N, 2]`` (the tensor whose
  ``.grad``, after ``retain_grad()``, densification averages; with ``absgrad=True`` its ``.absgrad`` too),
  ``radii`` ``[C, N]``, ``width``, ``height``, ``n_cameras``, ``gaussian_ids=None`` (unpacked layout).
* **Gradients** reach ``means``, ``quats``, ``scales``, ``opacities``, ``colors``, ``viewmats`` and
  ``backgrounds``; both backends treat ``radii`` (and so which pixels a Gaussian covers) as constant.

Differences of the torch path from gsplat (all measured by ``tests/renderers/test_gaussians*.py``):

* only ``packed=False`` semantics, the pinhole camera, no ``sparse_grad``/``distributed``/``covars``;
* float64 inputs are supported (gsplat's kernels are float32 only);
* the antialiasing factor is ``sqrt(max(0, ratio) + 1e-12)`` (gsplat: ``sqrt(max(0, ratio))``, with ``+1e-6`` only
  in its gradient), so a fully degenerate Gaussian keeps an opacity factor of 1e-6 (below 1/255 anyway).

Bad input (non-finite values, negative scales, zero quaternions, shape or batch mismatches) raises ``ValueError``
naming the argument. ``N = 0`` and cameras that see no Gaussian render the background with alpha 0 (and keep the
autograd graph, so ``loss.backward()`` still runs).

Example:
    >>> import torch
    >>> from scene3d.renderers.gaussians import rasterize
    >>> means = torch.tensor([[0.0, 0.0, 3.0]])
    >>> quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    >>> scales = torch.full((1, 3), 0.2)
    >>> K = torch.tensor([[[40.0, 0.0, 16.0], [0.0, 40.0, 16.0], [0.0, 0.0, 1.0]]])
    >>> rgb, alpha, meta = rasterize(means, quats, scales, torch.ones(1), torch.ones(1, 3), torch.eye(4)[None], K, 32, 32)
    >>> tuple(rgb.shape), round(float(alpha[0, 16, 16, 0]), 3), int(meta["radii"][0, 0])
    ((1, 32, 32, 3), 0.967, 9)
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, Literal, no_type_check

import torch
from jaxtyping import Float, Int
from torch import Tensor

from scene3d.core.backends import Backend, check_backend, use_cuda_lib
from scene3d.renderers.gaussians_project import MAX_SH_DEGREE, eval_sh, num_sh_bases, project_gaussians
from scene3d.renderers.gaussians_binning import footprints
from scene3d.renderers.gaussians_raster import CompositeTiles


RenderMode = Literal["RGB", "D", "ED", "RGB+D", "RGB+ED"]
RasterizeMode = Literal["classic", "antialiased"]

TILE_SIZE = 4
"""Tile edge (px) of the torch rasterizer. Results do not depend on it (gsplat's 16-px footprint rule is kept)."""
BATCH = 32
"""Gaussians per tile per compositing round of the torch rasterizer."""
MAX_BLOCK = 1 << 22
"""Largest ``tiles × batch × pixels`` block the torch rasterizer evaluates at once (bounds its memory)."""
SLICE_PAIRS = 1 << 21
"""Gaussian/tile pairs binned at a time, front to back, by the torch rasterizer (tiles already opaque are skipped)."""
CACHE_BYTES = 512 << 20
"""Memory the torch rasterizer's forward pass may keep for its backward (beyond it, the backward recomputes)."""

_RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")


@dataclass
class RasterMeta:
    """What :func:`rasterize` computed besides the images (gsplat's ``meta``, typed; also readable as a dict)."""

    means2d: Float[Tensor, "C N 2"]
    """Projected means in pixels; call ``retain_grad()`` before ``backward`` to read ``.grad`` (and ``.absgrad``)."""
    radii: Int[Tensor, "C N"]
    """3σ radius in pixels (int32), 0 for Gaussians culled in that camera."""
    depths: Float[Tensor, "C N"]
    """Camera-space z of each mean."""
    conics: Float[Tensor, "C N 3"]
    """Inverse blurred 2D covariance ``(a, b, c)``."""
    opacities: Float[Tensor, "C N"]
    """Opacities as composited (times the antialiasing compensation in ``antialiased`` mode)."""
    width: int
    height: int
    n_cameras: int
    tile_size: int
    backend: Literal["cuda-lib", "torch"]
    gaussian_ids: None = None
    """Always ``None``: the layout is gsplat's unpacked one (``packed=False``)."""
    camera_ids: None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Further entries gsplat's own ``meta`` holds (``isect_ids``, ``tile_width``, ...) on the ``cuda-lib`` backend."""

    def keys(self) -> list[str]:
        return [f.name for f in fields(self) if f.name != "extra"] + list(self.extra)

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def __getitem__(self, key: str) -> Any:
        if key in self.extra:
            return self.extra[key]
        if key == "extra" or key not in self.keys():
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return self[key] if key in self else default

    def visible(self) -> Tensor:
        """``[N]`` bool: Gaussians with a positive radius in at least one camera."""
        return (self.radii > 0).any(dim=0)


# The annotations document the shapes; runtime checkers (jaxtyping's import hook in the tests) are told to skip this
# boundary, which checks its inputs itself and says what is wrong in a ValueError.
@no_type_check
def rasterize(
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
    render_mode: RenderMode = "RGB",
    rasterize_mode: RasterizeMode = "classic",
    absgrad: bool = False,
    backend: Backend = "auto",
) -> tuple[Float[Tensor, "C H W X"], Float[Tensor, "C H W 1"], RasterMeta]:
    """Render ``N`` Gaussians into ``C`` images (gsplat 1.4.0 ``rasterization()`` semantics; see module docstring).

    Args:
        means: centres ``[N, 3]``.
        quats: rotations ``[N, 4]`` (``wxyz``, normalised inside; must not be 0).
        scales: standard deviations ``[N, 3]`` (``>= 0``).
        opacities: ``[N]`` in ``[0, 1]``.
        colors: features ``[N, D]``/``[C, N, D]``, or SH coefficients ``[N, K, 3]``/``[C, N, K, 3]`` when
            ``sh_degree`` is set.
        viewmats: world-to-camera ``[C, 4, 4]`` (OpenCV axes).
        Ks: intrinsics ``[C, 3, 3]``.
        width, height: image size.
        near_plane, far_plane: depth range of Gaussians kept.
        radius_clip: cull Gaussians whose pixel radius is ``<=`` this.
        eps2d: screen-space blur (px²) added to each 2D covariance.
        sh_degree: SH degree to evaluate (0..4), or ``None`` for plain features.
        backgrounds: ``[C, D]`` background colours (``None``: black / zero).
        render_mode: ``RGB``, ``D``, ``ED``, ``RGB+D`` or ``RGB+ED``.
        rasterize_mode: ``classic`` or ``antialiased`` (Mip-Splatting compensation).
        absgrad: also accumulate ``Σ|∂L/∂means2d|`` per pixel into ``meta.means2d.absgrad`` (AbsGS).
        backend: ``auto`` (gsplat on CUDA, torch elsewhere), ``torch`` or ``cuda-lib`` (gsplat, CUDA only).

    Returns:
        ``render_colors [C, H, W, X]`` (``X = D``, ``1`` or ``D + 1`` by mode), ``render_alphas [C, H, W, 1]`` and
        the :class:`RasterMeta`.

    Raises:
        ValueError: on malformed or non-finite inputs (see the module docstring).
    """
    n, c = _check_inputs(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane, far_plane, radius_clip,
        eps2d, sh_degree, backgrounds, render_mode, rasterize_mode, backend,
    )  # fmt: skip
    if use_cuda_lib(backend, means.device, "gsplat") and n > 0:
        return _rasterize_gsplat(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane, far_plane,
            radius_clip, eps2d, sh_degree, backgrounds, render_mode, rasterize_mode, absgrad,
        )  # fmt: skip
    return _rasterize_torch(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane, far_plane, radius_clip,
        eps2d, sh_degree, backgrounds, render_mode, rasterize_mode, absgrad,
    )  # fmt: skip


def _rasterize_torch(
    means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane, far_plane, radius_clip,
    eps2d, sh_degree, backgrounds, render_mode, rasterize_mode, absgrad,
):  # fmt: skip
    n, c = means.shape[0], viewmats.shape[0]
    proj = project_gaussians(
        means, quats, scales, viewmats, Ks, width, height, eps2d=eps2d, near_plane=near_plane,
        far_plane=far_plane, radius_clip=radius_clip, compensate=rasterize_mode == "antialiased",
    )  # fmt: skip
    opac = opacities.expand(c, n)
    if proj.compensations is not None:
        opac = opac * proj.compensations
    vis = torch.nonzero(proj.radii.reshape(-1) > 0).squeeze(1)  # flat index c * N + n
    cam, gid = vis // max(n, 1), vis % max(n, 1)

    # index_select, not x[vis]: its backward is index_add_, several times faster on CPU than index_put_
    def pick(x: Tensor, idx: Tensor) -> Tensor:
        return x.reshape(-1, *x.shape[2:]).index_select(0, idx) if x.shape[:2] == (c, n) else x.index_select(0, idx)

    feats = None
    if render_mode in ("RGB", "RGB+D", "RGB+ED"):
        per_camera = colors.dim() == (3 if sh_degree is None else 4)
        coeffs = pick(colors, vis) if per_camera else colors.index_select(0, gid)
        if sh_degree is None:
            feats = coeffs
        else:
            centres = torch.linalg.inv(viewmats)[:, :3, 3]
            dirs = means.index_select(0, gid) - centres.index_select(0, cam)
            feats = (eval_sh(sh_degree, dirs, coeffs) + 0.5).clamp_min(0.0)
    depths_v = pick(proj.depths, vis)[:, None]
    if render_mode in ("D", "ED"):
        feats = depths_v
    elif render_mode != "RGB":
        feats = torch.cat([feats, depths_v], dim=-1)

    means2d_v = pick(proj.means2d, vis)
    conics_v = pick(proj.conics, vis)
    opac_v = pick(opac, vis)
    fp = footprints(
        means2d_v.detach(), pick(proj.covars2d, vis), opac_v.detach(), pick(proj.radii, vis), depths_v[:, 0].detach(),
        cam, c, width, height, TILE_SIZE,
    )  # fmt: skip
    absgrad_target = None
    if absgrad:
        full = proj.means2d

        def absgrad_target(v_abs: Tensor) -> None:
            full.absgrad = torch.zeros_like(full).reshape(-1, 2).index_put((vis,), v_abs).reshape(full.shape)

    render, alphas = CompositeTiles.apply(
        means2d_v, conics_v, opac_v, feats.contiguous(), fp, width, height,
        (BATCH, MAX_BLOCK, CACHE_BYTES, SLICE_PAIRS), absgrad_target,
    )  # fmt: skip
    render = _finish(render, alphas, backgrounds, render_mode)
    meta = RasterMeta(
        means2d=proj.means2d, radii=proj.radii, depths=proj.depths, conics=proj.conics, opacities=opac,
        width=width, height=height, n_cameras=c, tile_size=TILE_SIZE, backend="torch",
    )  # fmt: skip
    return render, alphas, meta


def _finish(render: Tensor, alphas: Tensor, backgrounds: Tensor | None, render_mode: str) -> Tensor:
    """Add the background (depth channels get 0) and normalise expected depth."""
    if backgrounds is not None and render_mode not in ("D", "ED"):
        bg = backgrounds
        if render_mode != "RGB":
            bg = torch.cat([bg, bg.new_zeros(bg.shape[0], 1)], dim=-1)
        render = render + (1.0 - alphas) * bg[:, None, None, :]
    if render_mode in ("ED", "RGB+ED"):
        render = torch.cat([render[..., :-1], render[..., -1:] / alphas.clamp_min(1e-10)], dim=-1)
    return render


def _rasterize_gsplat(
    means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane, far_plane, radius_clip,
    eps2d, sh_degree, backgrounds, render_mode, rasterize_mode, absgrad,
):  # fmt: skip
    from gsplat.rendering import rasterization

    render, alphas, info = rasterization(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane=near_plane,
        far_plane=far_plane, radius_clip=radius_clip, eps2d=eps2d, sh_degree=sh_degree, packed=False,
        backgrounds=backgrounds, render_mode=render_mode, absgrad=absgrad, rasterize_mode=rasterize_mode,
    )  # fmt: skip
    named = {"means2d", "radii", "depths", "conics", "opacities", "width", "height", "n_cameras", "tile_size"}
    meta = RasterMeta(
        **{k: info[k] for k in named}, backend="cuda-lib",
        extra={k: v for k, v in info.items() if k not in named | {"gaussian_ids", "camera_ids"}},
    )  # fmt: skip
    return render, alphas, meta


def _shape(t: Tensor) -> tuple[int, ...]:
    return tuple(t.shape)


def _check_finite(name: str, t: Tensor) -> None:
    if not bool(torch.isfinite(t).all()):
        bad = int((~torch.isfinite(t)).sum())
        raise ValueError(f"{name} must be finite, got {bad} NaN or infinite value(s) in a tensor of shape {_shape(t)}")


def _check_inputs(
    means, quats, scales, opacities, colors, viewmats, Ks, width, height, near_plane, far_plane, radius_clip,
    eps2d, sh_degree, backgrounds, render_mode, rasterize_mode, backend,
) -> tuple[int, int]:  # fmt: skip
    """Validate :func:`rasterize`'s inputs; returns ``(N, C)``."""
    if means.dim() != 2 or means.shape[1] != 3:
        raise ValueError(f"means must have shape (N, 3), got {_shape(means)}")
    n = means.shape[0]
    for name, t, tail in (("quats", quats, (4,)), ("scales", scales, (3,)), ("opacities", opacities, ())):
        if _shape(t) != (n, *tail):
            raise ValueError(f"{name} must have shape {(n, *tail)} to match means {_shape(means)}, got {_shape(t)}")
    if viewmats.dim() != 3 or viewmats.shape[1:] != (4, 4):
        raise ValueError(f"viewmats must have shape (C, 4, 4), got {_shape(viewmats)}")
    c = viewmats.shape[0]
    if c == 0:
        raise ValueError("viewmats must hold at least one camera, got C = 0")
    if _shape(Ks) != (c, 3, 3):
        raise ValueError(f"Ks must have shape ({c}, 3, 3) to match viewmats {_shape(viewmats)}, got {_shape(Ks)}")
    for name, v in (("width", width), ("height", height)):
        if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if render_mode not in _RENDER_MODES:
        raise ValueError(f"render_mode must be one of {_RENDER_MODES}, got {render_mode!r}")
    if rasterize_mode not in ("classic", "antialiased"):
        raise ValueError(f"rasterize_mode must be 'classic' or 'antialiased', got {rasterize_mode!r}")
    check_backend(backend)
    if not 0 < near_plane < far_plane:
        raise ValueError(f"need 0 < near_plane < far_plane, got near_plane={near_plane}, far_plane={far_plane}")
    if eps2d < 0 or radius_clip < 0:
        raise ValueError(f"eps2d and radius_clip must be >= 0, got eps2d={eps2d}, radius_clip={radius_clip}")
    if sh_degree is None:
        if not ((colors.dim() == 2 and colors.shape[0] == n) or (colors.dim() == 3 and colors.shape[:2] == (c, n))):
            raise ValueError(f"colors must have shape (N, D) or (C, N, D) with N={n}, C={c}, got {_shape(colors)}")
    else:
        if not 0 <= sh_degree <= MAX_SH_DEGREE:
            raise ValueError(f"sh_degree must be None or in 0..{MAX_SH_DEGREE}, got {sh_degree}")
        ok = (colors.dim() == 3 and colors.shape[0] == n) or (colors.dim() == 4 and colors.shape[:2] == (c, n))
        if not ok or colors.shape[-1] != 3:
            raise ValueError(f"colors must be SH coefficients (N, K, 3) or (C, N, K, 3) with N={n}, C={c}, got {_shape(colors)}")
        if colors.shape[-2] < num_sh_bases(sh_degree):
            raise ValueError(
                f"sh_degree={sh_degree} needs K >= {num_sh_bases(sh_degree)} SH coefficients, got colors {_shape(colors)}"
            )
    channels = colors.shape[-1]
    if backgrounds is not None and _shape(backgrounds) != (c, channels):
        raise ValueError(f"backgrounds must have shape ({c}, {channels}) (C, D), got {_shape(backgrounds)}")
    tensors = {"means": means, "quats": quats, "scales": scales, "opacities": opacities, "colors": colors}
    tensors |= {"viewmats": viewmats, "Ks": Ks} | ({} if backgrounds is None else {"backgrounds": backgrounds})
    for name, t in tensors.items():
        if not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {t.dtype}")
        if t.device != means.device:
            raise ValueError(f"{name} is on {t.device} but means is on {means.device}; put all inputs on one device")
        if t.dtype != means.dtype:
            raise ValueError(f"{name} has dtype {t.dtype} but means has {means.dtype}; use one dtype")
        _check_finite(name, t)
    if bool((scales < 0).any()):
        raise ValueError(f"scales must be >= 0 (standard deviations, not log-scales), got {int((scales < 0).sum())} negative")
    if bool((quats.norm(dim=-1) == 0).any()):
        raise ValueError(f"quats must be non-zero (any norm), got {int((quats.norm(dim=-1) == 0).sum())} zero quaternion(s)")
    if bool((Ks[:, 0, 0] <= 0).any() | (Ks[:, 1, 1] <= 0).any()):
        raise ValueError("Ks must have positive focal lengths fx = K[0, 0] and fy = K[1, 1]")
    return n, c

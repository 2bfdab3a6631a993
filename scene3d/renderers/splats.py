"""A 3D Gaussian splat scene as raw parameters, and the pure functions around it (no nerfstudio objects).

The parameters are splatfacto's (and 3DGS's) raw, unconstrained tensors, keyed by name, one optimizer each:

    means [N, 3]   scales [N, 3] (log σ)   quats [N, 4] (wxyz, unnormalised)
    features_dc [N, 3] (SH degree-0 coefficient)   features_rest [N, K−1, 3]   opacities [N, 1] (logit)

so gsplat's densification strategies, splatfacto checkpoints and the 3DGS PLY layout all read them as they are.
:func:`render` activates them (``exp``, ``sigmoid``) and calls :func:`scene3d.renderers.gaussians.rasterize`.

Adding and removing Gaussians while keeping each Adam state in step with its parameter (what densification and
methods built on this model, such as ReGS, need) goes through :func:`append_gaussians` / :func:`remove_gaussians`.

Example:
    >>> import torch
    >>> params = init_from_points(torch.rand(50, 3), torch.randint(0, 255, (50, 3), dtype=torch.uint8), sh_degree=1)
    >>> sorted(params), tuple(params["features_rest"].shape)
    (['features_dc', 'features_rest', 'means', 'opacities', 'quats', 'scales'], (50, 3, 3))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, MutableMapping
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor

from scene3d.renderers.gaussians import RasterMeta, rasterize
from scene3d.renderers.gaussians_project import num_sh_bases, rgb_to_sh

PARAM_NAMES = ("means", "scales", "quats", "features_dc", "features_rest", "opacities")
"""The splat parameters, in the order checkpoints, exports and optimizers list them."""

Params = MutableMapping[str, torch.nn.Parameter] | torch.nn.ParameterDict
ParamsIn = Mapping[str, Tensor] | torch.nn.ParameterDict


def knn_mean_distance(xyz: Float[Tensor, "N 3"], k: int = 3) -> Float[Tensor, " N"]:
    """Mean distance of each point to its ``k`` nearest other points (3DGS's initial scale), via a k-d tree."""
    from scipy.spatial import cKDTree

    pts = xyz.detach().cpu().double().numpy()
    if len(pts) <= k:
        raise ValueError(f"need more than k={k} points to set initial scales, got {len(pts)}")
    dist, _ = cKDTree(pts).query(pts, k=k + 1)
    return torch.from_numpy(dist[:, 1:].mean(axis=1)).to(xyz)


def random_quats(n: int, generator: torch.Generator | None = None) -> Float[Tensor, "N 4"]:
    """Uniformly random unit quaternions (Shoemake's method)."""
    u, v, w = torch.rand(3, n, generator=generator)
    return torch.stack(
        [
            torch.sqrt(1 - u) * torch.sin(2 * math.pi * v),
            torch.sqrt(1 - u) * torch.cos(2 * math.pi * v),
            torch.sqrt(u) * torch.sin(2 * math.pi * w),
            torch.sqrt(u) * torch.cos(2 * math.pi * w),
        ],
        dim=-1,
    )


def init_from_points(
    xyz: Float[Tensor, "N 3"],
    rgb: Tensor | None,
    sh_degree: int,
    *,
    init_opacity: float = 0.1,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Raw parameters of one Gaussian per point: 3DGS initialisation (isotropic, σ = mean 3-NN distance).

    Args:
        xyz: point positions.
        rgb: point colours, uint8 ``[0, 255]`` or float ``[0, 1]``, ``[N, 3]``; ``None`` gives random colours.
        sh_degree: highest SH degree the scene will use (sets ``features_rest``'s size).
        init_opacity: initial opacity of every Gaussian.
        generator: for the random rotations (and colours).
    """
    n = xyz.shape[0]
    if rgb is None:
        colors = torch.rand(n, 3, generator=generator)
    else:
        if rgb.shape != (n, 3):
            raise ValueError(f"rgb must have shape ({n}, 3) to match xyz, got {tuple(rgb.shape)}")
        colors = rgb.float() / 255.0 if rgb.dtype == torch.uint8 else rgb.float()
    dist = knn_mean_distance(xyz.float()).clamp_min(1e-7)
    return {
        "means": xyz.float().clone(),
        "scales": torch.log(dist)[:, None].repeat(1, 3),
        "quats": random_quats(n, generator),
        "features_dc": rgb_to_sh(colors),
        "features_rest": torch.zeros(n, num_sh_bases(sh_degree) - 1, 3),
        "opacities": torch.full((n, 1), math.log(init_opacity / (1 - init_opacity))),
    }


def init_random(
    n: int,
    aabb: Float[Tensor, "2 3"],
    sh_degree: int,
    *,
    init_opacity: float = 0.1,
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    """Raw parameters of ``n`` Gaussians uniform in the box ``aabb`` (rows: min, max) with random colours."""
    lo, hi = aabb[0].float(), aabb[1].float()
    xyz = lo + (hi - lo) * torch.rand(n, 3, generator=generator)
    return init_from_points(xyz, None, sh_degree, init_opacity=init_opacity, generator=generator)


def activated(params: ParamsIn) -> dict[str, Tensor]:
    """What ``rasterize`` takes: means, quats, ``exp`` scales, ``sigmoid`` opacities ``[N]``, SH ``[N, K, 3]``."""
    return {
        "means": params["means"],
        "quats": params["quats"],
        "scales": torch.exp(params["scales"]),
        "opacities": torch.sigmoid(params["opacities"]).squeeze(-1),
        "colors": torch.cat([params["features_dc"][:, None, :], params["features_rest"]], dim=1),
    }


def viewmats_from_c2w(c2w: Float[Tensor, "C 3 4"]) -> Float[Tensor, "C 4 4"]:
    """World-to-camera matrices (OpenCV axes, what ``rasterize`` takes) of nerfstudio camera-to-worlds (OpenGL)."""
    rot = c2w[:, :3, :3] * torch.tensor([1.0, -1.0, -1.0], dtype=c2w.dtype, device=c2w.device)
    out = torch.zeros(c2w.shape[0], 4, 4, dtype=c2w.dtype, device=c2w.device)
    out[:, :3, :3] = rot.transpose(1, 2)
    out[:, :3, 3] = -(rot.transpose(1, 2) @ c2w[:, :3, 3:4])[..., 0]
    out[:, 3, 3] = 1.0
    return out


def render(
    params: ParamsIn,
    viewmats: Float[Tensor, "C 4 4"],
    Ks: Float[Tensor, "C 3 3"],
    width: int,
    height: int,
    *,
    sh_degree: int,
    background: Float[Tensor, "C 3"] | None = None,
    render_mode: Literal["RGB", "D", "ED", "RGB+D", "RGB+ED"] = "RGB",
    rasterize_mode: Literal["classic", "antialiased"] = "classic",
    absgrad: bool = False,
    backend: Literal["auto", "cuda-lib", "torch"] = "auto",
    mask: Tensor | None = None,
) -> tuple[Tensor, Tensor, RasterMeta]:
    """Render a splat scene from raw parameters (``sh_degree=0`` renders the DC colour only).

    ``mask`` (``[N]`` bool) renders a subset (a crop box); ``meta`` then indexes that subset.
    """
    a = activated(params)
    if mask is not None:
        a = {k: v[mask] for k, v in a.items()}
    return rasterize(
        a["means"], a["quats"], a["scales"], a["opacities"], a["colors"], viewmats, Ks, width, height,
        sh_degree=sh_degree, backgrounds=background, render_mode=render_mode, rasterize_mode=rasterize_mode,
        absgrad=absgrad, backend=backend,
    )  # fmt: skip


@torch.no_grad()
def update_params_and_optimizers(
    params: Params,
    optimizers: Mapping[str, torch.optim.Optimizer],
    param_fn: Callable[[str, Tensor], Tensor],
    state_fn: Callable[[str, Tensor], Tensor],
    names: tuple[str, ...] | None = None,
) -> None:
    """Replace each parameter by ``param_fn(name, p)`` and each of its per-element optimizer states (Adam's
    ``exp_avg``, ``exp_avg_sq``) by ``state_fn(key, state)``, keeping optimizer and parameter in step.
    """
    for name in names or tuple(params.keys()):
        old = params[name]
        new = torch.nn.Parameter(param_fn(name, old.detach()), requires_grad=old.requires_grad)
        opt = optimizers.get(name)
        if opt is not None:
            for group in opt.param_groups:
                if group["params"][0] is not old:
                    continue
                state = opt.state.pop(old, {})
                for key, value in state.items():
                    if key != "step" and isinstance(value, Tensor) and value.shape[:1] == old.shape[:1]:
                        state[key] = state_fn(key, value)
                group["params"] = [new]
                opt.state[new] = state
        params[name] = new


def append_gaussians(params: Params, optimizers: Mapping[str, torch.optim.Optimizer], new: Mapping[str, Tensor]) -> None:
    """Append Gaussians (raw values for every parameter); their optimizer states start at zero."""
    counts = {int(v.shape[0]) for v in new.values()}
    if set(new) != set(params) or len(counts) != 1:
        raise ValueError(f"new must hold every parameter {sorted(params)} with one length, got {sorted(new)} / {counts}")
    n_new = counts.pop()
    update_params_and_optimizers(
        params,
        optimizers,
        lambda name, p: torch.cat([p, new[name].to(p)]),
        lambda key, s: torch.cat([s, s.new_zeros(n_new, *s.shape[1:])]),
    )


def remove_gaussians(params: Params, optimizers: Mapping[str, torch.optim.Optimizer], mask: Tensor) -> None:
    """Remove the Gaussians where ``mask`` (``[N]`` bool) is true, with their optimizer states."""
    n = params["means"].shape[0]
    if mask.shape != (n,) or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor of shape ({n},), got {mask.dtype} {tuple(mask.shape)}")
    keep = ~mask
    update_params_and_optimizers(params, optimizers, lambda name, p: p[keep], lambda key, s: s[keep])

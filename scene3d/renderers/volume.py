"""Volume rendering: from densities along rays to weights, colours, depth and opacity.

The quadrature is the one of NeRF (Mildenhall et al. 2020, Eq. 3):

    α_i = 1 − exp(−σ_i δ_i),   T_i = ∏_{j<i} (1 − α_j),   w_i = T_i α_i,   C = Σ_i w_i c_i.

Two layouts are supported, with the same maths:

* dense: ``(R, S)`` samples per ray (EpiGRAF, uniform sampling);
* packed: a flat list of samples with a sorted ``ray_indices`` vector (occupancy-grid marching, where rays keep
  different numbers of samples). This is nerfacc's layout; :func:`composite_packed` is the torch twin of
  ``nerfacc.render_weight_from_alpha`` + ``accumulate_along_rays``.

Example:
    >>> import torch
    >>> sigmas, deltas = torch.full((2, 4), 10.0), torch.full((2, 4), 0.1)
    >>> weights, trans = composite_dense(alphas_from_densities(sigmas, deltas))
    >>> bool(torch.allclose(weights.sum(-1), 1 - torch.exp(torch.tensor(-4.0))))
    True
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from scene3d.core.backends import Backend, use_cuda_lib


def alphas_from_densities(densities: Float[Tensor, "*batch"], deltas: Float[Tensor, "*batch"]) -> Float[Tensor, "*batch"]:
    """``α = 1 − exp(−σ δ)`` (NeRF Eq. 3), computed as ``−expm1(−σδ)`` for accuracy at small ``σδ``."""
    return -torch.expm1(-(densities * deltas))


def composite_dense(alphas: Float[Tensor, "R S"]) -> tuple[Float[Tensor, "R S"], Float[Tensor, "R S"]]:
    """Per-sample weights ``w_i = T_i α_i`` and transmittance ``T_i`` for ``S`` ordered samples on each ray."""
    survive = 1.0 - alphas
    trans = torch.cumprod(torch.cat([torch.ones_like(alphas[:, :1]), survive[:, :-1]], dim=-1), dim=-1)
    return trans * alphas, trans


def ray_offsets(ray_indices: Int[Tensor, " n"], n_rays: int) -> Int[Tensor, " R"]:
    """Index of each ray's first sample in a packed layout (``ray_indices`` sorted); empty rays point past."""
    counts = torch.bincount(ray_indices, minlength=n_rays)
    return torch.cumsum(counts, 0) - counts


def composite_packed(
    alphas: Float[Tensor, " n"],
    ray_indices: Int[Tensor, " n"],
    n_rays: int,
    *,
    backend: Backend = "auto",
) -> tuple[Float[Tensor, " n"], Float[Tensor, " n"]]:
    """Weights and transmittance for packed samples (``ray_indices`` sorted, samples ordered along each ray).

    ``T_i`` is an exclusive product within each ray, computed as an exclusive cumulative sum of ``log(1 − α)``
    minus each ray's starting offset, so the whole batch is one vectorised pass. The running sum is kept in
    float64: over thousands of opaque rays it reaches ~10⁵–10⁶, where float32 would lose whole percent of ``T``.

    ``backend``: ``"auto"`` calls ``nerfacc.render_weight_from_alpha`` on CUDA tensors (when nerfacc imports),
    ``"torch"`` always runs this twin, ``"cuda-lib"`` demands nerfacc.
    """
    if alphas.shape != ray_indices.shape:
        raise ValueError(f"alphas and ray_indices must have the same shape, got {tuple(alphas.shape)} and {tuple(ray_indices.shape)}")
    if use_cuda_lib(backend, alphas.device, "nerfacc"):
        import nerfacc

        weights, trans = nerfacc.render_weight_from_alpha(alphas, ray_indices=ray_indices, n_rays=n_rays)
        return weights, trans
    if alphas.numel() == 0:
        return alphas.clone(), alphas.clone()
    log_survive = torch.log1p(-alphas.clamp(max=1.0 - 1e-7))
    inclusive = torch.cumsum(log_survive.double(), dim=0)
    exclusive = inclusive - log_survive
    start = ray_offsets(ray_indices, n_rays)[ray_indices]
    # exclusive sum at each ray's first sample, subtracted so every ray starts at T = 1
    base = exclusive[start]
    trans = torch.exp(exclusive - base).to(alphas.dtype)
    return trans * alphas, trans


def visibility_packed(
    alphas: Float[Tensor, " n"],
    ray_indices: Int[Tensor, " n"],
    n_rays: int,
    *,
    early_stop_eps: float | int = 1e-4,
    alpha_threshold: float | int = 0.0,
) -> Bool[Tensor, " n"]:
    """Samples worth shading: transmittance ``T_i ≥ early_stop_eps`` and ``α_i ≥ alpha_threshold``.

    The torch twin of ``nerfacc.render_visibility_from_alpha`` (Instant-NGP's early ray termination and
    empty-sample skipping). Not differentiable.
    """
    with torch.no_grad():
        _, trans = composite_packed(alphas, ray_indices, n_rays)
        keep = trans >= early_stop_eps
        if alpha_threshold > 0.0:
            keep &= alphas >= alpha_threshold
    return keep


def accumulate(
    weights: Float[Tensor, " n"],
    values: Float[Tensor, "n C"] | None,
    ray_indices: Int[Tensor, " n"],
    n_rays: int,
) -> Float[Tensor, "R C"]:
    """``Σ_i w_i v_i`` per ray for packed samples (``values=None`` sums the weights: the opacity)."""
    src = weights[:, None] if values is None else weights[:, None] * values
    out = torch.zeros(n_rays, src.shape[-1], dtype=src.dtype, device=src.device)
    return out.index_add(0, ray_indices, src)


def sample_pdf(
    bins: Float[Tensor, "R E"],
    weights: Float[Tensor, "R B"],
    num_samples: int,
    *,
    deterministic: bool = False,
    eps: float = 1e-5,
    generator: torch.Generator | None = None,
) -> Float[Tensor, "R S"]:
    """Importance sampling by inverse transform (NeRF's hierarchical sampling, Mildenhall et al. 2020, §5.2).

    Each ray's piecewise-constant density is ``p(t) ∝ w_j`` on ``[bins_j, bins_{j+1})``. With the CDF
    ``F(bins_j) = Σ_{k<j} ŵ_k`` (``ŵ = (w + eps) / Σ(w + eps)``), a uniform ``u`` maps to
    ``t = bins_j + (u − F_j) / ŵ_j · (bins_{j+1} − bins_j)`` for the ``j`` with ``F_j ≤ u < F_{j+1}``.

    Args:
        bins: ``B + 1`` sorted bin edges per ray.
        weights: ``B`` non-negative weights per ray (need not sum to one).
        num_samples: samples to draw per ray.
        deterministic: use the stratified mid-points ``u = (i + ½) / num_samples`` instead of uniform noise.
        eps: added to every weight, so all-zero rays sample uniformly.
        generator: random generator for the uniform draws.

    Returns:
        ``(R, num_samples)`` samples, sorted when ``deterministic`` (otherwise in draw order).

    Example:
        >>> bins = torch.tensor([[0.0, 1.0, 2.0]])
        >>> sample_pdf(bins, torch.tensor([[0.0, 1.0]]), 2, deterministic=True, eps=0.0)
        tensor([[1.2500, 1.7500]])
    """
    if bins.shape[-1] != weights.shape[-1] + 1:
        raise ValueError(f"bins must have one more entry than weights per ray, got {bins.shape[-1]} and {weights.shape[-1]}")
    if num_samples <= 0:
        raise ValueError(f"num_samples must be positive, got {num_samples}")
    weights = weights + eps
    pdf = weights / weights.sum(dim=-1, keepdim=True)
    cdf = torch.cat([torch.zeros_like(pdf[:, :1]), torch.cumsum(pdf, dim=-1)], dim=-1)  # (R, B+1)
    n_rays, n_bins = weights.shape
    if deterministic:
        u = (torch.arange(num_samples, device=bins.device, dtype=bins.dtype) + 0.5) / num_samples
        u = u.expand(n_rays, num_samples).contiguous()
    else:
        u = torch.rand(n_rays, num_samples, device=bins.device, dtype=bins.dtype, generator=generator)
    # index of the bin holding u: the last edge with F_j <= u
    idx = torch.searchsorted(cdf.contiguous(), u, right=True) - 1
    idx = idx.clamp(0, n_bins - 1)
    cdf_lo = torch.gather(cdf, 1, idx)
    cdf_hi = torch.gather(cdf, 1, idx + 1)
    bin_lo = torch.gather(bins, 1, idx)
    bin_hi = torch.gather(bins, 1, idx + 1)
    denom = cdf_hi - cdf_lo
    frac = torch.where(denom > 0, (u - cdf_lo) / denom.clamp_min(1e-12), torch.zeros_like(u))
    return bin_lo + frac.clamp(0.0, 1.0) * (bin_hi - bin_lo)

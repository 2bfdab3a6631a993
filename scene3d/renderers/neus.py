"""Samples along rays through a bounding sphere, and NeuS's opacity from signed distances (Wang et al., NeurIPS 2021).

NeuS renders an SDF ``f`` with the S-density ``φ_s = Φ_s'`` of the logistic CDF ``Φ_s(x) = sigmoid(s x)``; its
discrete opacity between consecutive samples (Eq. 13) is

    α_i = max( (Φ_s(f(p_i)) − Φ_s(f(p_{i+1}))) / Φ_s(f(p_i)), 0 ),

and the colour is composited as in NeRF (``T_i = Π_{j<i}(1 − α_j)``, ``w_i = T_i α_i``). ``s`` (the *sharpness*,
``1/s`` the standard deviation of ``φ_s``) is learned: it grows as the surface converges, so the weights
concentrate at the zero level set.

This module evaluates Eq. 13 as written, with ``f`` at the *ends* of each section (the edges of the samples). The
official code (``models/renderer.py``) instead evaluates ``f`` at section mid points only and estimates the end
values from the directional derivative ``∇f · d`` with an annealed cosine; it does so to share one field evaluation
between opacity and colour. Here colour is taken at the same edges (a section's colour is the mean of its two
ends), so one field evaluation per edge serves both and no gradient of ``f`` is needed to render; the edge form is
also exact for any ``f`` that is linear along the section, at any sharpness. The learnable sharpness is
``s = exp(10 · v)`` with ``v`` a parameter (the official ``SingleVarianceNetwork``, ``v₀ = 0.3``).

Example:
    >>> import torch
    >>> t = torch.linspace(0.0, 2.0, 65)[None]                 # one ray along +x from x = −1
    >>> sdf = (t - 1.0).abs() - 0.5                             # a slab |x| < 0.5, entered at t = 0.5
    >>> alphas = neus_alphas(sdf, torch.tensor(200.0))
    >>> weights = alphas * torch.cumprod(torch.cat([torch.ones(1, 1), 1 - alphas[:, :-1]], 1), 1)
    >>> mids = 0.5 * (t[:, 1:] + t[:, :-1])
    >>> round(float((weights * mids).sum() / weights.sum()), 2)
    0.5
"""

from __future__ import annotations

import torch
from jaxtyping import Bool, Float
from torch import Tensor


def sphere_bounds(
    origins: Float[Tensor, "R 3"],
    directions: Float[Tensor, "R 3"],
    center: Float[Tensor, "3"],
    radius: float,
    near: float = 0.0,
) -> tuple[Float[Tensor, " R"], Float[Tensor, " R"], Bool[Tensor, " R"]]:
    """Entry and exit distances of unit-direction rays through a sphere, and which rays hit it.

    Rays that miss get ``t_near = t_far``; ``t_near`` is at least ``near``.
    """
    oc = origins - center
    b = (oc * directions).sum(-1)
    c = (oc * oc).sum(-1) - radius * radius
    disc = b * b - c
    hit = disc > 0
    root = disc.clamp_min(0.0).sqrt()
    t_near = (-b - root).clamp_min(near)
    t_far = (-b + root).clamp_min(near)
    hit = hit & (t_far > t_near)
    t_far = torch.where(hit, t_far, t_near)
    return t_near, t_far, hit


def stratified_samples(
    t_near: Float[Tensor, " R"],
    t_far: Float[Tensor, " R"],
    n_samples: int,
    *,
    stratified: bool = False,
    generator: torch.Generator | None = None,
) -> Float[Tensor, "R E"]:
    """``n_samples + 1`` section edges per ray, evenly spaced over ``[t_near, t_far]`` (jittered as one
    stratified offset per ray when ``stratified``, which keeps the edges sorted and the end points inside)."""
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    u = torch.linspace(0.0, 1.0, n_samples + 1, device=t_near.device, dtype=t_near.dtype)
    edges = t_near[:, None] + (t_far - t_near)[:, None] * u[None]
    if stratified:
        step = (t_far - t_near)[:, None] / n_samples
        jitter = torch.rand(t_near.shape[0], 1, generator=generator, device=t_near.device, dtype=t_near.dtype)
        inner = edges[:, 1:-1] + (jitter - 0.5) * step
        edges = torch.cat([edges[:, :1], inner, edges[:, -1:]], dim=-1)
    return edges


def inv_sharpness(variance: Float[Tensor, ""]) -> Float[Tensor, ""]:
    """NeuS's sharpness ``s = exp(10 · v)`` from the learnable variance parameter ``v``."""
    return torch.exp(10.0 * variance)


def neus_alphas(sdf: Float[Tensor, "R E"], sharpness: Float[Tensor, ""]) -> Float[Tensor, "R S"]:
    """NeuS's discrete opacity (Eq. 13) of the ``S = E − 1`` sections between consecutive edges of each ray.

    ``α_i = max((Φ_s(f_i) − Φ_s(f_{i+1})) / Φ_s(f_i), 0)`` with ``Φ_s(x) = sigmoid(s x)``; the official code's
    ``1e-5`` keeps the ratio finite where both values vanish (deep inside).

    Args:
        sdf: ``f`` at the section edges, ordered along each ray.
        sharpness: ``s`` (see :func:`inv_sharpness`).
    """
    if sdf.shape[-1] < 2:
        raise ValueError(f"sdf needs at least two edges per ray, got shape {tuple(sdf.shape)}")
    cdf = torch.sigmoid(sdf * sharpness)
    prev_cdf, next_cdf = cdf[..., :-1], cdf[..., 1:]
    return ((prev_cdf - next_cdf + 1e-5) / (prev_cdf + 1e-5)).clamp(0.0, 1.0)

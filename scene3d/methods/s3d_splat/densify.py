"""Densification: gsplat's ``DefaultStrategy`` (runs on CPU as it is) and MCMC with a torch twin for CPU.

gsplat 1.4.0's ``DefaultStrategy`` (clone/split/prune/opacity reset, Kerbl et al. 2023) is plain torch and is used
unchanged on every device. Its ``MCMCStrategy`` (Kheradmand et al. 2024, "3D Gaussian Splatting as Markov Chain
Monte Carlo") calls two CUDA kernels: ``compute_relocation`` (the paper's Eq. 9) and ``quat_scale_to_covar_preci``
(for the position noise). :class:`TorchMCMCStrategy` is the same strategy with both replaced by torch
(:func:`relocation_scales`, :func:`scene3d.renderers.gaussians_project.covariances`); :func:`make_strategy`
picks gsplat's on CUDA and the twin elsewhere.

Relocation (Eq. 9): a Gaussian of opacity ``o`` and scale ``s`` sampled ``n`` times is replaced by ``n`` copies of

    o' = 1 − (1 − o)^(1/n),    s' = o / (Σ_{i=1}^{n} Σ_{k=0}^{i−1} C(i−1, k) (−1)^k o'^(k+1) / sqrt(k+1)) · s.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

import torch
from gsplat.strategy import DefaultStrategy, MCMCStrategy
from jaxtyping import Float, Int
from torch import Tensor

from scene3d.renderers.splats import Params, update_params_and_optimizers
from scene3d.renderers.gaussians_project import covariances

N_MAX = 51
"""Largest relocation multiplicity (gsplat's table size); counts above it are clamped, as in gsplat."""


def binomial_table(n_max: int = N_MAX) -> Float[Tensor, "n n"]:
    """``C(n, k)`` for ``0 <= k <= n < n_max`` (zeros elsewhere)."""
    table = torch.zeros(n_max, n_max)
    for n in range(n_max):
        for k in range(n + 1):
            table[n, k] = math.comb(n, k)
    return table


def relocation_scales(
    opacities: Float[Tensor, " N"], scales: Float[Tensor, "N 3"], ratios: Int[Tensor, " N"], binoms: Float[Tensor, "n n"]
) -> tuple[Float[Tensor, " N"], Float[Tensor, "N 3"]]:
    """Torch twin of gsplat's ``compute_relocation`` kernel: new opacities and scales (MCMC paper, Eq. 9)."""
    n_max = binoms.shape[0]
    n = ratios.clamp(1, n_max).to(opacities.dtype)
    new_opac = 1.0 - torch.pow(1.0 - opacities, 1.0 / n)
    # Σ_{i=1}^{n} Σ_{k=0}^{i-1} C(i-1,k) (-1)^k o'^(k+1)/sqrt(k+1) = Σ_k o'^(k+1) (-1)^k/sqrt(k+1) Σ_{i=k+1}^{n} C(i-1,k)
    i = torch.arange(1, n_max + 1, device=opacities.device)
    k = torch.arange(n_max, device=opacities.device)
    b = binoms.to(opacities)  # b[i-1, k]
    in_range = (i[None, :] <= n[:, None]).to(opacities.dtype)  # [N, n_max] over i
    per_k = in_range @ b  # [N, n_max]: Σ_{i<=n} C(i-1, k)
    terms = torch.pow(new_opac[:, None], (k + 1).to(opacities.dtype)) * ((-1.0) ** k / torch.sqrt(k + 1.0)).to(opacities)
    denom = (per_k * terms).sum(-1)
    return new_opac, (opacities / denom)[:, None] * scales


def _sample(weights: Tensor, n: int) -> Tensor:
    return torch.multinomial(weights, n, replacement=True)


@torch.no_grad()
def _relocated(params: Params, sampled: Tensor, binoms: Tensor, min_opacity: float) -> tuple[Tensor, Tensor]:
    opac = torch.sigmoid(params["opacities"].flatten())
    ratios = torch.bincount(sampled, minlength=len(opac))[sampled] + 1
    new_opac, new_scales = relocation_scales(opac[sampled], torch.exp(params["scales"])[sampled], ratios, binoms)
    eps = torch.finfo(torch.float32).eps
    return torch.logit(new_opac.clamp(min_opacity, 1.0 - eps)), torch.log(new_scales)


@torch.no_grad()
def relocate(params: Params, optimizers: dict, dead: Tensor, binoms: Tensor, min_opacity: float) -> None:
    """Move dead Gaussians onto live ones sampled by opacity, splitting opacity and scale (gsplat's ``relocate``)."""
    opac = torch.sigmoid(params["opacities"].flatten())
    dead_idx, alive_idx = dead.nonzero(as_tuple=True)[0], (~dead).nonzero(as_tuple=True)[0]
    if len(alive_idx) == 0 or len(dead_idx) == 0:
        return
    sampled = alive_idx[_sample(opac[alive_idx], len(dead_idx))]
    new_logit, new_log_scale = _relocated(params, sampled, binoms, min_opacity)

    def param_fn(name: str, p: Tensor) -> Tensor:
        p = p.clone()
        if name == "opacities":
            p[sampled] = new_logit[:, None].to(p)
        elif name == "scales":
            p[sampled] = new_log_scale.to(p)
        p[dead_idx] = p[sampled]
        return p

    def state_fn(key: str, s: Tensor) -> Tensor:
        s = s.clone()
        s[sampled] = 0
        return s

    update_params_and_optimizers(params, optimizers, param_fn, state_fn)


@torch.no_grad()
def sample_add(params: Params, optimizers: dict, n: int, binoms: Tensor, min_opacity: float) -> None:
    """Add ``n`` Gaussians by relocation from existing ones sampled by opacity (gsplat's ``sample_add``)."""
    opac = torch.sigmoid(params["opacities"].flatten())
    sampled = _sample(opac, n)
    new_logit, new_log_scale = _relocated(params, sampled, binoms, min_opacity)

    def param_fn(name: str, p: Tensor) -> Tensor:
        p = p.clone()
        if name == "opacities":
            p[sampled] = new_logit[:, None].to(p)
        elif name == "scales":
            p[sampled] = new_log_scale.to(p)
        return torch.cat([p, p[sampled]])

    def state_fn(key: str, s: Tensor) -> Tensor:
        return torch.cat([s, s.new_zeros(n, *s.shape[1:])])

    update_params_and_optimizers(params, optimizers, param_fn, state_fn)


@torch.no_grad()
def inject_noise(params: Params, scaler: float) -> None:
    """SGLD position noise ``Σ ε · sigmoid(−100 (o − 0.005))·scaler`` (MCMC paper, Eq. 10; gsplat's form)."""
    opac = torch.sigmoid(params["opacities"].flatten())
    covar = covariances(params["quats"], torch.exp(params["scales"]))
    gate = 1.0 / (1.0 + torch.exp(-100.0 * ((1.0 - opac) - 0.995)))
    noise = torch.randn_like(params["means"]) * gate[:, None] * scaler
    params["means"].add_(torch.einsum("nij,nj->ni", covar, noise))


@dataclass
class TorchMCMCStrategy(MCMCStrategy):
    """gsplat's ``MCMCStrategy`` with its CUDA-only steps (relocation, noise covariance) done in torch."""

    def step_post_backward(self, params, optimizers, state, step, info, lr):  # type: ignore[override]
        binoms = state["binoms"] = state["binoms"].to(params["means"].device)
        if self.refine_start_iter < step < self.refine_stop_iter and step % self.refine_every == 0:
            self._relocate_gs(params, optimizers, binoms)
            self._add_new_gs(params, optimizers, binoms)
        inject_noise(params, lr * self.noise_lr)

    @torch.no_grad()
    def _relocate_gs(self, params, optimizers, binoms) -> int:  # type: ignore[override]
        dead = torch.sigmoid(params["opacities"].flatten()) <= self.min_opacity
        relocate(params, optimizers, dead, binoms, self.min_opacity)
        return int(dead.sum())

    @torch.no_grad()
    def _add_new_gs(self, params, optimizers, binoms) -> int:  # type: ignore[override]
        current = len(params["means"])
        n = max(0, min(self.cap_max, int(1.05 * current)) - current)
        if n > 0:
            sample_add(params, optimizers, n, binoms, self.min_opacity)
        return n


def make_strategy(kind: Literal["default", "mcmc"], device: torch.device | str, **options: Any) -> DefaultStrategy | MCMCStrategy:
    """gsplat's ``DefaultStrategy``, or MCMC (gsplat's on CUDA, :class:`TorchMCMCStrategy` elsewhere)."""
    if kind == "default":
        return DefaultStrategy(**options)
    if kind == "mcmc":
        return MCMCStrategy(**options) if torch.device(device).type == "cuda" else TorchMCMCStrategy(**options)
    raise ValueError(f"strategy must be 'default' or 'mcmc', got {kind!r}")

"""Deterministic DDIM sampling and DDIM inversion (Song et al. 2021; inversion as in null-text inversion, Mokady
et al. 2023), as MasaCtrl and QNeRF use them to regenerate a real image under new conditions.

The DDIM update with η = 0 (Song et al. 2021, Eq. 12) maps ``x_a`` at ᾱ_a to ``x_b`` at ᾱ_b through the predicted
clean latent::

    x̂_0 = (x_a − √(1 − ᾱ_a) ε) / √ᾱ_a,        x_b = √ᾱ_b x̂_0 + √(1 − ᾱ_b) ε

Sampling runs it from high noise to low; inversion runs it from the clean latent upwards, evaluating ε at the
current latent with the *target* timestep (the usual approximation ε(x_{t−1}, t) ≈ ε(x_t, t), as in diffusers'
``DDIMInverseScheduler``). Both use the same pairs ``(ᾱ_t, ᾱ_{t−Δ})`` from the prior's scheduler config (with
``final_alpha_cumprod`` below the first timestep), so sampling inverted latents with the same prompt, steps and
guidance reconstructs the input up to that approximation.

Example:
    >>> from scene3d.priors.loading import load_diffusion
    >>> sd = load_diffusion("tiny-random")
    >>> emb = sd.embed("a chair")
    >>> z0 = torch.randn(1, 4, 8, 8)
    >>> inv = ddim_invert(sd, z0, emb, num_inference_steps=20)
    >>> rec = ddim_sample(sd, inv.latents, emb, num_inference_steps=20)
    >>> bool((rec - z0).abs().mean() < 0.1 * z0.abs().mean())                  # doctest: +SKIP
    True
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor

from scene3d.priors.diffusion import ControlInput, StableDiffusionPrior
from scene3d.priors.sampling import StepHook
from scene3d.priors.text import PromptEmbeddings


@dataclass
class InversionOutput:
    latents: Float[Tensor, "B C h w"]
    """``x_T``: the inverted latents at the last (noisiest) timestep."""
    trajectory: list[Float[Tensor, "B C h w"]]
    """``[x_0, x_{t_1}, …, x_T]``: every intermediate latent, lowest noise first (cached by MasaCtrl/QNeRF)."""
    timesteps: Int[Tensor, " S"]
    """The timesteps of ``trajectory[1:]``, ascending."""


def ddim_timesteps(prior: StableDiffusionPrior, num_inference_steps: int) -> Int[Tensor, " S"]:
    """The prior's DDIM timesteps, descending (``scheduler.set_timesteps``; leading/trailing spacing as configured)."""
    prior.scheduler.set_timesteps(num_inference_steps, device=prior.device)
    return prior.scheduler.timesteps.long()


def _alpha_pairs(prior: StableDiffusionPrior, timesteps: Tensor) -> tuple[Tensor, Tensor]:
    """``ᾱ_t`` and ``ᾱ`` of the step below each ``t`` (``final_alpha_cumprod`` below the first), fp32."""
    alphas = prior.alphas_cumprod()
    final = torch.as_tensor(getattr(prior.scheduler, "final_alpha_cumprod", alphas[0]), device=alphas.device).float()
    step = prior.num_train_timesteps // len(timesteps)
    prev = timesteps - step
    a_t = alphas[timesteps]
    a_prev = torch.where(prev >= 0, alphas[prev.clamp_min(0)], final)
    return a_t, a_prev


def ddim_step(
    x: Float[Tensor, "B C h w"], eps: Float[Tensor, "B C h w"], alpha_from: Tensor, alpha_to: Tensor
) -> Float[Tensor, "B C h w"]:
    """Move ``x`` from ᾱ = ``alpha_from`` to ᾱ = ``alpha_to`` along the DDIM (η = 0) trajectory of noise ``eps``."""
    x0 = (x - (1.0 - alpha_from).sqrt() * eps) / alpha_from.sqrt()
    return alpha_to.sqrt() * x0 + (1.0 - alpha_to).sqrt() * eps


@torch.no_grad()
def ddim_invert(
    prior: StableDiffusionPrior,
    latents: Float[Tensor, "B C h w"],
    embeddings: PromptEmbeddings,
    *,
    num_inference_steps: int = 50,
    guidance_scale: float = 1.0,
    control: ControlInput | None = None,
    fixed_point_iterations: int = 0,
) -> InversionOutput:
    """Invert clean latents ``x_0`` to ``x_T`` with DDIM (guidance 1 is the standard, stable choice).

    Args:
        fixed_point_iterations: refine each step by solving ``x_t = Φ(x_{t−Δ}, ε(x_t, t))`` with this many
            fixed-point iterations (AIDI, Pan et al. 2023; ReNoise, Garibi et al. 2024) instead of using
            ``ε(x_{t−Δ}, t)``; 0 is plain DDIM inversion. Each iteration costs one more UNet call per step.
    """
    if fixed_point_iterations < 0:
        raise ValueError(f"fixed_point_iterations must be >= 0, got {fixed_point_iterations}")
    ts = ddim_timesteps(prior, num_inference_steps).flip(0)
    a_t, a_prev = _alpha_pairs(prior, ts)
    x = latents.to(prior.device, torch.float32)
    trajectory = [x]
    for i, t in enumerate(ts):
        x_next = x
        for _ in range(1 + fixed_point_iterations):
            eps = prior.predict_noise(x_next, t, embeddings, guidance_scale, control=control).eps
            x_next = ddim_step(x, eps, a_prev[i], a_t[i])
        x = x_next
        trajectory.append(x)
    return InversionOutput(latents=x, trajectory=trajectory, timesteps=ts)


def ddim_sample(
    prior: StableDiffusionPrior,
    latents: Float[Tensor, "B C h w"],
    embeddings: PromptEmbeddings,
    *,
    num_inference_steps: int = 50,
    guidance_scale: float = 1.0,
    control: ControlInput | None = None,
    on_step: StepHook | None = None,
) -> Float[Tensor, "B C h w"]:
    """Deterministic DDIM sampling from ``x_T`` (e.g. :attr:`InversionOutput.latents`) to ``x_0``.

    ``on_step(i, t, latents)`` runs before each noise prediction and may return replacement latents; the
    prediction itself runs under ``torch.no_grad`` (a hook that needs gradients, such as
    :func:`scene3d.priors.attention.soft_query_injection`, enables them itself).
    """
    ts = ddim_timesteps(prior, num_inference_steps)
    a_t, a_prev = _alpha_pairs(prior, ts)
    x = latents.to(prior.device, torch.float32)
    for i, t in enumerate(ts):
        if on_step is not None:
            replaced = on_step(i, t, x)
            x = x if replaced is None else replaced.detach()
        with torch.no_grad():
            eps = prior.predict_noise(x, t, embeddings, guidance_scale, control=control).eps
        x = ddim_step(x, eps, a_t[i], a_prev[i])
    return x

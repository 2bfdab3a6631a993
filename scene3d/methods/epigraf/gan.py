"""EpiGRAF's GAN objective and training-loop maths, free of nerfstudio (official ``loss.py``, ``training_loop.py``).

* patch rendering of fakes: rays for the patch's scale and offset (:func:`render_fake_patches`);
* non-saturating logistic loss: ``L_G = softplus(−D(G(z)))``, ``L_D = softplus(D(G(z))) + softplus(−D(x))``;
* R1 (Mescheder et al. 2018): ``γ/2 · ‖∇_x D(x)‖²`` on real patches, applied lazily every ``k`` steps with weight
  ``k`` (StyleGAN2's lazy regularisation; the optimizer's lr and betas are scaled by ``k/(k+1)`` accordingly);
* D-input blur: a Gaussian of σ fading linearly from ``blur_sigma`` to 0 (StyleGAN3 / official ``run_D``);
* EMA of G with half-life ``ema_images`` images, ramped up as ``min(ema_images, 0.05 · images_seen)``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from scene3d.core.cameras import pinhole_rays
from scene3d.methods.epigraf.discriminator import PatchDiscriminator
from scene3d.methods.epigraf.generator import NoiseMode, TriPlaneGenerator
from scene3d.methods.epigraf.layers import gaussian_blur2d
from scene3d.methods.epigraf.patches import PatchParams, patch_intrinsics
from scene3d.renderers.hierarchical import RayRender, RaySettings, render_rays


@dataclass(frozen=True)
class Views:
    """Per-sample cameras: pose, intrinsics of the full ``R × R`` image, and ray bounds."""

    c2w: Float[Tensor, "B 4 4"]
    K: Float[Tensor, "B 3 3"]
    near: Float[Tensor, " B"]
    far: Float[Tensor, " B"]


@dataclass(frozen=True)
class PatchRender:
    """Rendered patches: images in ``[−1, 1]`` space, and per-pixel depth and opacity."""

    images: Float[Tensor, "B 3 r r"]
    depth: Float[Tensor, "B r r"]
    opacity: Float[Tensor, "B r r"]


def render_patches(
    G: TriPlaneGenerator,
    planes: Float[Tensor, "B 3 C T T"],
    cameras: Views,
    params: PatchParams,
    *,
    image_size: int,
    patch_resolution: int,
    cube_scale: float,
    rays: RaySettings,
    generator: torch.Generator | None = None,
) -> PatchRender:
    """Volume-render the ``r × r`` patches ``params`` of the ``R × R`` views ``cameras`` of tri-planes ``planes``."""
    r = patch_resolution
    K_patch = patch_intrinsics(cameras.K, image_size, params, r)
    origins, directions = pinhole_rays(cameras.c2w, K_patch, r, r)  # (B, r, r, 3)
    batch = origins.shape[0]
    near = cameras.near[:, None].expand(batch, r * r)
    far = cameras.far[:, None].expand(batch, r * r)
    out: RayRender = render_rays(
        lambda pts: G.field(planes, pts, cube_scale),
        origins.reshape(batch, -1, 3),
        directions.reshape(batch, -1, 3),
        near,
        far,
        rays,
        generator,
    )
    return PatchRender(
        images=out.rgb.reshape(batch, r, r, 3).permute(0, 3, 1, 2),
        depth=out.depth.reshape(batch, r, r),
        opacity=out.opacity.reshape(batch, r, r),
    )


def render_fake_patches(
    G: TriPlaneGenerator,
    z: Float[Tensor, "B Z"],
    c: Float[Tensor, "B L"] | None,
    cameras: Views,
    params: PatchParams,
    *,
    image_size: int,
    patch_resolution: int,
    cube_scale: float,
    rays: RaySettings,
    truncation_psi: float = 1.0,
    noise_mode: NoiseMode = "random",
    update_w_avg: bool = False,
    fused_modconv: bool = False,
    generator: torch.Generator | None = None,
) -> PatchRender:
    """``G(z, c)`` rendered at patches ``params`` of the views ``cameras``."""
    planes = G.planes(
        z, c if G.c_dim > 0 else None, truncation_psi=truncation_psi, noise_mode=noise_mode,
        update_w_avg=update_w_avg, fused=fused_modconv,
    )
    return render_patches(
        G, planes, cameras, params, image_size=image_size, patch_resolution=patch_resolution, cube_scale=cube_scale,
        rays=rays, generator=generator,
    )


def discriminate(
    D: PatchDiscriminator,
    images: Float[Tensor, "B 3 r r"],
    params: PatchParams,
    c: Float[Tensor, "B L"] | None,
    camera: Float[Tensor, "B 2"] | None,
    blur_sigma: float,
) -> Float[Tensor, " B"]:
    """D's logits for (blurred) patches."""
    if blur_sigma > 0:
        images = gaussian_blur2d(images, blur_sigma)
    return D(images, params, c if D.c_dim > 0 else None, camera if D.camera_cond else None)


def generator_loss(fake_logits: Float[Tensor, " B"]) -> Float[Tensor, ""]:
    """Non-saturating G loss ``E[softplus(−D(G(z)))] = −E[log σ(D(G(z)))]``."""
    return F.softplus(-fake_logits).mean()


def discriminator_loss(real_logits: Float[Tensor, " B"], fake_logits: Float[Tensor, " B"]) -> Float[Tensor, ""]:
    """Logistic D loss ``E[softplus(D(G(z)))] + E[softplus(−D(x))]``."""
    return F.softplus(fake_logits).mean() + F.softplus(-real_logits).mean()


def r1_penalty(real_logits: Float[Tensor, " B"], real_images: Float[Tensor, "B 3 r r"]) -> Float[Tensor, " B"]:
    """``‖∇_x D(x)‖²`` per sample, with a graph for the backward pass (``real_images`` must require grad)."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real_images, create_graph=True)
    return grad.square().sum(dim=[1, 2, 3])


def ema_beta(batch: int, images_seen: int, ema_images: float, rampup: float | None = 0.05) -> float:
    """StyleGAN's EMA decay per step: ``0.5^(batch / half_life)``, half-life ramped up over the first images."""
    half_life = ema_images if rampup is None else min(ema_images, images_seen * rampup)
    return 0.5 ** (batch / max(half_life, 1e-8))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, beta: float) -> None:
    """``θ_ema ← β θ_ema + (1 − β) θ``; buffers (w̄, noise constants) are copied."""
    for p_ema, p in zip(ema.parameters(), model.parameters()):
        p_ema.copy_(p.lerp(p_ema, beta))
    for b_ema, b in zip(ema.buffers(), model.buffers()):
        b_ema.copy_(b)

"""EpiGRAF's generator: mapping network → StyleGAN2 synthesis of a tri-plane → tri-plane MLP → radiance field.

Follows the official ``networks_epigraf.py`` (``Generator``, ``SynthesisNetwork`` with the ``stylegan2`` backbone,
``TriPlaneMLP``): a StyleGAN2 "skip" synthesis network from a learned 4×4 constant up to the tri-plane resolution
``T`` whose RGB-like output has ``3·C`` channels (three ``C``-channel planes, fp32); features of a 3D point are
the mean of its three bilinear plane look-ups (:func:`scene3d.renderers.triplane.sample_triplane`), decoded by an
MLP (2 layers, 64 hidden units at paper scale) into raw RGB and raw density. There is no view dependence. Rendering
the field is :mod:`scene3d.renderers.hierarchical`.

Example:
    >>> import torch
    >>> g = TriPlaneGenerator(z_dim=8, w_dim=8, triplane_resolution=8, triplane_channels=4, channel_base=64,
    ...                       channel_max=8, mlp_hidden=8)
    >>> planes = g.planes(torch.randn(2, 8))
    >>> tuple(planes.shape)
    (2, 3, 4, 8, 8)
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from jaxtyping import Float
from torch import Tensor, nn

from scene3d.methods.epigraf.layers import (
    FullyConnected,
    MappingNetwork,
    bias_act,
    modulated_conv2d,
    upsample2d,
)
from scene3d.renderers.triplane import sample_triplane

NoiseMode = Literal["random", "const", "none"]


class SynthesisLayer(nn.Module):
    """Modulated 3×3 convolution + per-pixel noise + bias + leaky ReLU (StyleGAN2 ``SynthesisLayer``)."""

    def __init__(
        self, in_channels: int, out_channels: int, w_dim: int, resolution: int, *, up: bool, use_noise: bool,
        conv_clamp: float | None,
    ) -> None:
        super().__init__()
        self.up, self.use_noise, self.conv_clamp, self.resolution = up, use_noise, conv_clamp, resolution
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 3, 3))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        if use_noise:
            self.register_buffer("noise_const", torch.randn(resolution, resolution))
            self.noise_strength = nn.Parameter(torch.zeros([]))

    def forward(self, x: Tensor, w: Tensor, *, noise_mode: NoiseMode, fused: bool) -> Tensor:
        styles = self.affine(w)
        x = modulated_conv2d(x, self.weight, styles, up=self.up, fused=fused)
        if self.use_noise and noise_mode != "none":
            if noise_mode == "random":
                noise = torch.randn(x.shape[0], 1, self.resolution, self.resolution, device=x.device, dtype=x.dtype)
            else:
                noise = self.noise_const
            x = x + noise * self.noise_strength
        return bias_act(x, self.bias, activation="lrelu", clamp=self.conv_clamp)


class ToRGB(nn.Module):
    """Modulated 1×1 convolution without demodulation to the output channels (StyleGAN2 ``ToRGBLayer``)."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, *, conv_clamp: float | None) -> None:
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, 1, 1))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.weight_gain = 1.0 / math.sqrt(in_channels)

    def forward(self, x: Tensor, w: Tensor, *, fused: bool) -> Tensor:
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False, fused=fused)
        return bias_act(x, self.bias, clamp=self.conv_clamp)


class SynthesisBlock(nn.Module):
    """One resolution of the "skip" synthesis network: (up-sampling conv,) conv, ToRGB added to the up-sampled image."""

    def __init__(
        self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int, *,
        use_noise: bool, conv_clamp: float | None,
    ) -> None:
        super().__init__()
        self.first = in_channels == 0
        if self.first:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim, resolution, up=True, use_noise=use_noise, conv_clamp=conv_clamp)
        self.conv1 = SynthesisLayer(out_channels, out_channels, w_dim, resolution, up=False, use_noise=use_noise, conv_clamp=conv_clamp)
        self.torgb = ToRGB(out_channels, img_channels, w_dim, conv_clamp=conv_clamp)

    def forward(
        self, x: Tensor | None, img: Tensor | None, w: Tensor, *, noise_mode: NoiseMode, fused: bool
    ) -> tuple[Tensor, Tensor]:
        if self.first:
            x = self.const[None].expand(w.shape[0], -1, -1, -1)
        else:
            assert x is not None
            x = self.conv0(x, w, noise_mode=noise_mode, fused=fused)
        x = self.conv1(x, w, noise_mode=noise_mode, fused=fused)
        y = self.torgb(x, w, fused=fused)
        img = y if img is None else upsample2d(img) + y
        return x, img


class TriPlaneSynthesis(nn.Module):
    """StyleGAN2 synthesis network (architecture "skip") whose output image is a tri-plane.

    Channels at resolution ``res`` are ``min(channel_base // res, channel_max)`` (StyleGAN2's rule; paper scale
    ``32768`` and ``512``). The single ``w`` is broadcast to every layer, as in EpiGRAF (no style mixing).
    """

    def __init__(
        self, w_dim: int, resolution: int, plane_channels: int, *, channel_base: int, channel_max: int,
        use_noise: bool = True, conv_clamp: float | None = 256.0,
    ) -> None:
        super().__init__()
        if resolution < 4 or resolution & (resolution - 1):
            raise ValueError(f"triplane resolution must be a power of two >= 4, got {resolution}")
        self.resolution, self.plane_channels = resolution, plane_channels
        resolutions = [2**i for i in range(2, int(math.log2(resolution)) + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in resolutions}
        if min(channels.values()) < 1:
            raise ValueError(f"channel_base {channel_base} gives no channels at resolution {resolution}")
        self.blocks = nn.ModuleList(
            SynthesisBlock(
                channels[res // 2] if res > 4 else 0, channels[res], w_dim, res, 3 * plane_channels,
                use_noise=use_noise, conv_clamp=conv_clamp,
            )
            for res in resolutions
        )

    def forward(self, w: Float[Tensor, "B W"], *, noise_mode: NoiseMode = "random", fused: bool = False) -> Float[Tensor, "B 3 C T T"]:
        x = img = None
        for block in self.blocks:
            x, img = block(x, img, w, noise_mode=noise_mode, fused=fused)
        assert img is not None
        return img.reshape(w.shape[0], 3, self.plane_channels, self.resolution, self.resolution)


class TriPlaneDecoder(nn.Module):
    """EpiGRAF's ``TriPlaneMLP``: plane-mean features → ``n_layers`` equalized-lr FC layers → (raw RGB, raw σ)."""

    def __init__(self, in_features: int, hidden: int = 64, num_layers: int = 2) -> None:
        super().__init__()
        if num_layers < 2:
            raise ValueError(f"the tri-plane MLP needs at least 2 layers (as in the official code), got {num_layers}")
        dims = [in_features] + [hidden] * (num_layers - 1) + [4]
        self.layers = nn.ModuleList(
            FullyConnected(dims[i], dims[i + 1], activation="lrelu" if i < num_layers - 1 else "linear")
            for i in range(num_layers)
        )

    def forward(self, features: Float[Tensor, "B N C"]) -> tuple[Float[Tensor, "B N 3"], Float[Tensor, "B N"]]:
        x = features
        for layer in self.layers:
            x = layer(x)
        return x[..., :3], x[..., 3]


class TriPlaneGenerator(nn.Module):
    """``z`` (+ class label ``c``) → tri-plane → radiance field.

    Args:
        z_dim, w_dim: latent sizes (512, 512 at paper scale).
        c_dim: class-label size (0: unconditional).
        mapping_layers: depth of the mapping network (2).
        triplane_resolution, triplane_channels: ``T`` and ``C`` (512, 32).
        channel_base, channel_max: synthesis channel rule (32768, 512).
        mlp_hidden, mlp_layers: tri-plane MLP (64, 2).
        use_noise: StyleGAN per-pixel noise in the synthesis network (on in EpiGRAF).
    """

    def __init__(
        self, *, z_dim: int, w_dim: int, triplane_resolution: int, triplane_channels: int, channel_base: int,
        channel_max: int, mlp_hidden: int = 64, mlp_layers: int = 2, c_dim: int = 0, mapping_layers: int = 2,
        use_noise: bool = True,
    ) -> None:
        super().__init__()
        self.z_dim, self.c_dim = z_dim, c_dim
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, num_layers=mapping_layers)
        self.synthesis = TriPlaneSynthesis(
            w_dim, triplane_resolution, triplane_channels, channel_base=channel_base, channel_max=channel_max,
            use_noise=use_noise,
        )
        self.decoder = TriPlaneDecoder(triplane_channels, mlp_hidden, mlp_layers)

    def planes(
        self,
        z: Float[Tensor, "B Z"],
        c: Float[Tensor, "B L"] | None = None,
        *,
        truncation_psi: float = 1.0,
        noise_mode: NoiseMode = "random",
        update_w_avg: bool = False,
        fused: bool = False,
    ) -> Float[Tensor, "B 3 C T T"]:
        """The tri-planes of latents ``z`` (``truncation_psi < 1`` pulls ``w`` towards its running mean)."""
        w = self.mapping(z, c, truncation_psi=truncation_psi, update_w_avg=update_w_avg)
        return self.synthesis(w, noise_mode=noise_mode, fused=fused)

    def field(
        self, planes: Float[Tensor, "B 3 C T T"], points: Float[Tensor, "B N 3"], cube_scale: float
    ) -> tuple[Float[Tensor, "B N 3"], Float[Tensor, "B N"]]:
        """Raw RGB (``[−1, 1]`` image space, unbounded) and raw density (before softplus) at ``points``."""
        return self.decoder(sample_triplane(planes, points, cube_scale=cube_scale))

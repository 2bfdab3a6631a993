"""StyleGAN2 building blocks in plain torch: equalized-lr layers, mapping network, modulated convolution, FIR resampling.

EpiGRAF's official code uses StyleGAN3's custom CUDA ops (``bias_act``, ``upfirdn2d``, ``conv2d_resample``,
``fma``). Every op here is the same maths written with ``torch.nn.functional`` so it runs on any device without a
build step:

* equalized learning rate (Karras et al. 2018): weights are stored as ``N(0, 1) / lr_mul`` and scaled by
  ``lr_mul / sqrt(fan_in)`` at run time;
* ``bias_act``: bias, leaky ReLU (slope 0.2) with gain ``√2``, then an optional clamp to ``±conv_clamp``;
* FIR resampling with the ``[1, 3, 3, 1]`` filter: up-sampling as a depthwise transposed convolution with stride 2,
  down-sampling as a depthwise blur followed by a stride-2 convolution (StyleGAN2's ``conv2d_resample`` order);
* weight (de)modulation (StyleGAN2 Eq. 1–3) either fused as one grouped convolution or as scaling of activations
  before and after a shared convolution (identical maths, the latter is faster for training batches).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

LRELU_GAIN = math.sqrt(2.0)
"""StyleGAN's default gain after a leaky ReLU (keeps activations' second moment)."""


def normalize_2nd_moment(x: Float[Tensor, "B D"], eps: float = 1e-8) -> Float[Tensor, "B D"]:
    """``x / sqrt(mean(x²))`` over the feature dimension (StyleGAN's pixel norm on latents)."""
    return x * (x.square().mean(dim=1, keepdim=True) + eps).rsqrt()


def bias_act(
    x: Tensor, bias: Tensor | None, *, activation: str = "linear", gain: float = 1.0, clamp: float | None = None
) -> Tensor:
    """Add ``bias`` (broadcast along dim 1), apply ``activation`` ('linear' | 'lrelu') times ``gain``, clamp."""
    if bias is not None:
        x = x + bias.reshape(1, -1, *([1] * (x.ndim - 2)))
    if activation == "lrelu":
        x = F.leaky_relu(x, 0.2) * (LRELU_GAIN * gain)
    elif activation == "linear":
        x = x * gain if gain != 1.0 else x
    else:
        raise ValueError(f"activation must be 'linear' or 'lrelu', got {activation!r}")
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


class FullyConnected(nn.Module):
    """Equalized-lr linear layer (StyleGAN's ``FullyConnectedLayer``)."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        activation: str = "linear",
        lr_multiplier: float = 1.0,
        bias_init: float = 0.0,
    ) -> None:
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_multiplier)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init) / lr_multiplier))
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: Tensor) -> Tensor:
        y = x @ (self.weight * self.weight_gain).t()
        return bias_act(y.reshape(-1, y.shape[-1]), self.bias * self.bias_gain, activation=self.activation).reshape(y.shape)


class MappingNetwork(nn.Module):
    """``z`` (and a label or conditioning vector ``c``) → ``w`` (StyleGAN2's mapping network).

    Tracks the running mean ``w̄`` (decay ``w_avg_beta``) for the truncation trick ``w' = w̄ + ψ (w − w̄)``.
    With ``z_dim = 0`` it maps a conditioning vector only (EpiGRAF's discriminator uses it so).
    """

    def __init__(
        self,
        z_dim: int,
        c_dim: int,
        w_dim: int,
        *,
        num_layers: int = 2,
        lr_multiplier: float = 0.01,
        w_avg_beta: float | None = 0.998,
    ) -> None:
        super().__init__()
        if z_dim == 0 and c_dim == 0:
            raise ValueError("MappingNetwork needs z_dim > 0 or c_dim > 0")
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.w_avg_beta = w_avg_beta
        self.embed = FullyConnected(c_dim, w_dim) if c_dim > 0 else None
        features = [z_dim + (w_dim if c_dim > 0 else 0)] + [w_dim] * num_layers
        self.layers = nn.ModuleList(
            FullyConnected(features[i], features[i + 1], activation="lrelu", lr_multiplier=lr_multiplier)
            for i in range(num_layers)
        )
        if w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(
        self,
        z: Float[Tensor, "B Z"] | None,
        c: Float[Tensor, "B L"] | None = None,
        *,
        truncation_psi: float = 1.0,
        update_w_avg: bool = False,
    ) -> Float[Tensor, "B W"]:
        parts = []
        if self.z_dim > 0:
            if z is None or z.shape[-1] != self.z_dim:
                raise ValueError(f"z must have shape (B, {self.z_dim}), got {None if z is None else tuple(z.shape)}")
            parts.append(normalize_2nd_moment(z))
        if self.embed is not None:
            if c is None or c.shape[-1] != self.c_dim:
                raise ValueError(f"c must have shape (B, {self.c_dim}), got {None if c is None else tuple(c.shape)}")
            parts.append(normalize_2nd_moment(self.embed(c)))
        x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        for layer in self.layers:
            x = layer(x)
        if self.w_avg_beta is not None:
            if update_w_avg:
                self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
            if truncation_psi != 1.0:
                x = self.w_avg.lerp(x, truncation_psi)
        return x


def _fir_kernel(taps: tuple[float, ...], channels: int, gain: float, like: Tensor) -> Tensor:
    f = torch.tensor(taps, dtype=like.dtype, device=like.device)
    k = torch.outer(f, f)
    k = k / k.sum() * gain
    return k.expand(channels, 1, *k.shape).contiguous()


RESAMPLE_TAPS = (1.0, 3.0, 3.0, 1.0)
"""StyleGAN2's low-pass resampling filter (separable, normalised)."""


def upsample2d(x: Float[Tensor, "B C H W"]) -> Float[Tensor, "B C H2 W2"]:
    """×2 FIR up-sampling: zero insertion then the ``[1,3,3,1]`` filter with gain 4, as a transposed convolution."""
    k = _fir_kernel(RESAMPLE_TAPS, x.shape[1], 4.0, x)
    return F.conv_transpose2d(x, k, stride=2, padding=1, groups=x.shape[1])


def blur2d(x: Float[Tensor, "B C H W"], pad: tuple[int, int]) -> Float[Tensor, "B C H2 W2"]:
    """Depthwise ``[1,3,3,1]`` low-pass filter with zero padding ``pad = (before, after)`` on both axes."""
    k = _fir_kernel(RESAMPLE_TAPS, x.shape[1], 1.0, x)
    return F.conv2d(F.pad(x, (pad[0], pad[1], pad[0], pad[1])), k, groups=x.shape[1])


def gaussian_blur2d(x: Float[Tensor, "B C H W"], sigma: float) -> Float[Tensor, "B C H W"]:
    """Separable Gaussian blur with zero padding (StyleGAN3's D-input blur: taps ``2^(−(i/σ)²)``, ``|i| ≤ 3σ``)."""
    size = int(math.floor(sigma * 3))
    if size <= 0:
        return x
    taps = torch.arange(-size, size + 1, device=x.device, dtype=x.dtype).div(sigma).square().neg().exp2()
    taps = taps / taps.sum()
    channels = x.shape[1]
    kx = taps.reshape(1, 1, 1, -1).expand(channels, 1, 1, -1)
    ky = taps.reshape(1, 1, -1, 1).expand(channels, 1, -1, 1)
    x = F.conv2d(F.pad(x, (size, size, 0, 0)), kx, groups=channels)
    return F.conv2d(F.pad(x, (0, 0, size, size)), ky, groups=channels)


def modulated_conv2d(
    x: Float[Tensor, "B I H W"],
    weight: Float[Tensor, "O I k k"],
    styles: Float[Tensor, "B I"],
    *,
    demodulate: bool = True,
    up: bool = False,
    fused: bool = True,
) -> Float[Tensor, "B O H2 W2"]:
    """StyleGAN2's modulated convolution (Karras et al. 2020, Eq. 1–3), "same" padding, optional ×2 up-sampling.

    ``w'_{ijk} = s_i · w_{ijk}``, ``w''_{ijk} = w'_{ijk} / sqrt(Σ_{i,k} w'²_{ijk} + ε)``. ``fused=True`` runs one
    grouped convolution with per-sample weights (``groups = B``); ``fused=False`` scales the input by ``s`` and the
    output by the demodulation coefficients around one shared convolution. Both give the same result.
    """
    batch, in_channels = x.shape[:2]
    out_channels, _, kh, _ = weight.shape
    pad = kh // 2
    if up:
        x = upsample2d(x)
    dcoefs = None
    if demodulate or fused:
        w = weight[None] * styles[:, None, :, None, None]  # (B, O, I, k, k)
        if demodulate:
            dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt()  # (B, O)
    if not fused:
        x = F.conv2d(x * styles[:, :, None, None], weight, padding=pad)
        return x * dcoefs[:, :, None, None] if dcoefs is not None else x
    if dcoefs is not None:
        w = w * dcoefs[:, :, None, None, None]
    height, width = x.shape[2:]
    y = F.conv2d(x.reshape(1, batch * in_channels, height, width), w.reshape(batch * out_channels, in_channels, kh, kh), padding=pad, groups=batch)
    return y.reshape(batch, out_channels, *y.shape[2:])


class Conv2dLayer(nn.Module):
    """Equalized-lr convolution with optional ×2 FIR down-sampling and EpiGRAF's hyper-modulation.

    With ``hyper_dim > 0`` the input channels are scaled by ``1 + tanh(A(code))`` before the convolution, ``A`` an
    affine map of a conditioning code (EpiGRAF's patch-parameter modulation, ``Conv2dLayer(hyper_mod=True)``).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        *,
        bias: bool = True,
        activation: str = "linear",
        down: bool = False,
        conv_clamp: float | None = None,
        hyper_dim: int = 0,
    ) -> None:
        super().__init__()
        self.activation = activation
        self.down = down
        self.conv_clamp = conv_clamp
        self.kernel_size = kernel_size
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        self.weight_gain = 1.0 / math.sqrt(in_channels * kernel_size**2)
        self.affine = FullyConnected(hyper_dim, in_channels, bias_init=0.0) if hyper_dim > 0 else None

    def forward(self, x: Tensor, code: Tensor | None = None, gain: float = 1.0) -> Tensor:
        if self.affine is not None:
            if code is None:
                raise ValueError("this layer is hyper-modulated: pass the conditioning code")
            x = x * (1.0 + torch.tanh(self.affine(code)))[:, :, None, None]
        w = self.weight * self.weight_gain
        if self.down:
            # StyleGAN2's conv2d_resample: low-pass first, then a strided convolution; the pads keep H → H/2
            if self.kernel_size == 1:
                x = F.conv2d(blur2d(x, (1, 1)), w, stride=2)
            else:
                x = F.conv2d(blur2d(x, (2, 2)), w, stride=2)
        else:
            x = F.conv2d(x, w, padding=self.kernel_size // 2)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act(x, self.bias, activation=self.activation, gain=gain, clamp=clamp)


class FourierScalarEncoder(nn.Module):
    """Encode scalars in ``[0, 1]`` by log-spaced Fourier features plus a learned embedding of ``round(x · m)``.

    EpiGRAF's ``ScalarEncoder1d``: ``x ← x · m`` (``x_multiplier``), then ``sin/cos(π 2^k x / T)`` for
    ``k = 0 … log2(T) − 1`` with ``T = 2^⌈log2 m⌉``, concatenated with ``Embedding(⌈m⌉ + 1, const_dim)[round(x)]``.
    """

    def __init__(self, coord_dim: int, x_multiplier: float, const_dim: int = 0) -> None:
        super().__init__()
        self.coord_dim, self.x_multiplier, self.const_dim = coord_dim, x_multiplier, const_dim
        period = 2 ** math.ceil(math.log2(x_multiplier))
        num_freqs = int(math.ceil(math.log2(period)))
        self.register_buffer("freqs", (2.0 ** torch.arange(num_freqs)) * math.pi / period, persistent=False)
        self.const_embed = nn.Embedding(int(math.ceil(x_multiplier)) + 1, const_dim) if const_dim > 0 else None

    @property
    def out_dim(self) -> int:
        return self.coord_dim * (2 * self.freqs.numel() + self.const_dim)

    def forward(self, x: Float[Tensor, "B D"]) -> Float[Tensor, "B E"]:
        if x.shape[1] != self.coord_dim:
            raise ValueError(f"expected {self.coord_dim} scalars per sample, got {x.shape[1]}")
        x = x.float() * self.x_multiplier
        raw = x[:, :, None] * self.freqs  # (B, D, F)
        parts = [raw.sin(), raw.cos()]
        if self.const_embed is not None:
            idx = x.round().long().clamp(0, self.const_embed.num_embeddings - 1)
            parts.append(self.const_embed(idx))
        return torch.cat(parts, dim=2).reshape(x.shape[0], -1)

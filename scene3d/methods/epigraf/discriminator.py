"""EpiGRAF's location- and scale-aware patch discriminator (official ``networks_discriminator.py``).

A StyleGAN2 residual discriminator run at patch resolution ``r``. So that its depth matches a full-resolution
discriminator, ``log2(R / r)`` extra start blocks keep the resolution (no down-sampling) but use the channel counts
of the resolutions they stand for. The patch parameters ``[s, o_x, o_y]`` are encoded by Fourier features plus a
learned embedding (:class:`~scene3d.methods.epigraf.layers.FourierScalarEncoder`, ``x_multiplier`` 1000, 256-d),
mapped by a mapping network to a 512-d code, and every block's second convolution multiplies its input channels by
``1 + tanh(A(code))`` (hyper-modulation). The same embedding (with the class label and, optionally, the camera
angles) conditions the output through StyleGAN2's projection head.

Example:
    >>> import torch
    >>> from scene3d.methods.epigraf.patches import PatchParams
    >>> d = PatchDiscriminator(image_resolution=32, patch_resolution=8, channel_base=64, channel_max=16,
    ...                        patch_embed_dim=8, hyper_dim=16)
    >>> d(torch.randn(4, 3, 8, 8), PatchParams.full(4)).shape
    torch.Size([4])
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from scene3d.methods.epigraf.layers import Conv2dLayer, FourierScalarEncoder, FullyConnected, MappingNetwork
from scene3d.methods.epigraf.patches import PatchParams

SQRT_HALF = math.sqrt(0.5)


class DiscriminatorBlock(nn.Module):
    """Residual block: (fromRGB,) 3×3 conv, 3×3 conv (hyper-modulated, optionally ↓2), 1×1 skip; sum × √½."""

    def __init__(
        self, in_channels: int, tmp_channels: int, out_channels: int, img_channels: int, *, down: bool,
        hyper_dim: int, conv_clamp: float | None,
    ) -> None:
        super().__init__()
        self.fromrgb = (
            Conv2dLayer(img_channels, tmp_channels, 1, activation="lrelu", conv_clamp=conv_clamp) if in_channels == 0 else None
        )
        self.conv0 = Conv2dLayer(tmp_channels, tmp_channels, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.conv1 = Conv2dLayer(
            tmp_channels, out_channels, 3, activation="lrelu", down=down, conv_clamp=conv_clamp, hyper_dim=hyper_dim
        )
        self.skip = Conv2dLayer(tmp_channels, out_channels, 1, bias=False, down=down)

    def forward(self, x: Tensor | None, img: Tensor, code: Tensor | None) -> Tensor:
        if self.fromrgb is not None:
            y = self.fromrgb(img)
            x = y if x is None else x + y
        assert x is not None
        skip = self.skip(x, gain=SQRT_HALF)
        x = self.conv0(x)
        x = self.conv1(x, code, gain=SQRT_HALF)
        return skip + x


def minibatch_stddev(x: Float[Tensor, "B C H W"], group_size: int) -> Float[Tensor, "B C1 H W"]:
    """Append the mean (over channels and pixels) std of features within groups of consecutive samples.

    Groups are consecutive, matching the patch-parameter groups of
    :meth:`~scene3d.methods.epigraf.patches.PatchScaleSchedule.sample`.
    """
    batch, channels, height, width = x.shape
    g = min(group_size, batch)
    if batch % g:
        raise ValueError(f"batch ({batch}) must be a multiple of the minibatch-std group size ({g})")
    y = x.reshape(batch // g, g, channels, height, width)
    y = (y.var(dim=1, unbiased=False) + 1e-8).sqrt().mean(dim=[1, 2, 3])  # (B/g,)
    y = y.repeat_interleave(g)[:, None, None, None].expand(batch, 1, height, width)
    return torch.cat([x, y], dim=1)


class PatchDiscriminator(nn.Module):
    """D(patch | s, o, label, camera) → logit.

    Args:
        image_resolution: ``R`` of the dataset's images.
        patch_resolution: ``r`` (a power of two >= 4).
        channel_base, channel_max: StyleGAN2 channel rule (paper: 16384 = 32768 · fmaps 0.5, and 512).
        c_dim: class-label size (0: none).
        mbstd_group_size: minibatch-std group (4).
        scale_aware: condition on the patch parameters (hyper-modulation + projection); ``False`` is a plain
            StyleGAN2 discriminator.
        patch_embed_dim: size of the learned embedding in the patch-parameter encoder (256).
        hyper_dim: size of the modulation code (512).
        camera_cond: condition the projection head on camera (yaw, pitch) as well (off by default).
        camera_cond_drop_p: dropout on the camera embedding (0.5 when used, as EG3D's GPC).
        conv_clamp: clamp of conv outputs (256).
    """

    def __init__(
        self, *, image_resolution: int, patch_resolution: int, channel_base: int, channel_max: int, c_dim: int = 0,
        mbstd_group_size: int = 4, scale_aware: bool = True, patch_embed_dim: int = 256, hyper_dim: int = 512,
        camera_cond: bool = False, camera_cond_drop_p: float = 0.0, conv_clamp: float | None = 256.0,
        img_channels: int = 3,
    ) -> None:
        super().__init__()
        if patch_resolution < 4 or patch_resolution & (patch_resolution - 1):
            raise ValueError(f"patch_resolution must be a power of two >= 4, got {patch_resolution}")
        if image_resolution < patch_resolution:
            raise ValueError(f"image resolution {image_resolution} is below the patch resolution {patch_resolution}")
        self.c_dim, self.mbstd_group_size, self.scale_aware = c_dim, mbstd_group_size, scale_aware
        self.camera_cond, self.camera_cond_drop_p = camera_cond, camera_cond_drop_p
        self.num_start_blocks = max(0, round(math.log2(image_resolution / patch_resolution)))
        virtual = patch_resolution * 2**self.num_start_blocks
        resolutions = [2**i for i in range(int(math.log2(virtual)), 2, -1)]
        channels = {res: max(1, min(channel_base // res, channel_max)) for res in resolutions + [4]}

        self.patch_encoder = FourierScalarEncoder(3, 1000.0, patch_embed_dim) if scale_aware else None
        self.hyper_mapping = (
            MappingNetwork(0, self.patch_encoder.out_dim, hyper_dim, w_avg_beta=None) if self.patch_encoder is not None else None
        )
        self.camera_encoder = FourierScalarEncoder(2, 64.0) if camera_cond else None
        cond_dim = c_dim + (self.patch_encoder.out_dim if self.patch_encoder is not None else 0)
        cond_dim += self.camera_encoder.out_dim if self.camera_encoder is not None else 0
        self.cmap_dim = channels[4] if cond_dim > 0 else 0
        self.head_mapping = MappingNetwork(0, cond_dim, self.cmap_dim, w_avg_beta=None) if cond_dim > 0 else None

        self.blocks = nn.ModuleList(
            DiscriminatorBlock(
                0 if i == 0 else channels[res], channels[res], channels[res // 2], img_channels,
                down=i >= self.num_start_blocks, hyper_dim=hyper_dim if scale_aware else 0, conv_clamp=conv_clamp,
            )
            for i, res in enumerate(resolutions)
        )
        c4 = channels[4]
        self.epilogue_conv = Conv2dLayer(c4 + 1, c4, 3, activation="lrelu", conv_clamp=conv_clamp)
        self.epilogue_fc = FullyConnected(c4 * 16, c4, activation="lrelu")
        self.epilogue_out = FullyConnected(c4, self.cmap_dim if self.cmap_dim > 0 else 1)

    def forward(
        self,
        img: Float[Tensor, "B 3 r r"],
        patch_params: PatchParams,
        c: Float[Tensor, "B L"] | None = None,
        camera: Float[Tensor, "B 2"] | None = None,
    ) -> Float[Tensor, " B"]:
        """Logits of ``img`` patches with parameters ``patch_params``, labels ``c`` and camera (yaw, pitch)."""
        batch = img.shape[0]
        cond = []
        code = None
        if self.c_dim > 0:
            if c is None or c.shape[1] != self.c_dim:
                raise ValueError(f"c must have shape (B, {self.c_dim}), got {None if c is None else tuple(c.shape)}")
            cond.append(c)
        if self.patch_encoder is not None:
            emb = self.patch_encoder(patch_params.as_condition())
            assert self.hyper_mapping is not None
            code = self.hyper_mapping(None, emb)
            cond.append(emb)
        if self.camera_encoder is not None:
            if camera is None:
                raise ValueError("this discriminator is camera-conditioned: pass camera (yaw, pitch)")
            # official: angles → sign · (|a| mod 2π) / 2π, then Fourier features, with dropout
            normed = camera.sign() * (camera.abs() % (2 * math.pi)) / (2 * math.pi)
            cond.append(F.dropout(self.camera_encoder(normed), p=self.camera_cond_drop_p, training=self.training))

        x = None
        for block in self.blocks:
            x = block(x, img, code)
        assert x is not None
        x = minibatch_stddev(x, self.mbstd_group_size)
        x = self.epilogue_conv(x)
        x = self.epilogue_fc(x.flatten(1))
        x = self.epilogue_out(x)
        if self.head_mapping is not None:
            cmap = self.head_mapping(None, torch.cat(cond, dim=1))
            x = (x * cmap).sum(dim=1, keepdim=True) / math.sqrt(self.cmap_dim)
        return x.reshape(batch)

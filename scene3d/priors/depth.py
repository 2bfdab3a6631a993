"""Monocular depth (Depth Anything V2 / DPT through transformers) and scale/shift alignment to known depth.

Monocular networks predict depth only up to an affine map: Depth Anything and DPT output *relative disparity*
(inverse depth, unknown scale and shift). Methods that fuse it with a scene (Text2NeRF, QNeRF's depth loss,
DreamSpace) align it to sparse or rendered metric depth first. :func:`align_depth` solves the least-squares problem

    min_{s, b} Σ_i m_i (s·p_i + b − d_i)²        (the least-squares alignment of MiDaS, Ranftl et al. 2020)

in closed form per image, in depth or in disparity space (``p`` and ``d = 1/depth`` then).

Example:
    >>> pred = torch.rand(1, 1, 8, 8) + 0.5
    >>> target = 2.0 * pred + 0.3
    >>> fit = align_depth(pred, target, torch.ones_like(pred, dtype=torch.bool))
    >>> round(fit.scale.item(), 4), round(fit.shift.item(), 4)
    (2.0, 0.3)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor

from scene3d.core.cameras import CameraBatch
from scene3d.priors.diffusion import check_cameras


@dataclass
class DepthAlignment:
    """Per-image affine fit of a relative prediction to known depth."""

    scale: Float[Tensor, " B"]
    shift: Float[Tensor, " B"]
    depth: Float[Tensor, "B 1 H W"]
    """The aligned prediction as metric depth (in disparity space: ``1 / (s·p + b)``, clamped positive)."""


def align_depth(
    prediction: Float[Tensor, "B 1 H W"],
    target_depth: Float[Tensor, "B 1 H W"],
    mask: Bool[Tensor, "B 1 H W"],
    *,
    space: Literal["depth", "disparity"] = "depth",
    min_depth: float = 1e-3,
) -> DepthAlignment:
    """Least-squares scale and shift mapping ``prediction`` onto ``target_depth`` where ``mask`` holds.

    Args:
        prediction: relative depth (``space="depth"``) or relative disparity (``space="disparity"``, what Depth
            Anything / DPT output).
        target_depth: metric depth (rendered, or sparse from SfM); ignored outside ``mask``.
        mask: valid target pixels (at least 2 per image, with distinct predictions).
        space: where the affine fit is done; in disparity space the target is ``1 / target_depth``.
        min_depth: floor of the returned depth (a disparity fit can cross zero far away).

    Raises:
        ValueError: if an image has fewer than 2 valid pixels or a constant prediction there.
    """
    # centred normal equations in float64: the raw-moment form loses digits to cancellation in float32
    m = mask.double()
    p = prediction.double()
    d = target_depth.double() if space == "depth" else 1.0 / target_depth.double().clamp_min(min_depth)
    d = torch.where(mask, d, torch.zeros_like(d))
    dims = (1, 2, 3)
    n = m.sum(dims)
    if bool((n < 2).any()):
        raise ValueError(f"mask must hold at least 2 valid pixels per image, got counts {n.long().tolist()}")
    view = (-1, 1, 1, 1)
    p_mean, d_mean = (m * p).sum(dims) / n, (m * d).sum(dims) / n
    pc, dc = m * (p - p_mean.view(view)), m * (d - d_mean.view(view))
    var = (pc * pc).sum(dims)
    if bool((var <= 1e-12 * n).any()):
        raise ValueError("prediction is constant over the mask of an image; scale and shift are undetermined")
    scale64 = (pc * dc).sum(dims) / var
    shift64 = d_mean - scale64 * p_mean
    scale, shift = scale64.to(prediction.dtype), shift64.to(prediction.dtype)
    fitted = (scale64.view(view) * p + shift64.view(view)).to(prediction.dtype)
    depth = fitted if space == "depth" else 1.0 / fitted.clamp_min(1.0 / 1e6)
    return DepthAlignment(scale=scale, shift=shift, depth=depth.clamp_min(min_depth))


class DepthEstimator:
    """Relative monocular depth from a transformers depth model (``AutoModelForDepthEstimation``).

    Args:
        model: e.g. ``DepthAnythingForDepthEstimation``; called as ``model(pixel_values=x).predicted_depth``.
        image_mean: per-channel normalisation mean (the model's ``preprocessor_config.json``).
        image_std: per-channel normalisation std.
        input_size: the shorter image side fed to the network (518 for Depth Anything V2), rounded to a multiple
            of ``multiple_of``.
        multiple_of: the ViT patch size (14).
        output: what the network predicts; Depth Anything V2 and DPT predict relative ``"disparity"``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        *,
        image_mean: tuple[float, float, float],
        image_std: tuple[float, float, float],
        input_size: int = 518,
        multiple_of: int = 14,
        output: Literal["disparity", "depth"] = "disparity",
    ) -> None:
        self.model = model
        self.image_mean = tuple(image_mean)
        self.image_std = tuple(image_std)
        self.input_size = input_size
        self.multiple_of = multiple_of
        self.output = output

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def network_size(self, height: int, width: int) -> tuple[int, int]:
        """Input size of the network: shorter side ``input_size``, aspect kept, both multiples of ``multiple_of``."""
        scale = self.input_size / min(height, width)
        k = self.multiple_of
        return max(k, round(height * scale / k) * k), max(k, round(width * scale / k) * k)

    def __call__(
        self, images: Float[Tensor, "B 3 H W"], *, cameras: CameraBatch | None = None
    ) -> Float[Tensor, "B 1 H W"]:
        """Relative depth or disparity (see :attr:`output`) at the input resolution, for images in ``[0, 1]``.

        Differentiable with respect to ``images`` (bicubic resizing, no PIL round trip). ``cameras`` (one per image)
        are ignored by the network; methods pass them so that the ``groundtruth:`` twin can answer.
        """
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
        check_cameras(cameras, images.shape[0])
        h, w = images.shape[-2:]
        param = next(self.model.parameters())
        x = F.interpolate(images.to(param.device, torch.float32), size=self.network_size(h, w), mode="bicubic",
                          align_corners=False)
        mean = torch.tensor(self.image_mean, device=x.device).view(1, 3, 1, 1)
        std = torch.tensor(self.image_std, device=x.device).view(1, 3, 1, 1)
        pred = self.model(pixel_values=((x - mean) / std).to(param.dtype)).predicted_depth
        return F.interpolate(pred.float().unsqueeze(1), size=(h, w), mode="bilinear", align_corners=False)

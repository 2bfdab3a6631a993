"""Image metrics against ground truth: PSNR, SSIM, and LPIPS when its weights are on disk.

LPIPS needs AlexNet weights that torchvision downloads on first use; offline they are usually missing. Instead of
failing (nerfacto's constructor does), :func:`lpips` returns ``None`` and logs one warning per process.

Example:
    >>> import torch
    >>> a = torch.rand(1, 3, 16, 16)
    >>> round(psnr(a, a.clamp(0, 1)).item()) > 90
    True
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from jaxtyping import Float
from torch import Tensor

logger = logging.getLogger(__name__)

_ALEXNET_FILE = "alexnet-owt-7be5be79.pth"
_lpips_model: torch.nn.Module | None = None
_lpips_warned = False


def _check_pair(pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {tuple(pred.shape)} and {tuple(target.shape)}")
    if pred.dim() != 4 or pred.shape[1] != 3:
        raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(pred.shape)}")


def psnr(pred: Float[Tensor, "B 3 H W"], target: Float[Tensor, "B 3 H W"]) -> Float[Tensor, ""]:
    """Peak signal-to-noise ratio in dB over the whole batch, images in [0, 1]: ``−10 log10(MSE)``."""
    _check_pair(pred, target)
    mse = torch.mean((pred.clamp(0, 1) - target) ** 2)
    return -10.0 * torch.log10(mse.clamp_min(1e-10))


def ssim(pred: Float[Tensor, "B 3 H W"], target: Float[Tensor, "B 3 H W"]) -> Float[Tensor, ""]:
    """Structural similarity (Gaussian window 11, σ 1.5, as nerfstudio and the papers report it)."""
    from torchmetrics.functional.image import structural_similarity_index_measure

    _check_pair(pred, target)
    return structural_similarity_index_measure(pred.clamp(0, 1), target, data_range=1.0)


def lpips_weights_present() -> bool:
    """Whether torchvision's AlexNet weights (needed by LPIPS) are in the torch hub cache."""
    return (Path(torch.hub.get_dir()) / "checkpoints" / _ALEXNET_FILE).is_file()


def lpips(pred: Float[Tensor, "B 3 H W"], target: Float[Tensor, "B 3 H W"]) -> Tensor | None:
    """LPIPS (AlexNet) if its weights are present offline, else ``None`` after one warning per process."""
    global _lpips_model, _lpips_warned
    _check_pair(pred, target)
    if _lpips_model is None:
        if not lpips_weights_present() or os.environ.get("SCENE3D_NO_LPIPS"):
            if not _lpips_warned:
                logger.warning(
                    "LPIPS skipped: AlexNet weights (%s) are not in the torch hub cache %s",
                    _ALEXNET_FILE,
                    torch.hub.get_dir(),
                )
                _lpips_warned = True
            return None
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        _lpips_model = LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True)
    model = _lpips_model.to(pred.device)
    return model(pred.clamp(0, 1), target.clamp(0, 1))

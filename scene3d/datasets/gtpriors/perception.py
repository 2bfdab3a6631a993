"""The ``groundtruth:`` twins of the perception priors: monocular depth, normals and CLIP similarity.

Each subclasses the prior the methods call (:class:`~scene3d.priors.DepthEstimator`,
:class:`~scene3d.priors.NormalEstimator`, :class:`~scene3d.priors.CLIPSimilarity`) and answers from the scene at the
``cameras=`` of the images, through the seeded imperfections of :mod:`.imperfections`.

* **Depth**: what Depth Anything returns, relative *disparity* (``1/depth``; 0 where nothing is hit), through a
  recorded per-image scale and shift, a smooth multiplicative distortion and noise.
* **Normals**: unit normals in the estimator's camera frame (Marigold's: +X right, +Y up, +Z towards the viewer,
  i.e. ``R_c2wᵀ n_world``), with smooth and per-pixel angular noise; ``(0, 0, 1)`` where nothing is hit.
* **CLIP**: an image embedding that is the image itself (resized to ``feature_size``², centred at 0.5, unit
  length), so ``image_image_similarity`` is a normalised correlation of the pixels and
  ``image_text_similarity(images, texts, cameras=)`` is that similarity between each image and the text's target
  rendered at the image's camera: 1 for the truth, lower the further an image is from it, and differentiable.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor, nn

from scene3d.core.cameras import CameraBatch
from scene3d.datasets.gtpriors.imperfections import predict_depth, predict_normals
from scene3d.datasets.gtpriors.source import GroundTruthSource, needs_cameras
from scene3d.priors.clip import CLIPSimilarity
from scene3d.priors.depth import DepthEstimator
from scene3d.priors.diffusion import check_cameras
from scene3d.priors.normals import NormalEstimator


class _Anchor(nn.Module):
    """Holds the device the base classes read from ``next(model.parameters())``."""

    def __init__(self, device: torch.device) -> None:
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros((), device=device), requires_grad=False)


def _images_cameras(images: Tensor, cameras: CameraBatch | None, operation: str) -> CameraBatch:
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
    check_cameras(cameras, images.shape[0])
    cams = needs_cameras(cameras, operation).expand_to(images.shape[0])
    h, w = images.shape[-2:]
    return cams if (cams.width, cams.height) == (w, h) else cams.scaled(w, h)


class GroundTruthDepth(DepthEstimator):
    """Monocular depth answered from the scene (module docstring); the images only give the output size."""

    def __init__(
        self, source: GroundTruthSource, *, output: Literal["disparity", "depth"] = "disparity", device: str = "cpu"
    ) -> None:
        super().__init__(_Anchor(torch.device(device)), image_mean=(0.5, 0.5, 0.5), image_std=(0.5, 0.5, 0.5),
                         output=output)  # fmt: skip
        self.source = source

    def __call__(
        self, images: Float[Tensor, "B 3 H W"], *, cameras: CameraBatch | None = None
    ) -> Float[Tensor, "B 1 H W"]:
        """Relative disparity (or depth) at ``cameras``, at the images' resolution; the draw is recorded."""
        cams = _images_cameras(images, cameras, "monocular depth")
        prompt_free = self.source.target("")
        truth = self.source.render(cams, prompt_free)
        gen, call, seed = self.source.generator("depth")
        pred, draw = predict_depth(truth.depth, truth.hit, self.source.options.imperfections, gen, output=self.output)
        self.source.record("depth", call, seed, [prompt_free] * len(cams), draw)
        return pred.to(images.device)


class GroundTruthNormals(NormalEstimator):
    """Surface normals answered from the scene (module docstring)."""

    def __init__(self, source: GroundTruthSource, *, device: str = "cpu") -> None:
        anchor = _Anchor(torch.device(device))
        super().__init__(anchor, anchor, anchor, None, None)
        self.source = source

    @torch.no_grad()
    def __call__(
        self,
        images: Float[Tensor, "B 3 H W"],
        *,
        generator: torch.Generator | None = None,
        cameras: CameraBatch | None = None,
    ) -> Float[Tensor, "B 3 H W"]:
        """Unit normals in each camera's frame (OpenGL axes), at the images' resolution; the draw is recorded."""
        cams = _images_cameras(images, cameras, "normal estimation")
        prompt_free = self.source.target("")
        truth = self.source.render(cams, prompt_free)
        world_to_cam = cams.c2w[:, :3, :3].float().transpose(1, 2)  # R^T: world -> camera axes
        n_cam = torch.einsum("bij,bjhw->bihw", world_to_cam, truth.normals)
        gen, call, seed = self.source.generator("normals", generator if generator is not None and generator.device.type == "cpu" else None)
        pred, draw = predict_normals(n_cam, truth.hit, self.source.options.imperfections, gen)
        self.source.record("normals", call, seed, [prompt_free] * len(cams), draw)
        return pred.to(images.device)


class GroundTruthCLIP(CLIPSimilarity):
    """CLIP similarity answered from the scene (module docstring).

    Args:
        feature_size: the side images are resized to before they are compared.
    """

    def __init__(self, source: GroundTruthSource, *, feature_size: int = 128, device: str = "cpu") -> None:
        super().__init__(_Anchor(torch.device(device)), None, image_size=feature_size)
        self.source = source

    def encode_images(self, images: Float[Tensor, "B 3 H W"]) -> Float[Tensor, "B D"]:
        """Unit vectors of the centred pixels at ``feature_size``² (differentiable)."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
        s = self.image_size
        x = images.float()
        if tuple(x.shape[-2:]) != (s, s):
            x = F.interpolate(x, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        return F.normalize((x - 0.5).flatten(1), dim=-1)

    def encode_texts(self, texts: list[str]) -> Tensor:
        raise ValueError(
            "a groundtruth CLIP has no camera-free text embedding: a text's embedding is its target seen from a "
            "camera; use image_text_similarity(images, texts, cameras=) or text_loss(images, text, cameras=)"
        )

    def image_text_similarity(
        self, images: Float[Tensor, "B 3 H W"], texts: str | list[str], *, cameras: CameraBatch | None = None
    ) -> Float[Tensor, "B T"]:
        """``cos(E(image_b), E(target of text_t at camera_b))`` for every pair (differentiable in the images)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        cams = _images_cameras(images, cameras, "CLIP image-text similarity")
        e_img = self.encode_images(images)
        columns = []
        for text in texts:
            target = self.source.target(text)
            truth = self.source.render(cams, target).rgb.to(images.device)
            columns.append((e_img * self.encode_images(truth)).sum(-1))
        return torch.stack(columns, dim=-1)

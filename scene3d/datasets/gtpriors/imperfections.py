"""The seeded departures from the truth that make the ``groundtruth:`` twins behave like real models.

Pure functions of tensors and a ``torch.Generator``; each returns what it drew as a small record, so that a test
(or a benchmark) can check what a method recovered. Settings: :class:`~.options.Imperfections`; the reasoning behind
the defaults is in ``README.md``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from jaxtyping import Bool, Float
from torch import Tensor

from scene3d.datasets.gtpriors.options import Imperfections

InpaintPerturbation = Literal["clean", "color_shift", "blur", "offset", "wrong_patch"]
PERTURBATIONS: tuple[InpaintPerturbation, ...] = ("color_shift", "blur", "offset", "wrong_patch")


def gaussian_blur(images: Float[Tensor, "B C H W"], sigma: float) -> Float[Tensor, "B C H W"]:
    """Separable Gaussian blur, taps ``exp(−i²/2σ²)`` for ``|i| ≤ ⌈3σ⌉``, reflected borders; identity for σ ≤ 0."""
    radius = min(int(math.ceil(3.0 * sigma)), min(images.shape[-2:]) - 1)
    if sigma <= 0.0 or radius < 1:
        return images
    taps = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    taps = torch.exp(-0.5 * (taps / sigma) ** 2)
    taps = taps / taps.sum()
    c = images.shape[1]
    x = F.pad(images, (radius, radius, 0, 0), mode="reflect")
    x = F.conv2d(x, taps.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.pad(x, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(x, taps.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def smooth_field(
    shape: tuple[int, int, int, int], cells: int, generator: torch.Generator
) -> Float[Tensor, "B C H W"]:
    """A low-frequency random field in ``[−1, 1]``: uniform values on a ``cells × cells`` grid, bicubically
    upsampled to ``H × W`` (corners aligned) and clamped."""
    b, c, h, w = shape
    grid = torch.rand((b, c, cells, cells), generator=generator) * 2.0 - 1.0
    return F.interpolate(grid, size=(h, w), mode="bicubic", align_corners=True).clamp(-1.0, 1.0)


# ------------------------------------------------------------------------------------------------------ depth
@dataclass(frozen=True)
class DepthDraw:
    """What a depth prediction drew, per image: ``pred = scale · d · (1 + distortion) + shift + noise`` where ``d``
    is the true disparity (or depth)."""

    scale: Float[Tensor, " B"]
    shift: Float[Tensor, " B"]
    distortion_amplitude: float
    """``a``: the multiplicative field is ``a · f(x, y)``, ``|f| ≤ 1``."""
    noise_std: Float[Tensor, " B"]
    """Standard deviation of the additive per-pixel noise, in prediction units."""


def _median(values: Tensor, valid: Tensor) -> Tensor:
    """Per-image median of ``values`` over ``valid`` (1 where an image has no valid pixel)."""
    out = []
    for v, m in zip(values.flatten(1), valid.flatten(1), strict=True):
        out.append(v[m].median() if bool(m.any()) else torch.ones((), dtype=v.dtype))
    return torch.stack(out)


def predict_depth(
    truth: Float[Tensor, "B 1 H W"],
    hit: Bool[Tensor, "B 1 H W"],
    settings: Imperfections,
    generator: torch.Generator,
    *,
    output: Literal["disparity", "depth"] = "disparity",
) -> tuple[Float[Tensor, "B 1 H W"], DepthDraw]:
    """A monocular depth network's answer for true depth ``truth`` (metres; 0 where nothing is hit).

    ``output="disparity"`` (Depth Anything, DPT) predicts ``1 / depth`` (0 where nothing is hit: infinitely far);
    ``"depth"`` predicts depth (0 where nothing is hit). With imperfections on, the prediction is mapped by a
    per-image scale (log-uniform in ``depth_scale_range``) and shift (``depth_shift_range`` × the scaled median),
    multiplied by a smooth field ``1 + a·f`` and given per-pixel noise; with them off it is the truth itself.
    """
    b = truth.shape[0]
    exact = torch.where(hit, 1.0 / truth.clamp_min(1e-6), 0.0) if output == "disparity" else torch.where(hit, truth, 0.0)
    if not settings.enabled:
        ones, zeros = torch.ones(b), torch.zeros(b)
        return exact, DepthDraw(scale=ones, shift=zeros, distortion_amplitude=0.0, noise_std=zeros)
    lo, hi = settings.depth_scale_range
    log_scale = math.log(lo) + (math.log(hi) - math.log(lo)) * torch.rand(b, generator=generator)
    scale = log_scale.exp()
    median = _median(exact, hit)
    s_lo, s_hi = settings.depth_shift_range
    shift = (s_lo + (s_hi - s_lo) * torch.rand(b, generator=generator)) * scale * median
    field = settings.depth_distortion * smooth_field(tuple(exact.shape), settings.depth_distortion_cells, generator)
    noise_std = settings.depth_noise * scale * median
    noise = torch.randn(exact.shape, generator=generator) * noise_std.view(-1, 1, 1, 1)
    view = (-1, 1, 1, 1)
    pred = scale.view(view) * exact * (1.0 + field) + shift.view(view) + noise
    return pred, DepthDraw(scale=scale, shift=shift, distortion_amplitude=settings.depth_distortion, noise_std=noise_std)


# ------------------------------------------------------------------------------------------------------ normals
@dataclass(frozen=True)
class NormalsDraw:
    """What a normal prediction drew: the per-pixel angular error between prediction and truth (hit pixels)."""

    mean_error_deg: Float[Tensor, " B"]
    max_error_deg: Float[Tensor, " B"]


def _tangential(vectors: Tensor, normals: Tensor) -> Tensor:
    return vectors - (vectors * normals).sum(1, keepdim=True) * normals


def predict_normals(
    truth: Float[Tensor, "B 3 H W"], hit: Bool[Tensor, "B 1 H W"], settings: Imperfections, generator: torch.Generator
) -> tuple[Float[Tensor, "B 3 H W"], NormalsDraw]:
    """A normal estimator's answer for true unit normals ``truth`` (any frame; zero vectors where nothing is hit).

    Where nothing is hit the answer is ``(0, 0, 1)`` (facing the viewer, in the camera frame). With imperfections
    on, every hit normal is tilted by a smooth field (amplitude ``tan(normal_bias_deg)``) plus per-pixel noise
    (``tan(normal_noise_deg)`` per tangent axis), both perpendicular to it, then renormalised.
    """
    facing = torch.zeros_like(truth)
    facing[:, 2] = 1.0
    exact = torch.where(hit, truth, facing)
    if not settings.enabled:
        z = torch.zeros(truth.shape[0])
        return exact, NormalsDraw(z, z)
    bias = math.tan(math.radians(settings.normal_bias_deg)) * smooth_field(tuple(truth.shape), 3, generator)
    white = math.tan(math.radians(settings.normal_noise_deg)) * torch.randn(truth.shape, generator=generator)
    tilted = F.normalize(exact + _tangential(bias + white, exact), dim=1)
    pred = torch.where(hit, tilted, facing)
    angle = torch.rad2deg(torch.acos((pred * exact).sum(1, keepdim=True).clamp(-1.0, 1.0)))
    mean = torch.stack([a[m].mean() if bool(m.any()) else a.new_zeros(()) for a, m in zip(angle, hit, strict=True)])
    worst = torch.stack([a[m].max() if bool(m.any()) else a.new_zeros(()) for a, m in zip(angle, hit, strict=True)])
    return pred, NormalsDraw(mean, worst)


# ------------------------------------------------------------------------------------------------------ inpainting
@dataclass(frozen=True)
class InpaintDraw:
    """The candidates of one inpainting call: per input image, which candidate is clean and what the others got."""

    clean_index: list[int]
    """Per input image, the index (0 … k−1) of its one clean candidate."""
    perturbations: list[list[InpaintPerturbation]]
    """Per input image, per candidate, the perturbation applied (``clean`` for one)."""
    details: list[list[dict[str, float | list[float]]]]
    """Per input image, per candidate, the drawn parameters (colour offset, σ, offset vector, patch box)."""


def plan_candidates(k: int, generator: torch.Generator) -> tuple[int, list[InpaintPerturbation]]:
    """Which of ``k`` candidates is clean (uniform) and which perturbation each other one gets (the four kinds in a
    seeded order, cycling)."""
    clean = int(torch.randint(k, (1,), generator=generator))
    order = [PERTURBATIONS[i] for i in torch.randperm(len(PERTURBATIONS), generator=generator).tolist()]
    kinds: list[InpaintPerturbation] = []
    j = 0
    for i in range(k):
        if i == clean:
            kinds.append("clean")
        else:
            kinds.append(order[j % len(order)])
            j += 1
    return clean, kinds


def perturb_fill(
    truth: Float[Tensor, "3 H W"],
    shifted: Float[Tensor, "3 H W"] | None,
    mask: Float[Tensor, "1 H W"],
    kind: InpaintPerturbation,
    settings: Imperfections,
    generator: torch.Generator,
) -> tuple[Float[Tensor, "3 H W"], dict[str, float | list[float]]]:
    """The content a candidate puts inside the mask: the truth, perturbed by ``kind``.

    Args:
        truth: the ground truth at the camera.
        shifted: the truth rendered with the camera shifted by ``settings.inpaint_offset_px`` (for ``offset``).
        mask: 1 where the candidate fills in.
    """
    if kind == "clean":
        return truth, {}
    if kind == "color_shift":
        direction = F.normalize(torch.randn(3, generator=generator), dim=0)
        offset = settings.inpaint_color_shift * direction
        return (truth + offset.view(3, 1, 1)).clamp(0.0, 1.0), {"color_offset": offset.tolist()}
    if kind == "blur":
        return gaussian_blur(truth[None], settings.inpaint_blur_sigma)[0], {"sigma_px": settings.inpaint_blur_sigma}
    if kind == "offset":
        if shifted is None:
            raise ValueError("an offset candidate needs the shifted render")
        return shifted, {"offset_px": settings.inpaint_offset_px}
    # wrong_patch: a square of the mask's bounding box shows another part of the same view (the truth rolled by
    # half the image), as a hallucinated object or texture would
    h, w = truth.shape[-2:]
    rows = torch.nonzero(mask[0].sum(1) > 0).flatten()
    cols = torch.nonzero(mask[0].sum(0) > 0).flatten()
    if len(rows) == 0:
        return truth, {"patch": []}
    r0, r1, c0, c1 = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    side = max(1, int(round(settings.inpaint_patch_fraction * max(r1 - r0, c1 - c0))))
    top = r0 + int(torch.randint(max(1, r1 - r0 - side + 1), (1,), generator=generator))
    left = c0 + int(torch.randint(max(1, c1 - c0 - side + 1), (1,), generator=generator))
    other = torch.roll(truth, shifts=(h // 2, w // 2), dims=(-2, -1))
    out = truth.clone()
    out[:, top : top + side, left : left + side] = other[:, top : top + side, left : left + side]
    return out, {"patch": [float(top), float(left), float(side)]}

"""Settings of the ``groundtruth:`` priors: which variant of the scene they answer from, and their imperfections.

Both are plain frozen dataclasses, so a method config can hold them and ``ns-train`` exposes every field on the
command line. :func:`scene3d.methods.common.priors.resolve_prior` takes them as its one ``groundtruth=`` keyword; real
and ``tiny-random`` presets ignore it.

Imperfections make the twins behave like the real models they stand in for (an unknown depth scale, noisy normals,
inpainting candidates that are not all good) so that the method's handling of those is measured too. Every one is
seeded (:attr:`Imperfections.seed`) and what was drawn is recorded on the twin (its ``records``). ``enabled=False``
turns them all off: every operation then returns the ground truth exactly. The defaults and their reasoning are in
``scene3d/datasets/gtpriors/README.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Look = Literal["auto", "plain", "stylized"]


@dataclass(frozen=True)
class Imperfections:
    """Seeded departures from the truth that resemble the real models'. ``enabled=False`` switches all off."""

    enabled: bool = True
    """The all-off switch: ``False`` makes every operation return the ground truth exactly."""
    seed: int = 0
    """Seed of every draw (per operation and call; see the twins' ``records``)."""
    depth_scale_range: tuple[float, float] = (0.5, 2.0)
    """Per-image scale of the predicted disparity, log-uniform in this range (Depth Anything's output has no unit)."""
    depth_shift_range: tuple[float, float] = (-0.3, 0.3)
    """Per-image shift, uniform in this range times the image's median scaled disparity."""
    depth_distortion: float = 0.1
    """Amplitude of a smooth multiplicative distortion ``1 + a·f(x, y)`` (``|f| ≤ 1``) of the disparity."""
    depth_distortion_cells: int = 3
    """The distortion field is bicubically upsampled from a ``cells × cells`` grid of random values (low
    frequency)."""
    depth_noise: float = 0.02
    """Per-pixel Gaussian noise, as a fraction of the image's median predicted value."""
    normal_noise_deg: float = 5.0
    """Standard deviation, in degrees, of the per-pixel angular noise of the predicted normals."""
    normal_bias_deg: float = 5.0
    """Amplitude, in degrees, of a smooth (low-frequency) tilt field added to the normals."""
    inpaint_color_shift: float = 0.1
    """Colour-shift candidates: the filled region's RGB is offset by a random colour of this norm."""
    inpaint_blur_sigma: float = 1.5
    """Blur candidates: Gaussian blur of the filled region, σ in pixels."""
    inpaint_offset_px: float = 0.5
    """Offset candidates: the truth is rendered shifted by this many pixels (a random direction)."""
    inpaint_patch_fraction: float = 0.35
    """Wrong-content candidates: a square patch of this fraction of the mask's bounding-box side shows another part
    of the same view (the truth rolled by half the image)."""
    uncond_blur: float = 0.03
    """The unconditional branch of the noise predictor predicts the render blurred with σ = this × the image side
    (with ``enabled=False`` it predicts the render itself and classifier-free guidance has no direction)."""

    def __post_init__(self) -> None:
        lo, hi = self.depth_scale_range
        if not 0.0 < lo <= hi:
            raise ValueError(f"depth_scale_range must be 0 < lo <= hi, got {self.depth_scale_range}")
        if self.depth_shift_range[0] > self.depth_shift_range[1]:
            raise ValueError(f"depth_shift_range must be lo <= hi, got {self.depth_shift_range}")
        for name in ("depth_distortion", "depth_noise", "normal_noise_deg", "normal_bias_deg", "inpaint_color_shift",
                     "inpaint_blur_sigma", "inpaint_offset_px", "uncond_blur"):  # fmt: skip
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if not 0.0 <= self.inpaint_patch_fraction <= 1.0:
            raise ValueError(f"inpaint_patch_fraction must be in [0, 1], got {self.inpaint_patch_fraction}")
        if self.depth_distortion_cells < 2:
            raise ValueError(f"depth_distortion_cells must be >= 2, got {self.depth_distortion_cells}")


@dataclass(frozen=True)
class GroundTruthOptions:
    """What a method tells the ``groundtruth:`` twins beyond the preset: the scene variant and the imperfections.

    This is the one documented path for method-specific context (``resolve_prior(..., groundtruth=...)``).
    """

    look: Look = "auto"
    """Which texture set answers: ``plain`` (the dataset's images), ``stylized`` (the ``--stylized`` set) or ``auto``
    (per prompt, by the keyword rule of ``README.md``: a prompt naming a style, e.g. "stylized", "cartoon",
    "painting", picks the stylized set)."""
    insert_box: tuple[tuple[float, float, float], tuple[float, float, float]] | None = None
    """World-space box ``((xmin, ymin, zmin), (xmax, ymax, zmax))``: the twins answer from the scene with one extra
    object filling it (Blended-NeRF's edit box). ``None``: no object inserted."""
    insert_shape: str = "auto"
    """Shape of the inserted object: a primitive name (``sphere``, ``box``, ``cylinder``, ``cone``, ``torus``,
    ``capsule``) or ``auto`` (the first of those, or a synonym, the prompt names; else a sphere)."""
    lone_object: str | None = None
    """Name of one object of the scene (``scene3d.objects[k].name``, e.g. ``object_00``) to answer from alone, with no
    ground, walls or other objects and its bounding-box centre moved to the origin (DreamPolish), or ``"auto"``
    (the foreground object nearest the scene's centre). ``None``: the whole scene."""
    antialias: bool = False
    """Average colour over 2×2 sub-pixel rays, as the dataset's images are (then a render at a stored view is that
    view's image, bit for bit). Off by default: one ray per pixel is ~4× faster (the twins render at every step)
    and is what a NeRF renders per pixel; edges are then aliased."""
    imperfections: Imperfections = field(default_factory=Imperfections)
    """Seeded departures from the truth; ``Imperfections(enabled=False)`` gives the exact truth."""

"""The one place a method turns a prior preset into a prior: :func:`resolve_prior`.

Three kinds of preset serve every generation method (docs/design.md, "Pretrained models and priors"):

* a real preset (``sd21-base``, ``clip-vit-b32``, …): the pretrained model, loaded offline by
  :mod:`scene3d.priors.loading`;
* ``tiny-random``: the same classes with tiny seeded random weights (the code runs; outputs are noise);
* ``groundtruth:PATH``: a twin of the same class answering each operation from the synthetic scene in ``PATH``
  (a dataset written by ``s3d data synth``), with seeded, recorded imperfections
  (:mod:`scene3d.datasets.gtpriors`).

Methods never call the ``load_*`` functions themselves: a prior setting in a method config is a preset string
handed to :func:`resolve_prior`, so every method accepts all three kinds. The objects returned have the classes the
methods already call (:class:`~scene3d.priors.StableDiffusionPrior`, :class:`~scene3d.priors.DepthEstimator`,
:class:`~scene3d.priors.NormalEstimator`, :class:`~scene3d.priors.CLIPSimilarity`,
:class:`~scene3d.priors.VGGFeatures`), so a method cannot tell which kind it got. Methods pass their cameras
(:class:`~scene3d.core.cameras.CameraBatch`) to every operation through ``cameras=``; real and ``tiny-random``
models ignore them.

Everything a ``groundtruth:`` twin needs beyond the preset (the box to insert an object in, the texture set, a lone
object, the imperfections) goes through the one keyword ``groundtruth=``
(:class:`~scene3d.datasets.gtpriors.options.GroundTruthOptions`); real and tiny presets ignore it.

Example:
    >>> sd = resolve_prior("diffusion", "tiny-random")
    >>> type(sd).__name__
    'StableDiffusionPrior'
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, overload

from scene3d.datasets.gtpriors.options import GroundTruthOptions

if TYPE_CHECKING:
    from scene3d.priors import CLIPSimilarity, DepthEstimator, NormalEstimator, StableDiffusionPrior, VGGFeatures
    from scene3d.priors.lora import VariationalScore
    from scene3d.priors.settings import PriorSettings

PriorKind = Literal["diffusion", "inpainting", "controlnet", "depth", "normals", "clip", "vgg"]
PRIOR_KINDS: tuple[str, ...] = ("diffusion", "inpainting", "controlnet", "depth", "normals", "clip", "vgg")
GROUNDTRUTH_PREFIX = "groundtruth:"
"""A preset ``groundtruth:PATH`` names a dataset written by ``s3d data synth``."""


def is_groundtruth(preset: str) -> bool:
    """Whether ``preset`` is a ``groundtruth:PATH`` preset."""
    return preset.startswith(GROUNDTRUTH_PREFIX)


@overload
def resolve_prior(
    kind: Literal["diffusion", "inpainting", "controlnet"], preset: str, settings: PriorSettings | None = None, *,
    base: str | None = None, groundtruth: GroundTruthOptions | None = None,
) -> StableDiffusionPrior: ...
@overload
def resolve_prior(
    kind: Literal["depth"], preset: str, settings: PriorSettings | None = None, *,
    base: str | None = None, groundtruth: GroundTruthOptions | None = None,
) -> DepthEstimator: ...
@overload
def resolve_prior(
    kind: Literal["normals"], preset: str, settings: PriorSettings | None = None, *,
    base: str | None = None, groundtruth: GroundTruthOptions | None = None,
) -> NormalEstimator: ...
@overload
def resolve_prior(
    kind: Literal["clip"], preset: str, settings: PriorSettings | None = None, *,
    base: str | None = None, groundtruth: GroundTruthOptions | None = None,
) -> CLIPSimilarity: ...
@overload
def resolve_prior(
    kind: Literal["vgg"], preset: str, settings: PriorSettings | None = None, *,
    base: str | None = None, groundtruth: GroundTruthOptions | None = None,
) -> VGGFeatures: ...
def resolve_prior(  # fmt: skip
    kind: PriorKind,
    preset: str,
    settings: PriorSettings | None = None,
    *,
    base: str | None = None,
    groundtruth: GroundTruthOptions | None = None,
) -> Any:
    """The prior of ``kind`` named by ``preset``: a real preset, ``tiny-random`` or ``groundtruth:PATH``.

    Args:
        kind: ``diffusion`` (:class:`StableDiffusionPrior`), ``inpainting`` (the same class with a 9-channel UNet),
            ``controlnet`` (a :class:`StableDiffusionPrior` carrying the ControlNet ``preset``, on the base model
            ``base``), ``depth`` (:class:`DepthEstimator`), ``normals`` (:class:`NormalEstimator`), ``clip``
            (:class:`CLIPSimilarity`) or ``vgg`` (:class:`VGGFeatures`).
        preset: a preset name of that kind (``s3d models list``), ``tiny-random``, or ``groundtruth:PATH``.
        settings: where models come from and how they run (device, dtype, …); default ``PriorSettings()``.
        base: for ``kind="controlnet"`` only: the base text-to-image preset (default ``sd15``, which the ControlNet
            presets were trained on; ``tiny-random`` with ``tiny-random``). A ``groundtruth:`` ControlNet needs none.
        groundtruth: scene variant and imperfections for a ``groundtruth:`` preset (ignored by the others).

    Raises:
        ValueError: an unknown kind, or a preset that is not of this kind.
        ModelNotFoundError: a real preset that is not available offline.
        DataError: ``groundtruth:PATH`` where PATH is not a scene3d synthetic dataset (names the path and what is
            missing).
    """
    if kind not in PRIOR_KINDS:
        raise ValueError(f"kind must be one of {PRIOR_KINDS}, got {kind!r}")
    if base is not None and kind != "controlnet":
        raise ValueError(f"base only applies to kind 'controlnet', got kind {kind!r}")
    if is_groundtruth(preset):
        from scene3d.datasets.gtpriors import load_groundtruth

        return load_groundtruth(kind, preset[len(GROUNDTRUTH_PREFIX):], groundtruth or GroundTruthOptions(), settings)
    from scene3d.priors import loading
    from scene3d.priors.presets import TINY_RANDOM

    if kind == "controlnet":
        if base is None:
            base = TINY_RANDOM if preset == TINY_RANDOM else "sd15"
        return loading.load_diffusion(base, settings, controlnet=preset)
    return loading.LOADERS[kind](preset, settings)


def variational_score(
    prior: StableDiffusionPrior, *, rank: int = 4, camera_dim: int = 16, device: Any = None
) -> VariationalScore:
    """The variational score ε_ψ of VSD / DSD for a resolved diffusion prior.

    For a real or ``tiny-random`` prior this is ``VariationalScore(prior, LoRAAdapter(prior.unet, rank,
    camera_dim=camera_dim, device=device))``: train ``.adapter.parameters()`` with ``.diffusion_loss``. A
    ``groundtruth:`` prior has no network to adapt; its twin holds the exact score of the last render at each camera
    (:mod:`scene3d.datasets.gtpriors.variational`), with the same methods. Methods build ε_ψ here, never with
    ``LoRAAdapter`` directly, so that they run on every kind of preset.
    """
    from scene3d.datasets.gtpriors.diffusion import GroundTruthDiffusionPrior
    from scene3d.priors.lora import LoRAAdapter, VariationalScore

    if isinstance(prior, GroundTruthDiffusionPrior):
        from scene3d.datasets.gtpriors.variational import GroundTruthVariationalScore

        return GroundTruthVariationalScore(prior)
    return VariationalScore(prior, LoRAAdapter(prior.unet, rank, camera_dim=camera_dim, device=device))

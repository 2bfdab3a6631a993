"""``groundtruth:`` priors: every prior operation answered from a synthetic scene written by ``s3d data synth``.

The twins subclass the priors the methods call, so a method cannot tell them from real models:

==============  ===========================================  ==============================================
kind            twin                                         answers
==============  ===========================================  ==============================================
diffusion       :class:`.diffusion.GroundTruthDiffusionPrior`  noise prediction (x̂₀ = the render), sampling
inpainting      the same, ``is_inpainting``                   k candidates, exactly one clean
controlnet      the same, with a ControlNet slot              as diffusion (the control image is not needed)
depth           :class:`.perception.GroundTruthDepth`         disparity through scale/shift/distortion/noise
normals         :class:`.perception.GroundTruthNormals`       camera-frame normals with angular noise
clip            :class:`.perception.GroundTruthCLIP`          similarity to the text's target at the camera
vgg             the ``tiny-random`` VGG                       features (no truth to answer; a fixed extractor)
==============  ===========================================  ==============================================

Resolve them with :func:`scene3d.methods.common.priors.resolve_prior` (``"groundtruth:PATH"``); twins resolved from
the same dataset and options share one :class:`.source.GroundTruthSource` (scene, ray casters, render cache,
records). See ``README.md`` in this folder for what a groundtruth measurement shows and what it does not.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from scene3d.datasets.gtpriors.options import GroundTruthOptions, Imperfections
from scene3d.datasets.gtpriors.render import GroundTruthRender, render
from scene3d.datasets.gtpriors.source import GroundTruthSource

__all__ = ["GroundTruthOptions", "GroundTruthRender", "GroundTruthSource", "Imperfections", "load_groundtruth",
           "render"]  # fmt: skip

logger = logging.getLogger(__name__)
_SOURCES: dict[tuple[str, float, GroundTruthOptions], GroundTruthSource] = {}


def source_for(path: str | Path, options: GroundTruthOptions) -> GroundTruthSource:
    """The shared source of ``path`` under ``options`` (re-read when ``transforms.json`` changed)."""
    from scene3d.datasets.stored import read_scene

    stored = read_scene(path)  # validates, with the one DataError for a path that is not a synthetic dataset
    transforms = stored.folder / "transforms.json"
    key = (str(stored.folder.resolve()), transforms.stat().st_mtime, options)
    if key not in _SOURCES:
        if len(_SOURCES) >= 8:
            _SOURCES.pop(next(iter(_SOURCES)))
        _SOURCES[key] = GroundTruthSource(stored, options)
    return _SOURCES[key]


def load_groundtruth(kind: str, path: str, options: GroundTruthOptions, settings: Any = None) -> Any:
    """The ``groundtruth:`` twin of ``kind`` for the synthetic dataset at ``path``.

    Args:
        kind: a prior kind (``diffusion``, ``inpainting``, ``controlnet``, ``depth``, ``normals``, ``clip``, ``vgg``).
        path: the dataset folder (or its ``transforms.json``).
        options: variant and imperfections.
        settings: a :class:`~scene3d.priors.PriorSettings`; its device is where the twins put their outputs.

    Raises:
        DataError: naming the path and what is missing, when it is not a scene3d synthetic dataset.
    """
    from scene3d.priors.settings import PriorSettings

    settings = settings or PriorSettings()
    if not path:
        raise ValueError("a groundtruth preset needs a dataset path: groundtruth:PATH")
    source = source_for(path, options)
    device = str(settings.torch_device())
    if kind in ("diffusion", "inpainting", "controlnet"):
        from scene3d.datasets.gtpriors.diffusion import GroundTruthDiffusionPrior

        return GroundTruthDiffusionPrior(
            source, inpainting=kind == "inpainting", controlnet=kind == "controlnet", device=device
        )
    if kind in ("depth", "normals", "clip"):
        from scene3d.datasets.gtpriors import perception

        cls = {"depth": perception.GroundTruthDepth, "normals": perception.GroundTruthNormals,
               "clip": perception.GroundTruthCLIP}[kind]  # fmt: skip
        return cls(source, device=device)
    if kind == "vgg":
        from scene3d.priors.loading import load_vgg

        logger.info("groundtruth:%s has no truth to give for VGG features; using the tiny-random VGG", path)
        return load_vgg("tiny-random", settings)
    raise ValueError(f"unknown prior kind {kind!r}")

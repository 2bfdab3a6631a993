"""Choosing between a CUDA library (gsplat, nerfacc, tiny-cuda-nn) and scene3d's pure-torch twin, per call.

``"auto"`` uses the CUDA library when the inputs are on a CUDA device and the library *works* there, else the
torch twin; ``"torch"`` always uses the twin; ``"cuda-lib"`` demands the library and CUDA inputs.

"Works" is decided once per library and device by a probe: import the library and run one tiny call of each
kernel family scene3d uses on that device (:data:`PROBES`). An import is not enough: nerfacc 0.5.2 and gsplat 1.4.0
import without error and build their CUDA kernels on the first call, which raises when there is no working
toolchain or the build does not match the GPU. Any failure of the probe (a failed import, a failed build, a
kernel error) makes ``"auto"`` fall back to the twin with one warning per library, naming the error; the answer is
cached, so a failing library costs one probe per process. ``"cuda-lib"`` raises
:class:`~scene3d.core.errors.BackendUnavailableError` with the probe's error instead.

Nothing here imports a CUDA library at import time, and nothing probes on a machine without CUDA inputs: a CPU
tensor never triggers a build.

Example:
    >>> import torch
    >>> use_cuda_lib("auto", torch.device("cpu"), "nerfacc")   # CPU inputs: the torch twin, nothing probed
    False
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Literal

import torch

from scene3d.core.errors import BackendUnavailableError

logger = logging.getLogger(__name__)

Backend = Literal["auto", "cuda-lib", "torch"]
"""A backend setting: ``"auto"`` | ``"cuda-lib"`` | ``"torch"``."""

BACKENDS: tuple[str, ...] = ("auto", "cuda-lib", "torch")


def check_backend(backend: str, name: str = "backend") -> None:
    """Raise ``ValueError`` unless ``backend`` is one of :data:`BACKENDS`."""
    if backend not in BACKENDS:
        raise ValueError(f"{name} must be one of {BACKENDS}, got {backend!r}")


# ---------------------------------------------------------------------------------------------- probes


def _probe_gsplat(device: torch.device) -> None:
    """One Gaussian rasterized into an 8×8 image, forward and backward (gsplat's projection, tiling, raster)."""
    from gsplat.rendering import rasterization

    kw = {"device": device, "dtype": torch.float32}
    means = torch.tensor([[0.0, 0.0, 2.0]], **kw, requires_grad=True)
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]], **kw)
    scales = torch.full((1, 3), 0.2, **kw)
    opacities = torch.full((1,), 0.9, **kw)
    colors = torch.ones(1, 3, **kw)
    Ks = torch.tensor([[[8.0, 0.0, 4.0], [0.0, 8.0, 4.0], [0.0, 0.0, 1.0]]], **kw)
    render, alphas, _ = rasterization(means, quats, scales, opacities, colors, torch.eye(4, **kw)[None], Ks, 8, 8)
    render.sum().backward()
    _check_probe(bool(alphas.max() > 0) and means.grad is not None, "gsplat rendered nothing from a visible Gaussian")


def _probe_nerfacc(device: torch.device) -> None:
    """Packed compositing (``render_weight_from_alpha``) and grid traversal (``traverse_grids``)."""
    import nerfacc
    from nerfacc.grid import traverse_grids

    kw = {"device": device, "dtype": torch.float32}
    alphas = torch.tensor([0.5, 0.5, 0.25], **kw)
    weights, _ = nerfacc.render_weight_from_alpha(
        alphas, ray_indices=torch.tensor([0, 0, 1], device=device), n_rays=2
    )
    origins = torch.tensor([[0.0, 0.0, -2.0]], **kw)
    directions = torch.tensor([[0.0, 0.0, 1.0]], **kw)
    binaries = torch.ones(1, 2, 2, 2, dtype=torch.bool, device=device)
    aabbs = torch.tensor([[-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]], **kw)
    _, samples = traverse_grids(
        origins, directions, binaries, aabbs, near_planes=torch.zeros(1, **kw), far_planes=torch.full((1,), 4.0, **kw),
        step_size=0.5,
    )  # fmt: skip
    _check_probe(abs(float(weights[0]) - 0.5) < 1e-4 and samples.ray_indices.numel() > 0, "nerfacc returned wrong values")


def _probe_tinycudann(device: torch.device) -> None:
    """A two-level hash-grid encoding of four points, forward and backward."""
    import tinycudann as tcnn

    config = {"otype": "HashGrid", "n_levels": 2, "n_features_per_level": 2, "log2_hashmap_size": 8,
              "base_resolution": 4, "per_level_scale": 1.5}  # fmt: skip
    with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
        encoding = tcnn.Encoding(3, config, dtype=torch.float32)
        out = encoding(torch.rand(4, 3, device=device))
        out.sum().backward()
    _check_probe(tuple(out.shape) == (4, 4) and bool(torch.isfinite(out).all()), "tiny-cuda-nn returned wrong values")


def _check_probe(ok: bool, problem: str) -> None:
    if not ok:
        raise RuntimeError(problem)


PROBES: dict[str, Callable[[torch.device], None]] = {
    "gsplat": _probe_gsplat,
    "nerfacc": _probe_nerfacc,
    "tinycudann": _probe_tinycudann,
}
"""The probe of each CUDA library scene3d calls: raises when the library cannot run on the given device."""

_results: dict[tuple[str, str], BaseException | None] = {}  # (module, device) -> None (works) or the probe's error
_lock = threading.Lock()  # training and the viewer's render thread may ask at the same moment


def probe_library(module: str, device: torch.device) -> BaseException | None:
    """Run ``module``'s probe on ``device`` once per process; ``None`` when it works, else the error it raised.

    The first failure per library is logged as one warning that names the error and the fallback.
    """
    if module not in PROBES:
        raise ValueError(f"module must be one of {sorted(PROBES)}, got {module!r}")
    key = (module, str(device))
    with _lock:
        if key not in _results:
            try:
                PROBES[module](device)
                _results[key] = None
            except Exception as err:  # noqa: BLE001 - any failure (import, kernel build, launch) means "use the twin"
                _results[key] = err
                logger.warning(
                    "%s does not work on %s (%s: %s); scene3d uses its pure-torch twin instead (same results, "
                    "slower). Pass backend='torch' to skip the CUDA library, or repair its install.",
                    module, device, type(err).__name__, _first_line(err),
                )  # fmt: skip
        return _results[key]


def library_works(module: str, device: torch.device) -> bool:
    """Whether the CUDA library ``module`` runs on ``device`` (:func:`probe_library`, cached)."""
    return probe_library(module, device) is None


def use_cuda_lib(backend: str, device: torch.device, module: str) -> bool:
    """Resolve ``backend`` for inputs on ``device``: ``True`` means call the CUDA library ``module``.

    Raises:
        ValueError: for an unknown backend, or ``"cuda-lib"`` with inputs that are not on a CUDA device.
        BackendUnavailableError: for ``"cuda-lib"`` when ``module`` does not work on ``device``.
    """
    check_backend(backend)
    if backend == "torch":
        return False
    if device.type != "cuda":
        if backend == "cuda-lib":
            raise ValueError(f"backend='cuda-lib' ({module}) needs CUDA tensors, got tensors on {device}")
        return False
    err = probe_library(module, device)
    if err is not None and backend == "cuda-lib":
        raise BackendUnavailableError(module, str(device), f"{type(err).__name__}: {_first_line(err)}") from err
    return err is None


def reset_probes() -> None:
    """Forget every cached probe result (tests; a process that repaired a library)."""
    with _lock:
        _results.clear()


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0] if text else "no message"

"""``groundtruth:`` priors: every prior operation answered from a synthetic scene written by ``s3d data synth``.

Resolved through :func:`scene3d.methods.common.priors.resolve_prior`; settings in :mod:`.options`.
"""

from __future__ import annotations

from typing import Any

from scene3d.datasets.gtpriors.options import GroundTruthOptions, Imperfections

__all__ = ["GroundTruthOptions", "Imperfections", "load_groundtruth"]


def load_groundtruth(kind: str, path: str, options: GroundTruthOptions, settings: Any = None) -> Any:
    """The ``groundtruth:`` twin of ``kind`` for the dataset at ``path`` (not yet available in this version)."""
    raise NotImplementedError(
        f"groundtruth:{path}: the groundtruth twins are not in this version of scene3d yet; use a real preset or "
        "'tiny-random'"
    )

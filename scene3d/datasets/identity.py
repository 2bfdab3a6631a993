"""Whether two dataset paths hold the same scene: the same frames seen from the same cameras.

A run trained on one dataset and continued on another (ReGS restyling an ``s3d-splat`` run, say) must be refused, even
when the second is a copy in another folder (accepted) or another scene of the same kind (refused). The fingerprint is
a hash of what the cameras see: each frame's image name, pose and intrinsics as ``transforms.json`` states them,
rounded so that a file rewritten by another JSON writer still matches.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

_INTRINSICS = ("fl_x", "fl_y", "cx", "cy", "w", "h", "camera_model")


def transforms_file(data: str | Path) -> Path:
    """The ``transforms.json`` of a dataset given as its folder or as the file itself."""
    data = Path(data)
    return data if data.suffix == ".json" else data / "transforms.json"


def dataset_fingerprint(data: str | Path) -> str | None:
    """A hash of the dataset's frames (image names, poses, intrinsics), or ``None`` when it cannot be read."""
    try:
        meta = json.loads(transforms_file(data).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list):
        return None

    def rounded(value: Any) -> Any:
        if isinstance(value, float):
            return round(value, 5)
        if isinstance(value, list):
            return [rounded(v) for v in value]
        return value

    shared = {k: rounded(meta.get(k)) for k in _INTRINSICS}
    frames = []
    for frame in meta["frames"]:
        if not isinstance(frame, dict):
            return None
        frames.append([Path(str(frame.get("file_path", ""))).name, rounded(frame.get("transform_matrix"))]
                      + [rounded(frame.get(k, shared[k])) for k in _INTRINSICS])  # fmt: skip
    frames.sort(key=lambda f: str(f[0]))
    return hashlib.sha256(json.dumps(frames, sort_keys=True).encode()).hexdigest()

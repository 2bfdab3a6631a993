"""A CLNeRF run folder: what it carries to the next scan, and the plain record of which scans it can render.

Next to nerfstudio's ``config.yml`` and ``nerfstudio_models/step-*.ckpt`` a CLNeRF run writes:

``clnerf_scans.json``
    For people and scripts: every scan id the run's checkpoints render, where each scan's data came from, how many
    poses it contributed, which run trained it, which trainer steps trained which scan, the settings, and the bytes
    kept between scans. Every checkpoint of a run renders the scan ids listed for its step range.
``clnerf_state.pt``
    What the next scan needs besides the model weights: the pose store, the reservoir buffer (keys and real
    images), the frame statistics of the stored cameras and the model's size signature. Tensors and plain
    containers only (``torch.load(weights_only=True)``), written atomically.

A new run reads the previous run's folder and writes its own copies: a previous run's folder is never modified.

Example:
    >>> from pathlib import Path
    >>> resolve_run_dir(Path("/nonexistent/run"))  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    RunFolderError: /nonexistent/run: does not exist
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from scene3d.core.checkpoint import atomic_open, atomic_torch_save, latest_checkpoint, load_checkpoint
from scene3d.core.errors import RunFolderError
from scene3d.methods.clnerf.frames import FrameStats
from scene3d.methods.clnerf.replay import PoseStore, ReservoirBuffer

SCANS_JSON = "clnerf_scans.json"
STATE_FILE = "clnerf_state.pt"
FORMAT = "scene3d.clnerf/1"
CHECKPOINT_FOLDER = "nerfstudio_models"


@dataclass(frozen=True)
class ScanRecord:
    """One scan a run has seen."""

    scan_id: int
    """The id the model renders this scan with (its embedding row)."""
    source: str
    """The data folder the scan was read from."""
    name: str
    """The scan's name in its dataset (``step_01``, a WAT capture folder, or the folder name)."""
    num_train_poses: int
    """Training cameras kept in the pose store."""
    num_eval_views: int
    """Held-out views of the scan in its dataset (not stored)."""
    trained_in: str
    """Run folder whose training first covered this scan."""


@dataclass(frozen=True)
class StepRange:
    """Trainer steps that trained one scan; checkpoints saved in the range render ``renders_scan_ids``."""

    scan_id: int
    first_step: int
    last_step: int
    renders_scan_ids: tuple[int, ...]


@dataclass
class CarriedState:
    """What a run carries to the next scan besides the model weights (saved as ``clnerf_state.pt``)."""

    poses: PoseStore
    buffer: ReservoirBuffer
    buffer_images: dict[int, Tensor]
    """Pose-store index → uint8 ``(H, W, 3)`` real image, for every key in ``buffer``."""
    frame: FrameStats | None
    """Statistics of every stored camera (``None`` before any scan)."""
    model_signature: dict[str, Any]
    """The model settings that must match for a checkpoint to load (hash grid, widths, embedding sizes)."""
    scans: list[ScanRecord] = field(default_factory=list)

    def to_state(self) -> dict[str, Any]:
        """Tensors and plain containers only."""
        return {
            "format": FORMAT,
            "poses": self.poses.to_state(),
            "buffer": self.buffer.to_state(),
            "buffer_images": {int(k): v.detach().cpu().contiguous() for k, v in self.buffer_images.items()},
            "frame": None if self.frame is None else self.frame.to_json(),
            "model_signature": dict(self.model_signature),
            "scans": [asdict(s) for s in self.scans],
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], where: Path) -> CarriedState:
        """Inverse of :meth:`to_state`; ``where`` names the file in errors."""
        if state.get("format") != FORMAT:
            raise RunFolderError(where, f"has format {state.get('format')!r}, expected {FORMAT!r}")
        try:
            buffer = ReservoirBuffer.from_state(state["buffer"])
            images = {int(k): v for k, v in state["buffer_images"].items()}
            if set(images) != set(buffer.keys):
                raise RunFolderError(where, f"buffer keys {sorted(buffer.keys)} do not match its images {sorted(images)}")
            return cls(
                poses=PoseStore.from_state(state["poses"]),
                buffer=buffer,
                buffer_images=images,
                frame=None if state["frame"] is None else FrameStats.from_json(state["frame"]),
                model_signature=dict(state["model_signature"]),
                scans=[ScanRecord(**s) for s in state["scans"]],
            )
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, RunFolderError):
                raise
            raise RunFolderError(where, f"is damaged ({type(err).__name__}: {err})") from err

    @property
    def num_scans(self) -> int:
        """Scans seen so far."""
        return len(self.scans)

    def buffer_nbytes(self) -> int:
        """Bytes of the real images kept in the reservoir."""
        return sum(v.numel() * v.element_size() for v in self.buffer_images.values())


@dataclass(frozen=True)
class PreviousRun:
    """A finished CLNeRF run read back: its folder, record, carried state and model weights."""

    run_dir: Path
    record: dict[str, Any]
    """The parsed ``clnerf_scans.json``."""
    state: CarriedState
    checkpoint: Path
    model_state: dict[str, Tensor]
    """The checkpoint's model weights (nerfstudio's ``_model.`` prefix removed)."""


def _method_name_of(config_yml: Path) -> str | None:
    """The ``method_name`` of a nerfstudio ``config.yml``, read as text (no nerfstudio object is unpickled)."""
    match = re.search(r"^method_name:\s*(\S+)\s*$", config_yml.read_text(encoding="utf-8", errors="replace"), re.M)
    return None if match is None else match.group(1).strip("'\"")


def resolve_run_dir(path: Path) -> Path:
    """The run folder of ``path`` (the folder, its ``config.yml``, its checkpoint folder or a checkpoint in it).

    Raises:
        RunFolderError: if it does not exist or is not a CLNeRF run (with the method that made it, when known).
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise RunFolderError(path, "does not exist")
    run_dir = path
    if path.is_file():
        run_dir = path.parent.parent if path.suffix == ".ckpt" else path.parent
    elif path.name == CHECKPOINT_FOLDER:
        run_dir = path.parent
    if not (run_dir / SCANS_JSON).is_file():
        config = run_dir / "config.yml"
        method = _method_name_of(config) if config.is_file() else None
        if method is not None and not method.startswith("clnerf"):
            raise RunFolderError(run_dir, f"was trained by method {method!r}, not clnerf; pass a clnerf run folder")
        raise RunFolderError(
            run_dir, f"is not a CLNeRF run folder (no {SCANS_JSON}); pass the folder that holds a clnerf run's config.yml"
        )
    return run_dir


def load_previous_run(path: Path, *, allow_incomplete: bool = False) -> PreviousRun:
    """Read a previous CLNeRF run (read only: nothing in it is written).

    Args:
        path: the run folder, its ``config.yml`` or its checkpoint folder.
        allow_incomplete: accept a run whose record says training did not finish (its latest checkpoint is used).

    Raises:
        RunFolderError: a missing folder, another method's run, an unfinished run, a missing or damaged file.
    """
    run_dir = resolve_run_dir(path)
    try:
        record = json.loads((run_dir / SCANS_JSON).read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise RunFolderError(run_dir / SCANS_JSON, f"is not valid JSON ({err})") from err
    if record.get("format") != FORMAT:
        raise RunFolderError(run_dir / SCANS_JSON, f"has format {record.get('format')!r}, expected {FORMAT!r}")
    if record.get("status") != "complete" and not allow_incomplete:
        raise RunFolderError(
            run_dir,
            f"did not finish training (status {record.get('status')!r}); finish it, or pass "
            "--pipeline.allow-incomplete-previous-run True to replay its latest checkpoint",
        )
    state_path = run_dir / STATE_FILE
    state = CarriedState.from_state(load_checkpoint(state_path), state_path)
    checkpoint = latest_checkpoint(run_dir / CHECKPOINT_FOLDER)
    ckpt = load_checkpoint(checkpoint)
    if "pipeline" not in ckpt:
        raise RunFolderError(checkpoint, "has no 'pipeline' entry (not a nerfstudio checkpoint)")
    prefix = "_model."
    model_state = {k[len(prefix) :]: v for k, v in ckpt["pipeline"].items() if k.startswith(prefix)}
    if not model_state:
        raise RunFolderError(checkpoint, "holds no model weights")
    return PreviousRun(run_dir=run_dir, record=record, state=state, checkpoint=checkpoint, model_state=model_state)


def save_state(run_dir: Path, state: CarriedState) -> None:
    """Write ``clnerf_state.pt`` atomically."""
    atomic_torch_save(state.to_state(), Path(run_dir) / STATE_FILE)


def write_record(run_dir: Path, record: dict[str, Any]) -> None:
    """Write ``clnerf_scans.json`` atomically."""
    with atomic_open(Path(run_dir) / SCANS_JSON, "w") as f:
        f.write(json.dumps(record, indent=2) + "\n")


def build_record(
    *,
    method_name: str,
    status: str,
    state: CarriedState,
    step_ranges: list[StepRange],
    previous_run: Path | None,
    settings: dict[str, Any],
    model_bytes: int,
) -> dict[str, Any]:
    """The content of ``clnerf_scans.json`` (module docstring)."""
    renders = list(range(state.num_scans))
    return {
        "format": FORMAT,
        "method_name": method_name,
        "status": status,
        "renders_scan_ids": renders,
        "checkpoints": {
            "folder": CHECKPOINT_FOLDER,
            "note": "a checkpoint step-S.ckpt renders the scan ids of the step range holding S; the latest "
            "checkpoint of a complete run renders every id in renders_scan_ids",
            "step_ranges": [asdict(r) | {"renders_scan_ids": list(r.renders_scan_ids)} for r in step_ranges],
        },
        "scans": [asdict(s) for s in state.scans],
        "previous_run": None if previous_run is None else str(previous_run),
        "settings": settings,
        "kept_between_scans": {
            "model_bytes": model_bytes,
            "pose_store_bytes": state.poses.nbytes(),
            "buffer_images": len(state.buffer.keys),
            "buffer_bytes": state.buffer_nbytes(),
            "images_stored": len(state.buffer.keys),
        },
        "frame": None if state.frame is None else state.frame.to_json(),
    }


def scans_for_step(record: dict[str, Any], step: int) -> list[int]:
    """Scan ids a checkpoint saved at ``step`` renders, from a parsed ``clnerf_scans.json``.

    Raises:
        ValueError: if no step range of the record holds ``step``.
    """
    for r in record["checkpoints"]["step_ranges"]:
        if r["first_step"] <= step <= r["last_step"]:
            return list(r["renders_scan_ids"])
    raise ValueError(f"step {step} is in no step range of this run ({record['checkpoints']['step_ranges']})")


def model_nbytes(model_state: dict[str, Tensor]) -> int:
    """Bytes of a state dict's tensors."""
    return sum(v.numel() * v.element_size() for v in model_state.values() if isinstance(v, torch.Tensor))

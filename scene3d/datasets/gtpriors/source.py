"""The scene a set of ``groundtruth:`` twins answers from: a stored dataset, its variants, renders and records.

One :class:`GroundTruthSource` is shared by every twin resolved from the same dataset and options (one ray caster
per scene variant). It turns a prompt into a look and a variant (the keyword rules of :mod:`.variants`), renders
cameras with a small cache (classifier-free guidance asks twice per step, a sampling loop many times), draws the
seeded imperfections and keeps what it drew (:attr:`GroundTruthSource.records`).
"""

from __future__ import annotations

import hashlib
import logging
from collections import OrderedDict, deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float
from torch import Tensor

from scene3d.core.cameras import CameraBatch
from scene3d.datasets.gtpriors.options import GroundTruthOptions
from scene3d.datasets.gtpriors.render import GroundTruthRender, render
from scene3d.datasets.gtpriors.variants import insert_object, lone_object, look_for_prompt, shape_for_prompt
from scene3d.datasets.scene import Scene
from scene3d.datasets.stored import StoredScene, read_scene

logger = logging.getLogger(__name__)

RECORDS_KEPT = 256
"""How many operation records a source keeps (the newest)."""


@dataclass(frozen=True)
class Target:
    """What a prompt asks the scene for: the look and the scene variant (an inserted shape, or none)."""

    stylized: bool
    insert_shape: str | None


@dataclass(frozen=True)
class OperationRecord:
    """One twin operation: which, the call number, the seed of its draws, what the prompts selected and what was
    drawn (an :mod:`.imperfections` draw, or ``None``)."""

    operation: str
    call: int
    seed: int
    targets: tuple[Target, ...]
    draw: Any


class GroundTruthSource:
    """A stored synthetic scene, the variant the options ask for, and everything the twins share.

    Args:
        stored: the dataset's scene (:func:`~scene3d.datasets.stored.read_scene`).
        options: variant and imperfections.
    """

    def __init__(self, stored: StoredScene, options: GroundTruthOptions) -> None:
        self.stored = stored
        self.options = options
        base = stored.scene
        self.lone_offset: Float[np.ndarray, "3"] | None = None
        if options.lone_object is not None:
            base, self.lone_offset = lone_object(base, options.lone_object)
        self.base = base
        self._variants: dict[str | None, Scene] = {None: base}
        self._cache: OrderedDict[tuple[Any, ...], GroundTruthRender] = OrderedDict()
        self._calls: dict[str, int] = {}
        self.records: deque[OperationRecord] = deque(maxlen=RECORDS_KEPT)
        """The newest operation records (what each call selected and drew)."""

    @classmethod
    def open(cls, path: str | Path, options: GroundTruthOptions) -> GroundTruthSource:
        return cls(read_scene(path), options)

    # ------------------------------------------------------------------------------------------ prompts
    def target(self, prompt: str) -> Target:
        """The look and variant ``prompt`` selects (``options.look`` / ``insert_shape`` when not ``auto``)."""
        o = self.options
        stylized = look_for_prompt(prompt) if o.look == "auto" else o.look == "stylized"
        shape = None
        if o.insert_box is not None:
            shape = shape_for_prompt(prompt) if o.insert_shape == "auto" else o.insert_shape
        return Target(stylized, shape)

    def scene_for(self, target: Target) -> Scene:
        """The scene variant of ``target`` (built once)."""
        key = target.insert_shape
        if key not in self._variants:
            assert self.options.insert_box is not None
            self._variants[key] = insert_object(self.base, self.options.insert_box, key, self.options.imperfections.seed)
        return self._variants[key]

    # ------------------------------------------------------------------------------------------ rendering
    def render(self, cameras: CameraBatch, target: Target, *, antialias: bool | None = None) -> GroundTruthRender:
        """The variant of ``target`` seen from ``cameras`` (cached: the last 16 distinct requests)."""
        aa = self.options.antialias if antialias is None else antialias
        cams = cameras.to("cpu")
        key = (
            target, aa, cams.model, cams.width, cams.height,
            hashlib.sha1(cams.c2w.float().numpy().tobytes() + (b"" if cams.K is None else cams.K.float().numpy().tobytes())).hexdigest(),
        )  # fmt: skip
        hit = self._cache.get(key)
        if hit is not None:
            self._cache.move_to_end(key)
            return hit
        out = render(self.scene_for(target), cams, stylized=target.stylized, antialias=aa)
        self._cache[key] = out
        if len(self._cache) > 16:
            self._cache.popitem(last=False)
        return out

    def render_targets(
        self, cameras: CameraBatch, targets: list[Target], *, antialias: bool | None = None
    ) -> GroundTruthRender:
        """Camera ``b`` rendered for ``targets[b]`` (one render per distinct target)."""
        if len(targets) != len(cameras):
            raise ValueError(f"need one target per camera, got {len(targets)} for {len(cameras)}")
        distinct = list(dict.fromkeys(targets))
        if len(distinct) == 1:
            return self.render(cameras, distinct[0], antialias=antialias)
        parts: dict[str, list[Tensor]] = {}
        index = torch.tensor([distinct.index(t) for t in targets])
        renders = [self.render(cameras, t, antialias=antialias) for t in distinct]
        fields = ("rgb", "depth", "normals", "mask", "hit", "object_ids")
        for name in fields:
            stacked = torch.stack([getattr(r, name) for r in renders])  # (T, B, ...)
            parts[name] = stacked[index, torch.arange(len(targets))]
        return GroundTruthRender(**parts)  # type: ignore[arg-type]

    # ------------------------------------------------------------------------------------------ draws
    def generator(self, operation: str, given: torch.Generator | None = None) -> tuple[torch.Generator, int, int]:
        """The generator of this call's draws: the caller's when given, else one seeded by (imperfection seed,
        operation, call number); returns it, the call number and the seed (−1 for the caller's)."""
        call = self._calls.get(operation, 0)
        self._calls[operation] = call + 1
        if given is not None:
            return given, call, -1
        digest = hashlib.sha256(f"{self.options.imperfections.seed}/{operation}/{call}".encode()).digest()
        seed = int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)
        return torch.Generator().manual_seed(seed), call, seed

    def record(self, operation: str, call: int, seed: int, targets: list[Target], draw: Any) -> None:
        self.records.append(OperationRecord(operation, call, seed, tuple(targets), draw))

    def last(self, operation: str) -> OperationRecord:
        """The newest record of ``operation`` (``KeyError`` when there is none)."""
        for rec in reversed(self.records):
            if rec.operation == operation:
                return rec
        raise KeyError(f"no {operation!r} operation recorded")


def needs_cameras(cameras: CameraBatch | None, operation: str) -> CameraBatch:
    """The cameras, or the error telling a method to pass them."""
    if cameras is None:
        raise ValueError(
            f"a groundtruth prior answers {operation} from its scene at the cameras of the images: pass cameras= "
            "(a scene3d.core.cameras.CameraBatch, one per image)"
        )
    return cameras

"""CLNeRF's replay bookkeeping as pure functions: the pose store, the reservoir buffer, replay targets, ray picks.

CLNeRF (Cai & Müller, ICCV 2023, Sec. 3.2) keeps only the camera poses of past scans. Before scan ``t`` is trained,
every stored pose of scans ``< t`` is rendered by the model trained up to scan ``t − 1`` **with that pose's own scan
id** (generative replay); those renders are the targets of the old poses, and rays are drawn uniformly over all
images, new and replayed. An optional buffer of ``k`` real images, filled by reservoir sampling, replaces the renders
of the poses it holds (the released scripts use ``k = 10``; the paper's headline setting is ``k = 0``).

Official code: ``datasets/NGPA/colmap.py::ColmapDataset_NGPA_CLNerf.read_meta`` (reservoir over image indices,
``random.randint(0, i)`` with ``i`` the number of images seen before, renders swapped in for every old image not in
the buffer) and ``train_ngpgv2_CLNerf.py::test_step`` (renders of the ``rep`` split saved as 8-bit PNGs).

Nothing here imports nerfstudio; the pipeline turns these records into nerfstudio cameras and batches.

Example:
    >>> import torch
    >>> buf = ReservoirBuffer.empty(2)
    >>> buf = reservoir_update(buf, [0, 1, 2, 3], torch.Generator().manual_seed(0))
    >>> len(buf.keys), buf.num_seen
    (2, 4)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from jaxtyping import Float, Int, UInt8
from torch import Tensor


@dataclass(frozen=True)
class ReservoirBuffer:
    """A reservoir of at most ``capacity`` real images (Vitter's Algorithm R), keyed by pose-store index.

    Every image ever offered has had the same chance ``capacity / num_seen`` of being in the buffer.
    """

    capacity: int
    """``k``: the most images kept (0 disables the buffer)."""
    keys: tuple[int, ...] = ()
    """Pose-store indices of the kept images, in slot order."""
    num_seen: int = 0
    """Images offered so far (over every scan)."""

    @classmethod
    def empty(cls, capacity: int) -> ReservoirBuffer:
        """A buffer with ``capacity`` slots and nothing seen."""
        if capacity < 0:
            raise ValueError(f"capacity must be >= 0, got {capacity}")
        return cls(capacity=capacity)

    def to_state(self) -> dict[str, Any]:
        """Plain containers (loads with ``torch.load(weights_only=True)``)."""
        return {"capacity": self.capacity, "keys": list(self.keys), "num_seen": self.num_seen}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ReservoirBuffer:
        """Inverse of :meth:`to_state`."""
        return cls(capacity=int(state["capacity"]), keys=tuple(int(k) for k in state["keys"]), num_seen=int(state["num_seen"]))


def reservoir_update(buffer: ReservoirBuffer, offered: Sequence[int], generator: torch.Generator) -> ReservoirBuffer:
    """Offer items to the reservoir in order (Algorithm R, as the official ``read_meta``).

    The ``n``-th item offered overall (1-based) fills a free slot while there is one; otherwise a slot ``j`` is
    drawn uniformly from ``{0, …, n − 1}`` and the item replaces slot ``j`` when ``j < k``. Each item ends up in the
    buffer with probability ``k / n_total``.

    Args:
        buffer: the current reservoir.
        offered: keys of the new items, in the order they are offered.
        generator: the random source (seeded by the caller, so runs are reproducible).

    Returns:
        The updated reservoir (a new object; ``buffer`` is unchanged).
    """
    keys = list(buffer.keys)
    seen = buffer.num_seen
    for key in offered:
        if len(keys) < buffer.capacity:
            keys.append(int(key))
        elif buffer.capacity > 0:
            slot = int(torch.randint(0, seen + 1, (1,), generator=generator))
            if slot < buffer.capacity:
                keys[slot] = int(key)
        seen += 1
    return ReservoirBuffer(capacity=buffer.capacity, keys=tuple(keys), num_seen=seen)


@dataclass(frozen=True)
class PoseStore:
    """Every training camera of every scan seen so far, with its scan id: all CLNeRF keeps of past scans.

    Cameras are pinhole-family nerfstudio cameras (c2w in OpenGL axes); ``distortion`` holds nerfstudio's six
    ``(k1, k2, k3, k4, p1, p2)`` and ``camera_types`` nerfstudio's ``CameraType`` values, so the pipeline can rebuild
    the exact cameras. The store only grows: a pose's index is its key for the reservoir.
    """

    camera_to_worlds: Float[Tensor, "N 3 4"]
    intrinsics: Float[Tensor, "N 4"]
    """``fx, fy, cx, cy`` in pixels."""
    sizes: Int[Tensor, "N 2"]
    """``width, height`` in pixels."""
    distortion: Float[Tensor, "N 6"]
    camera_types: Int[Tensor, " N"]
    scan_ids: Int[Tensor, " N"]

    def __post_init__(self) -> None:
        n = self.camera_to_worlds.shape[0]
        for name in ("intrinsics", "sizes", "distortion", "camera_types", "scan_ids"):
            if getattr(self, name).shape[0] != n:
                raise ValueError(f"{name} must have {n} rows (one per pose), got {getattr(self, name).shape[0]}")

    @classmethod
    def empty(cls) -> PoseStore:
        """A store with no poses."""
        return cls(
            camera_to_worlds=torch.zeros(0, 3, 4), intrinsics=torch.zeros(0, 4), sizes=torch.zeros(0, 2, dtype=torch.long),
            distortion=torch.zeros(0, 6), camera_types=torch.zeros(0, dtype=torch.long), scan_ids=torch.zeros(0, dtype=torch.long),
        )  # fmt: skip

    def __len__(self) -> int:
        return int(self.camera_to_worlds.shape[0])

    @property
    def num_scans(self) -> int:
        """``1 + max scan id`` (0 when empty)."""
        return 0 if len(self) == 0 else int(self.scan_ids.max()) + 1

    def indices_of_scans(self, scan_ids: Sequence[int]) -> Int[Tensor, " M"]:
        """Store indices of the poses whose scan id is in ``scan_ids``, in store order."""
        wanted = torch.as_tensor(list(scan_ids), dtype=torch.long)
        return torch.nonzero(torch.isin(self.scan_ids, wanted)).flatten()

    def scan_counts(self) -> dict[int, int]:
        """Poses per scan id."""
        ids, counts = torch.unique(self.scan_ids, return_counts=True)
        return {int(i): int(c) for i, c in zip(ids, counts)}

    def append(self, other: PoseStore) -> PoseStore:
        """A new store with ``other``'s poses after this one's (indices of existing poses do not change)."""
        return PoseStore(*(torch.cat([getattr(self, f), getattr(other, f).to(getattr(self, f).dtype)]) for f in _FIELDS))

    def select(self, indices: Int[Tensor, " M"]) -> PoseStore:
        """The poses at ``indices``."""
        return PoseStore(*(getattr(self, f)[indices] for f in _FIELDS))

    def to_state(self) -> dict[str, Tensor]:
        """Tensors only (loads with ``torch.load(weights_only=True)``)."""
        return {f: getattr(self, f).detach().cpu().clone() for f in _FIELDS}

    @classmethod
    def from_state(cls, state: dict[str, Tensor]) -> PoseStore:
        """Inverse of :meth:`to_state`."""
        missing = [f for f in _FIELDS if f not in state]
        if missing:
            raise ValueError(f"pose store state is missing {missing}")
        return cls(*(state[f] for f in _FIELDS))

    def nbytes(self) -> int:
        """Bytes of the stored tensors."""
        return sum(getattr(self, f).numel() * getattr(self, f).element_size() for f in _FIELDS)


_FIELDS = ("camera_to_worlds", "intrinsics", "sizes", "distortion", "camera_types", "scan_ids")


@dataclass(frozen=True)
class ReplayPlan:
    """Where the target of each old pose comes from while training scan ``current_scan``."""

    current_scan: int
    rendered: tuple[int, ...]
    """Store indices of old poses whose target is a render by the previous model (generative replay)."""
    buffered: tuple[int, ...]
    """Store indices of old poses whose target is the real image kept in the reservoir."""
    dropped: tuple[int, ...] = field(default=())
    """Store indices of old poses that are not trained on (only without generative replay)."""


def plan_replay(
    scan_ids: Int[Tensor, " N"], buffer_keys: Sequence[int], current_scan: int, *, generative: bool = True
) -> ReplayPlan:
    """Split the old poses (scan id ``< current_scan``) into rendered, buffered and dropped ones.

    With generative replay (CLNeRF) every old pose is trained on: with its real image when the reservoir holds
    it, else with a render. Without it (naive fine-tuning, experience replay) only buffered poses are.
    """
    old = torch.nonzero(scan_ids < current_scan).flatten().tolist()
    in_buffer = set(int(k) for k in buffer_keys)
    unknown = in_buffer.difference(old)
    if unknown:
        raise ValueError(f"buffer_keys must name old poses (scan id < {current_scan}), got {sorted(unknown)[:5]}")
    buffered = tuple(i for i in old if i in in_buffer)
    rest = tuple(i for i in old if i not in in_buffer)
    if generative:
        return ReplayPlan(current_scan=current_scan, rendered=rest, buffered=buffered)
    return ReplayPlan(current_scan=current_scan, rendered=(), buffered=buffered, dropped=rest)


def quantize_rgb(rgb: Float[Tensor, "*batch 3"]) -> UInt8[Tensor, "*batch 3"]:
    """Colours in ``[0, 1]`` to 8 bits (round to nearest), as the official code saves replay renders as PNGs."""
    return (rgb.detach().clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8)


RenderFn = Callable[[PoseStore], list[Float[Tensor, "H W 3"]]]
"""``render(poses) -> images``: renders every pose of a store with **that pose's** ``scan_ids`` entry."""


def render_replay_targets(store: PoseStore, indices: Sequence[int], render: RenderFn) -> list[UInt8[Tensor, "H W 3"]]:
    """Generative replay: render the stored poses ``indices``, each with its own scan id, quantised to 8 bits.

    Args:
        store: the pose store.
        indices: store indices to render (``ReplayPlan.rendered``).
        render: renders the poses of a store (colours in ``[0, 1]``), each with the scan id the store gives it.

    Returns:
        One ``(H, W, 3)`` uint8 image per index, in order.
    """
    if len(indices) == 0:
        return []
    selected = store.select(torch.as_tensor([int(i) for i in indices], dtype=torch.long))
    images = render(selected)
    if len(images) != len(selected):
        raise ValueError(f"render returned {len(images)} images for {len(selected)} poses")
    out = []
    for k, image in enumerate(images):
        w, h = (int(v) for v in selected.sizes[k])
        if tuple(image.shape) != (h, w, 3):
            raise ValueError(f"render returned shape {tuple(image.shape)} for pose {indices[k]}, expected ({h}, {w}, 3)")
        out.append(quantize_rgb(image).cpu())
    return out


def sample_pixels(
    num_rays: int, sizes: Int[Tensor, "I 2"], generator: torch.Generator | None = None
) -> tuple[Int[Tensor, " R"], Int[Tensor, " R"], Int[Tensor, " R"]]:
    """Draw rays uniformly over images, then uniformly over each image's pixels (official ``all_images``).

    Args:
        num_rays: rays to draw.
        sizes: ``(width, height)`` of every image.
        generator: random source.

    Returns:
        ``(image_indices, rows, cols)``.
    """
    if num_rays < 1:
        raise ValueError(f"num_rays must be >= 1, got {num_rays}")
    if sizes.ndim != 2 or sizes.shape[0] == 0 or sizes.shape[1] != 2:
        raise ValueError(f"sizes must have shape (I, 2) with I >= 1, got {tuple(sizes.shape)}")
    device = sizes.device
    image = torch.randint(0, sizes.shape[0], (num_rays,), generator=generator, device=device)
    w, h = sizes[image, 0], sizes[image, 1]
    u = torch.rand(num_rays, generator=generator, device=device, dtype=torch.float64)
    pixel = (u * (w * h).double()).long().clamp(max=(w * h - 1))
    return image, pixel // w, pixel % w

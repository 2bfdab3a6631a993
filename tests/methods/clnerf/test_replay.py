"""CLNeRF's replay bookkeeping: reservoir sampling, the pose store, replay plans and targets, ray picks."""

from __future__ import annotations

import math

import pytest
import torch

from scene3d.methods.clnerf.replay import (
    PoseStore,
    ReservoirBuffer,
    plan_replay,
    quantize_rgb,
    render_replay_targets,
    reservoir_update,
    sample_pixels,
)


def _store(scan_sizes: list[int], size: tuple[int, int] = (6, 4)) -> PoseStore:
    n = sum(scan_sizes)
    c2w = torch.eye(4)[:3].repeat(n, 1, 1)
    c2w[:, :, 3] = torch.arange(n, dtype=torch.float32)[:, None]
    return PoseStore(
        camera_to_worlds=c2w,
        intrinsics=torch.tensor([[5.0, 5.0, size[0] / 2, size[1] / 2]]).repeat(n, 1),
        sizes=torch.tensor([list(size)]).repeat(n, 1),
        distortion=torch.zeros(n, 6),
        camera_types=torch.ones(n, dtype=torch.long),
        scan_ids=torch.cat([torch.full((k,), s, dtype=torch.long) for s, k in enumerate(scan_sizes)]),
    )


def test_reservoir_keeps_at_most_k_and_counts_what_it_saw() -> None:
    gen = torch.Generator().manual_seed(1)
    buf = ReservoirBuffer.empty(3)
    seen = 0
    for scan in range(4):
        offered = list(range(seen, seen + 5))
        buf = reservoir_update(buf, offered, gen)
        seen += 5
        assert len(buf.keys) == min(3, seen)
        assert buf.num_seen == seen
        assert len(set(buf.keys)) == len(buf.keys)
        assert all(0 <= k < seen for k in buf.keys)
    assert ReservoirBuffer.from_state(buf.to_state()) == buf
    assert reservoir_update(ReservoirBuffer.empty(0), [0, 1, 2], gen).keys == ()


def test_reservoir_inclusion_is_uniform_over_every_item_ever_offered() -> None:
    """Each of 40 items offered over 4 scans ends up in a k=5 buffer with probability 5/40 (chi-square, fixed seed)."""
    k, per_scan, scans, trials = 5, 10, 4, 3000
    n = per_scan * scans
    gen = torch.Generator().manual_seed(1234)
    counts = torch.zeros(n)
    for _ in range(trials):
        buf = ReservoirBuffer.empty(k)
        for scan in range(scans):
            buf = reservoir_update(buf, range(scan * per_scan, (scan + 1) * per_scan), gen)
        counts[list(buf.keys)] += 1
    expected = trials * k / n
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    # 39 degrees of freedom: P(chi2 > 80) < 1e-4 under uniform inclusion. Early or late items favoured (a
    # classic off-by-one) gives chi2 in the thousands.
    assert chi2 < 80.0, (chi2, counts.tolist())
    first, last = counts[:per_scan].mean(), counts[-per_scan:].mean()
    assert abs(float(first - last)) < 0.15 * expected


def test_reservoir_rejects_negative_capacity() -> None:
    with pytest.raises(ValueError, match="capacity"):
        ReservoirBuffer.empty(-1)


def test_pose_store_appends_selects_and_round_trips() -> None:
    a, b = _store([3, 2]), _store([4])
    b = PoseStore(*(getattr(b, f) for f in ("camera_to_worlds", "intrinsics", "sizes", "distortion", "camera_types")), b.scan_ids + 2)
    both = a.append(b)
    assert len(both) == 9 and both.num_scans == 3
    assert both.scan_counts() == {0: 3, 1: 2, 2: 4}
    assert torch.equal(both.select(torch.arange(5)).camera_to_worlds, a.camera_to_worlds)
    assert both.indices_of_scans([1]).tolist() == [3, 4]
    again = PoseStore.from_state(both.to_state())
    assert all(torch.equal(getattr(again, f), getattr(both, f)) for f in ("camera_to_worlds", "scan_ids", "sizes"))
    assert both.nbytes() > 0
    # under the test suite jaxtyping's dataclass check (a TypeError) fires before the ValueError of __post_init__
    with pytest.raises((ValueError, TypeError)):
        PoseStore(a.camera_to_worlds[:2], a.intrinsics[:2], a.sizes[:2], a.distortion[:2], a.camera_types[:2], a.scan_ids)


def test_plan_replay_renders_every_old_pose_not_in_the_buffer() -> None:
    store = _store([3, 3, 2])
    plan = plan_replay(store.scan_ids, buffer_keys=[1, 4], current_scan=2)
    assert plan.buffered == (1, 4)
    assert plan.rendered == (0, 2, 3, 5)
    assert plan.dropped == ()
    naive = plan_replay(store.scan_ids, buffer_keys=[1], current_scan=2, generative=False)
    assert naive.rendered == () and naive.buffered == (1,) and naive.dropped == (0, 2, 3, 4, 5)
    with pytest.raises(ValueError, match="buffer_keys"):
        plan_replay(store.scan_ids, buffer_keys=[6], current_scan=2)


def test_replay_targets_are_rendered_with_each_poses_own_scan_id() -> None:
    store = _store([2, 3, 1])
    calls: list[list[tuple[float, int]]] = []

    def render(poses: PoseStore) -> list[torch.Tensor]:
        calls.append([(float(c[0, 3]), int(s)) for c, s in zip(poses.camera_to_worlds, poses.scan_ids)])
        return [torch.full((4, 6, 3), int(s) / 10.0) for s in poses.scan_ids]

    plan = plan_replay(store.scan_ids, buffer_keys=[], current_scan=2)
    images = render_replay_targets(store, plan.rendered, render)
    # pose i sits at x = i: the renderer got poses 0..4, each with that pose's scan id
    assert calls == [[(0.0, 0), (1.0, 0), (2.0, 1), (3.0, 1), (4.0, 1)]]
    assert [int(im[0, 0, 0]) for im in images] == [0, 0, 26, 26, 26]  # round(0.1 * 255)
    assert all(im.dtype == torch.uint8 and im.shape == (4, 6, 3) for im in images)
    assert render_replay_targets(store, [], render) == []

    def wrong_size(poses: PoseStore) -> list[torch.Tensor]:
        return [torch.zeros(6, 4, 3) for _ in range(len(poses))]

    with pytest.raises(ValueError, match="expected \\(4, 6, 3\\)"):
        render_replay_targets(store, [0], wrong_size)


def test_quantize_rounds_to_nearest_and_clamps() -> None:
    q = quantize_rgb(torch.tensor([[-0.1, 0.5, 1.2]]))
    assert q.tolist() == [[0, 128, 255]]


def test_sample_pixels_is_uniform_over_images_then_pixels() -> None:
    sizes = torch.tensor([[4, 2], [10, 10], [3, 5]])
    gen = torch.Generator().manual_seed(0)
    image, rows, cols = sample_pixels(30000, sizes, gen)
    assert bool((rows < sizes[image, 1]).all() and (cols < sizes[image, 0]).all())
    assert bool((rows >= 0).all() and (cols >= 0).all())
    frac = torch.bincount(image, minlength=3).float() / 30000
    # images are equally likely whatever their size (official all_images draws image indices uniformly)
    assert torch.allclose(frac, torch.full((3,), 1 / 3), atol=0.02)
    small = image == 0
    pix = rows[small] * 4 + cols[small]
    hist = torch.bincount(pix, minlength=8).float() / small.sum()
    assert torch.allclose(hist, torch.full((8,), 1 / 8), atol=0.03)
    with pytest.raises(ValueError, match="num_rays"):
        sample_pixels(0, sizes)
    assert math.isclose(float(frac.sum()), 1.0)


def test_frame_check_accepts_new_paths_and_refuses_another_scale_origin_or_orientation() -> None:
    from scene3d.methods.clnerf.frames import check_scan_sequence

    def orbit(radius: float, elevation: float, offset: float, n: int = 12) -> torch.Tensor:
        poses = []
        for i in range(n):
            az = offset + 2 * math.pi * i / n
            eye = radius * torch.tensor([math.cos(elevation) * math.cos(az), math.cos(elevation) * math.sin(az), math.sin(elevation)])
            forward = -eye / eye.norm()
            right = torch.linalg.cross(forward, torch.tensor([0.0, 0.0, 1.0]))
            right = right / right.norm()
            up = torch.linalg.cross(right, forward)
            poses.append(torch.stack([right, up, -forward, eye], dim=1))
        return torch.stack(poses)

    box = torch.tensor([[-1.0, -1.0, 0.0], [1.0, 1.0, 1.0]])
    first = orbit(4.0, 0.4, 0.0)
    # another path around the same place: other radius, elevation and azimuths
    bad, check, kept_box = check_scan_sequence(first, None, [(orbit(3.5, 0.8, 0.3), box), (orbit(4.4, 0.3, 1.0), None)])
    assert bad is None and check is None and kept_box is not None
    scaled = orbit(4.0, 0.4, 0.0) * torch.tensor([1.0, 1.0, 1.0, 3.0])
    bad, check, _ = check_scan_sequence(first, None, [(orbit(4.0, 0.5, 0.2), None), (scaled, None)])
    assert bad == 1 and "another scale" in check.problems[0]
    shifted = first.clone()
    shifted[:, :, 3] += torch.tensor([20.0, 0.0, 0.0])
    bad, check, _ = check_scan_sequence(first, None, [(shifted, None)])
    assert bad == 0 and any("another origin" in p for p in check.problems)
    flip = torch.tensor([[1.0, 0.0, 0.0], [0.0, -1.0, 0.0], [0.0, 0.0, -1.0]])  # upside down about x
    bad, check, _ = check_scan_sequence(first, None, [(flip @ first, None)])
    assert bad == 0 and any("another orientation" in p for p in check.problems)
    bad, check, _ = check_scan_sequence(first, (tuple(box[0].tolist()), tuple(box[1].tolist())), [(orbit(4.0, 0.5, 0.1), box * 4)])
    assert bad == 0 and any("scene box" in p for p in check.problems)
    with pytest.raises(ValueError, match="max_scale_ratio"):
        check_scan_sequence(first, None, [(first, None)], max_scale_ratio=0.5)

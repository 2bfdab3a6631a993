"""Patch parameters, the Beta scale schedule, real-patch extraction and patch cameras."""

import pytest
import torch

from scene3d.core.cameras import intrinsics_from_fov
from scene3d.methods.epigraf.patches import (
    PatchParams,
    PatchScaleSchedule,
    extract_patches,
    linear_schedule,
    patch_grid,
    patch_intrinsics,
)


def test_beta_schedule_start_middle_end():
    sched = PatchScaleSchedule(min_scale=0.25, anneal_steps=1000)
    assert sched.beta(0) == pytest.approx(0.001)
    assert sched.beta(500) == pytest.approx(0.001 + 0.5 * (0.8 - 0.001))
    assert sched.beta(1000) == pytest.approx(0.8)
    assert sched.beta(5000) == pytest.approx(0.8)
    assert linear_schedule(-3, 1.0, 0.0, 10) == 1.0


def test_scale_distribution_follows_beta_and_groups_share_params():
    sched = PatchScaleSchedule(min_scale=0.25, anneal_steps=1000)
    g = torch.Generator().manual_seed(0)
    early = sched.sample(4000, 0, group_size=4, generator=g)
    # Beta(1, 0.001) puts almost all mass at 1: whole images at the start of training
    assert early.scales.mean() > 0.99
    late = sched.sample(40000, 1000, group_size=1, generator=g)
    # E[Beta(1, 0.8)] = 1 / 1.8
    assert late.scales.mean().item() == pytest.approx(0.25 + 0.75 / 1.8, abs=0.01)
    assert late.scales.min() >= 0.25 and late.scales.max() <= 1.0
    assert torch.all(late.offsets >= 0) and torch.all(late.offsets <= (1 - late.scales)[:, None] + 1e-6)
    grouped = sched.sample(12, 800, group_size=4, generator=g)
    for k in range(3):
        block = grouped.as_condition()[4 * k : 4 * k + 4]
        assert torch.all(block == block[0])
    with pytest.raises(ValueError, match="multiple"):
        sched.sample(6, 0, group_size=4)


def test_extract_patches_matches_hand_computed_crop():
    img = torch.arange(2 * 8 * 8, dtype=torch.float32).reshape(1, 2, 8, 8)
    # s = 0.5, o = (0.25, 0.5), r = 4: patch pixel centres at image pixels x = 2..5, y = 4..7 exactly
    p = PatchParams(torch.tensor([0.5]), torch.tensor([[0.25, 0.5]]))
    torch.testing.assert_close(extract_patches(img, p, 4), img[:, :, 4:8, 2:6])
    # s = 1, r = R/2: every patch pixel sits between four image pixels, i.e. 2x2 average pooling
    full = PatchParams.full(1)
    torch.testing.assert_close(extract_patches(img, full, 4), torch.nn.functional.avg_pool2d(img, 2))
    # s = 1, o = 0, r = R: the image itself
    torch.testing.assert_close(extract_patches(img, full, 8), img)


def test_patch_grid_centres():
    p = PatchParams(torch.tensor([0.5]), torch.tensor([[0.1, 0.2]]))
    grid = patch_grid(p, 2)
    torch.testing.assert_close(grid[0, 0, 0], torch.tensor([0.1 + 0.125, 0.2 + 0.125]))
    torch.testing.assert_close(grid[0, 1, 0], torch.tensor([0.1 + 0.125, 0.2 + 0.375]))  # rows go down in v


def test_patch_intrinsics_identity_and_zoom():
    K = intrinsics_from_fov(30.0, 64, 64)[None]
    torch.testing.assert_close(patch_intrinsics(K, 64, PatchParams.full(1), 64), K)
    p = PatchParams(torch.tensor([0.25]), torch.tensor([[0.5, 0.0]]))
    Kp = patch_intrinsics(K, 64, p, 16)
    # patch pixel centre i=0 must project like full-image pixel x = 64 * (0.5 + 0.25 * 0.5 / 16) = 32.5
    x_full = 64 * (0.5 + 0.25 * 0.5 / 16)
    dir_full = (x_full - K[0, 0, 2]) / K[0, 0, 0]
    dir_patch = (0.5 - Kp[0, 0, 2]) / Kp[0, 0, 0]
    torch.testing.assert_close(dir_patch, dir_full)

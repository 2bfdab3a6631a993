"""Inverse-CDF importance sampling (scene3d.renderers.volume.sample_pdf), used by EpiGRAF's fine pass."""

import torch

from scene3d.renderers.volume import sample_pdf


def test_all_mass_in_one_bin_samples_only_that_bin():
    bins = torch.tensor([[0.0, 1.0, 2.0, 3.0]])
    weights = torch.tensor([[0.0, 5.0, 0.0]])
    s = sample_pdf(bins, weights, 64, eps=0.0, generator=torch.Generator().manual_seed(0))
    assert torch.all((s >= 1.0) & (s <= 2.0))


def test_deterministic_hand_computed_values():
    # pdf (1/4, 3/4) on [0, 1), [1, 3): CDF 0, 0.25, 1. u = 1/8, 3/8, 5/8, 7/8.
    bins = torch.tensor([[0.0, 1.0, 3.0]])
    weights = torch.tensor([[1.0, 3.0]])
    s = sample_pdf(bins, weights, 4, deterministic=True, eps=0.0)
    expected = torch.tensor([[0.5, 1.0 + (0.375 - 0.25) / 0.75 * 2, 1.0 + (0.625 - 0.25) / 0.75 * 2, 1.0 + (0.875 - 0.25) / 0.75 * 2]])
    torch.testing.assert_close(s, expected)


def test_uniform_weights_give_uniform_samples():
    bins = torch.linspace(2.0, 6.0, 9)[None].expand(2000, 9)
    s = sample_pdf(bins, torch.ones(2000, 8), 8, generator=torch.Generator().manual_seed(1))
    assert abs(s.mean().item() - 4.0) < 0.05
    assert s.min() >= 2.0 and s.max() <= 6.0

"""The torch hash grid against a literal per-level reference, tcnn's layout rules, and tcnn itself (gpu)."""

from __future__ import annotations

import math

import pytest
import torch

from scene3d.fields.hash_grid import HashGridEncoding, HashGridLayout, growth_factor, hash_grid_encode

U32 = 0xFFFFFFFF


def reference_encode(x: torch.Tensor, params: torch.Tensor, layout: HashGridLayout) -> torch.Tensor:
    """Instant-NGP / tiny-cuda-nn written out per level and corner, with uint32 hashing (differentiable)."""
    table = params.view(-1, layout.features_per_level)
    levels = []
    for lv in range(layout.n_levels):
        pos = x * layout.scales[lv] + 0.5
        cell = pos.detach().floor()
        frac = pos - cell
        cell = cell.long()
        acc = 0.0
        for corner in range(8):
            offset = torch.tensor([(corner >> d) & 1 for d in range(3)])
            c = cell + offset
            weight = torch.where(offset.bool(), frac, 1.0 - frac).prod(-1)
            res = layout.resolutions[lv]
            if layout.is_dense(lv):
                index = (c[:, 0] + c[:, 1] * res + c[:, 2] * res * res) % layout.sizes[lv]
            else:
                h = (c[:, 0] * 1) & U32
                h ^= (c[:, 1] * 2654435761) & U32
                h ^= (c[:, 2] * 805459861) & U32
                index = h % layout.sizes[lv]
            acc = acc + weight[:, None] * table[layout.offsets[lv] + index]
        levels.append(acc)
    return torch.cat(levels, dim=-1)


def points(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, generator=g, dtype=torch.float64)
    # the borders, where tcnn's dense index wraps (x = 1 reaches corner index res)
    x[:8] = torch.tensor([[0.0, 0.0, 0.0], [1.0, 1.0, 1.0], [1.0, 0.0, 0.5], [0.999, 0.999, 0.999],
                          [0.0, 1.0, 1.0], [0.5, 1.0, 0.0], [1.0, 0.5, 0.25], [0.97, 0.98, 0.99]], dtype=torch.float64)
    return x


def test_layout_follows_tcnn_rules():
    lay = HashGridLayout.create(16, 2, 19, 16, growth_factor(16, 2048, 16))
    assert lay.resolutions[0] == 16 and lay.scales[0] == 15.0
    assert abs(lay.per_level_scale - math.exp(math.log(2048 / 16) / 15)) < 1e-12
    for lv in range(16):
        res = lay.resolutions[lv]
        assert res == math.ceil(lay.scales[lv]) + 1
        assert lay.sizes[lv] == min(-(-(res**3) // 8) * 8, 1 << 19)
        assert lay.sizes[lv] % 8 == 0
        assert lay.is_dense(lv) == (res**3 <= lay.sizes[lv])
        assert lay.offsets[lv + 1] - lay.offsets[lv] == lay.sizes[lv]
    assert [lay.is_dense(lv) for lv in range(16)] == [True] * 5 + [False] * 11
    assert lay.n_params == lay.offsets[-1] * 2
    assert lay.tcnn_config()["otype"] == "HashGrid"


@pytest.mark.parametrize("features", [1, 2, 4, 8])
def test_torch_encoding_matches_reference(features):
    lay = HashGridLayout.create(6, features, 11, 4, growth_factor(4, 96, 6))
    assert any(lay.is_dense(lv) for lv in range(6)) and not all(lay.is_dense(lv) for lv in range(6))
    params = torch.randn(lay.n_params, dtype=torch.float64)
    x = points(300)
    torch.testing.assert_close(hash_grid_encode(x, params, lay), reference_encode(x, params, lay))


def test_gradients_match_reference():
    lay = HashGridLayout.create(5, 2, 10, 4, growth_factor(4, 64, 5))
    params = torch.randn(lay.n_params, dtype=torch.float64, requires_grad=True)
    x = points(200, seed=1)[8:].requires_grad_(True)  # interior points: x-gradients are defined
    weights = torch.randn(x.shape[0], lay.out_dim, dtype=torch.float64)
    gx, gp = torch.autograd.grad((hash_grid_encode(x, params, lay) * weights).sum(), (x, params))
    rx, rp = torch.autograd.grad((reference_encode(x, params, lay) * weights).sum(), (x, params))
    torch.testing.assert_close(gp, rp)
    torch.testing.assert_close(gx, rx)


def test_gradcheck_small():
    lay = HashGridLayout.create(3, 2, 8, 4, 2.0)
    params = torch.randn(lay.n_params, dtype=torch.float64, requires_grad=True)
    # away from cell borders of every level (scales 3, 7, 15), where finite differences would straddle a kink
    x = torch.tensor([[0.21, 0.43, 0.77], [0.62, 0.18, 0.35]], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: hash_grid_encode(a, b, lay), (x, params), eps=1e-6)


def test_module_torch_backend_and_checks():
    enc = HashGridEncoding(n_levels=4, log2_hashmap_size=10, base_resolution=8, max_resolution=64, backend="torch")
    out = enc(torch.rand(2, 5, 3))
    assert out.shape == (2, 5, 8)
    assert enc.params.shape == (enc.layout.n_params,)
    assert float(enc.params.abs().max()) <= 1e-4
    out.sum().backward()
    assert enc.params.grad is not None and float(enc.params.grad.abs().sum()) > 0
    with pytest.raises((ValueError, TypeError)):  # TypeError: the runtime type checker sees the Literal first
        HashGridEncoding(backend="tcnn")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="features_per_level"):
        HashGridEncoding(features_per_level=3)
    with pytest.raises((ValueError, TypeError)):
        enc(torch.rand(4, 2))
    with pytest.raises(ValueError, match="cuda-lib"):
        HashGridEncoding(n_levels=2, log2_hashmap_size=8, backend="cuda-lib")(torch.rand(3, 3))


def test_empty_input_and_clamping():
    enc = HashGridEncoding(n_levels=2, log2_hashmap_size=8, base_resolution=4, max_resolution=8, backend="torch")
    assert enc(torch.zeros(0, 3)).shape == (0, 4)
    torch.testing.assert_close(enc(torch.tensor([[-0.5, 1.5, 0.3]])), enc(torch.tensor([[0.0, 1.0, 0.3]])))


def test_clnerf_configuration_builds_and_runs():
    """CLNeRF / ngp_pl: L=16, F=2, T=2^19, N_min=16, b = exp(ln(2048·scale/16)/15)."""
    scale = 0.5
    b = math.exp(math.log(2048 * scale / 16) / 15)
    enc = HashGridEncoding(n_levels=16, features_per_level=2, log2_hashmap_size=19, base_resolution=16,
                           per_level_scale=b, backend="torch")
    assert abs(enc.layout.per_level_scale - growth_factor(16, 2048 * scale, 16)) < 1e-9
    assert enc.out_dim == 32
    assert enc(torch.rand(64, 3)).shape == (64, 32)


@pytest.mark.gpu(backends=("tinycudann",))
def test_tcnn_matches_torch_twin():
    enc = HashGridEncoding(n_levels=8, log2_hashmap_size=15, base_resolution=16, max_resolution=512,
                           backend="cuda-lib").cuda()
    with torch.no_grad():
        enc.params.uniform_(-1.0, 1.0)
    x = torch.rand(4096, 3, device="cuda")
    weights = torch.randn(4096, enc.out_dim, device="cuda")
    out_cuda = enc(x)
    (g_cuda,) = torch.autograd.grad((out_cuda * weights).sum(), enc.params)
    out_torch = hash_grid_encode(x, enc.params, enc.layout)
    (g_torch,) = torch.autograd.grad((out_torch * weights).sum(), enc.params)
    # tcnn accumulates in float32 in a different order; parameters are O(1), outputs O(1)
    torch.testing.assert_close(out_cuda, out_torch, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(g_cuda, g_torch, atol=1e-3, rtol=1e-3)

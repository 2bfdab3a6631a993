"""``backend="auto"`` falls back to the torch twin, with one warning, whenever a CUDA library does not run.

No test here touches a real CUDA library: nerfacc and gsplat would try to build their kernels on the first call
(nvcc is installed on the CPU machine). Each library is replaced by a fake module in ``sys.modules``: a failing one
(the kernel build raises, as nerfacc 0.5.2 / gsplat 1.4.0 do without a working toolchain) and a working one built on
scene3d's own torch twins, which the probes must accept.
"""

from __future__ import annotations

import logging
import sys
import types

import pytest
import torch

from scene3d.core import backends
from scene3d.core.errors import BackendUnavailableError

BUILD_ERROR = "Error building extension 'gsplat_cuda': nvcc fatal: Unsupported gpu architecture 'compute_90'"


@pytest.fixture(autouse=True)
def fresh_probes():
    backends.reset_probes()
    yield
    backends.reset_probes()


def _install(monkeypatch: pytest.MonkeyPatch, modules: dict[str, types.ModuleType]) -> None:
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)


def _fake_gsplat(rasterization) -> dict[str, types.ModuleType]:
    root, rendering = types.ModuleType("gsplat"), types.ModuleType("gsplat.rendering")
    rendering.rasterization = rasterization
    root.rendering = rendering
    return {"gsplat": root, "gsplat.rendering": rendering}


def _failing_call(calls: list[int], message: str = BUILD_ERROR):
    def call(*args, **kwargs):
        calls.append(1)
        raise RuntimeError(message)

    return call


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == backends.__name__ and r.levelno == logging.WARNING]


def test_a_library_whose_kernel_build_fails_is_probed_once_and_warned_once(monkeypatch, caplog) -> None:
    calls: list[int] = []
    _install(monkeypatch, _fake_gsplat(_failing_call(calls)))
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert backends.library_works("gsplat", torch.device("cpu")) is False
    assert len(calls) == 1  # the answer is cached
    (message,) = _warnings(caplog)
    assert "gsplat does not work" in message and "Unsupported gpu architecture" in message and "torch twin" in message


def test_a_library_that_does_not_import_falls_back(monkeypatch, caplog) -> None:
    monkeypatch.setitem(sys.modules, "tinycudann", None)  # `import tinycudann` raises ImportError
    with caplog.at_level(logging.WARNING):
        assert backends.library_works("tinycudann", torch.device("cpu")) is False
    (message,) = _warnings(caplog)
    assert "tinycudann does not work" in message and "ModuleNotFoundError" in message


def test_the_probes_accept_libraries_that_work(monkeypatch) -> None:
    """Working fakes (scene3d's torch twins behind the libraries' names) pass the real probe code."""
    from scene3d.renderers.gaussians import rasterize
    from scene3d.renderers.occupancy import march_grid
    from scene3d.renderers.volume import composite_packed

    def rasterization(*args, **kwargs):
        return rasterize(*args, **kwargs, backend="torch")

    nerfacc, grid = types.ModuleType("nerfacc"), types.ModuleType("nerfacc.grid")
    nerfacc.render_weight_from_alpha = lambda alphas, ray_indices, n_rays: composite_packed(
        alphas, ray_indices, n_rays, backend="torch"
    )

    def traverse_grids(origins, directions, binaries, aabbs, *, near_planes, far_planes, step_size):
        packed = march_grid(origins, directions, binaries, aabbs, near_planes, far_planes, step_size=step_size, backend="torch")
        return None, types.SimpleNamespace(ray_indices=packed.ray_indices)

    grid.traverse_grids = traverse_grids
    nerfacc.grid = grid

    class Encoding(torch.nn.Module):
        def __init__(self, n_input_dims, config, dtype):
            super().__init__()
            self.params = torch.nn.Parameter(torch.ones(config["n_levels"] * config["n_features_per_level"]))

        def forward(self, x):
            return x.sum(-1, keepdim=True) * self.params

    tcnn = types.ModuleType("tinycudann")
    tcnn.Encoding = Encoding
    _install(monkeypatch, {**_fake_gsplat(rasterization), "nerfacc": nerfacc, "nerfacc.grid": grid, "tinycudann": tcnn})
    for module in ("gsplat", "nerfacc", "tinycudann"):
        assert backends.probe_library(module, torch.device("cpu")) is None, module


def test_auto_on_a_cuda_device_falls_back_and_cuda_lib_names_the_cause(monkeypatch, caplog) -> None:
    calls: list[int] = []
    monkeypatch.setitem(backends.PROBES, "nerfacc", _failing_call(calls, "CUDA error: no kernel image is available"))
    cuda = torch.device("cuda", 0)
    with caplog.at_level(logging.WARNING):
        assert backends.use_cuda_lib("auto", cuda, "nerfacc") is False
        assert backends.use_cuda_lib("auto", cuda, "nerfacc") is False
        with pytest.raises(BackendUnavailableError, match="nerfacc.*no kernel image is available"):
            backends.use_cuda_lib("cuda-lib", cuda, "nerfacc")
    assert len(calls) == 1 and len(_warnings(caplog)) == 1


def test_cpu_inputs_and_the_torch_backend_never_probe(monkeypatch) -> None:
    calls: list[int] = []
    monkeypatch.setitem(backends.PROBES, "gsplat", _failing_call(calls))
    assert backends.use_cuda_lib("auto", torch.device("cpu"), "gsplat") is False
    assert backends.use_cuda_lib("torch", torch.device("cuda", 0), "gsplat") is False
    with pytest.raises(ValueError, match="needs CUDA tensors"):
        backends.use_cuda_lib("cuda-lib", torch.device("cpu"), "gsplat")
    with pytest.raises(ValueError, match="backend must be one of"):
        backends.use_cuda_lib("cuda", torch.device("cpu"), "gsplat")
    assert calls == []


def test_the_gaussian_renderer_has_no_backend_logic_of_its_own(monkeypatch) -> None:
    """``rasterize`` asks scene3d.core.backends (one place): a library that fails its probe is not called."""
    from scene3d.renderers import gaussians

    asked: list[tuple[str, str]] = []

    def use_cuda_lib(backend, device, module):
        asked.append((backend, module))
        return False

    monkeypatch.setattr(gaussians, "use_cuda_lib", use_cuda_lib)
    means = torch.tensor([[0.0, 0.0, 2.0]])
    ones = torch.ones(1, 3)
    K = torch.tensor([[[8.0, 0.0, 4.0], [0.0, 8.0, 4.0], [0.0, 0.0, 1.0]]])
    quats = torch.tensor([[1.0, 0.0, 0.0, 0.0]])
    _, alphas, meta = gaussians.rasterize(means, quats, ones * 0.2, torch.ones(1) * 0.9, ones, torch.eye(4)[None], K, 8, 8)
    assert asked == [("auto", "gsplat")] and meta.backend == "torch" and float(alphas.max()) > 0
    assert not hasattr(gaussians, "_gsplat_available")

"""The ``gpu`` marker's rule, checked on a CPU by faking the machine: without CUDA a ``gpu`` test skips; with CUDA
it runs, and fails (never skips) when a backend it names is missing."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest
import torch


@pytest.fixture
def root_conftest(request: pytest.FixtureRequest):
    """tests/conftest.py as pytest loaded it (the module whose hook runs before every test)."""
    path = Path(__file__).with_name("conftest.py").resolve()
    for plugin in request.config.pluginmanager.get_plugins():
        if Path(getattr(plugin, "__file__", "") or "/").resolve() == path:
            return plugin
    raise AssertionError("tests/conftest.py is not loaded")


class FakeItem:
    """The part of a pytest item the setup hook reads: its markers."""

    def __init__(self, *marks: pytest.Mark) -> None:
        self.marks = {m.name: m for m in marks}

    def get_closest_marker(self, name: str) -> pytest.Mark | None:
        return self.marks.get(name)


def gpu(*backends: str) -> pytest.Mark:
    return pytest.mark.gpu(backends=backends).mark


@pytest.mark.parametrize("cuda", [False, True])
def test_gpu_marker_without_backends(root_conftest, monkeypatch: pytest.MonkeyPatch, cuda: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    bare = FakeItem(pytest.mark.gpu.mark)
    if cuda:
        root_conftest.pytest_runtest_setup(bare)  # runs
    else:
        with pytest.raises(pytest.skip.Exception, match="needs a CUDA device"):
            root_conftest.pytest_runtest_setup(bare)


def test_missing_backend_fails_on_a_cuda_machine(root_conftest, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    with pytest.raises(pytest.fail.Exception, match="scene3d_no_such_cuda_library does not import"):
        root_conftest.pytest_runtest_setup(FakeItem(gpu("math", "scene3d_no_such_cuda_library")))
    root_conftest.pytest_runtest_setup(FakeItem(gpu("math")))  # present: runs


def test_missing_backend_skips_without_cuda(root_conftest, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(pytest.skip.Exception):
        root_conftest.pytest_runtest_setup(FakeItem(gpu("scene3d_no_such_cuda_library")))


def test_tinycudann_message_names_its_install_command(root_conftest, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setitem(sys.modules, "tinycudann", None)  # as on this machine: not installed
    with pytest.raises(pytest.fail.Exception, match="NVlabs/tiny-cuda-nn"):
        root_conftest.pytest_runtest_setup(FakeItem(gpu("tinycudann")))


def _gpu_tests_that_importorskip(source: str) -> list[str]:
    """Names of the functions marked ``gpu`` in ``source`` that call ``pytest.importorskip``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef) and any("mark.gpu" in ast.unparse(d) for d in node.decorator_list):
            if any(isinstance(c, ast.Call) and ast.unparse(c.func).endswith("importorskip") for c in ast.walk(node)):
                found.append(node.name)
    return found


def test_no_gpu_test_skips_on_a_missing_library() -> None:
    """A ``gpu`` test declares its library in the marker; ``pytest.importorskip`` in it would skip on a GPU machine
    without the library instead of failing."""
    assert _gpu_tests_that_importorskip("@pytest.mark.gpu\ndef test_x():\n    pytest.importorskip('nerfacc')\n")
    tests = Path(__file__).parent
    offenders = [f"{p.relative_to(tests)}::{name}" for p in sorted(tests.rglob("test_*.py"))
                 for name in _gpu_tests_that_importorskip(p.read_text())]  # fmt: skip
    assert not offenders, offenders

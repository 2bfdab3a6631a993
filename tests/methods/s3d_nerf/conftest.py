"""Fixtures for s3d-nerf's tests (markers live in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def object_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The demo's ``object`` scene at test size: 32 px, 12 views (open3d renders it; tests using it are ``data``)."""
    from scene3d.datasets.synthetic import generate_scene

    return generate_scene("object", tmp_path_factory.mktemp("object") / "scene", size=32, views=12, seed=0)

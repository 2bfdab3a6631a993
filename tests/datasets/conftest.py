"""Small synthetic datasets shared by the dataset tests (generated once per session; open3d needed)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def object_scene(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 48 px, 12-view stylized ``object`` scene (request it from ``data``-marked tests only)."""
    from scene3d.datasets.synthetic import generate_scene

    return generate_scene("object", tmp_path_factory.mktemp("object") / "scene", size=48, views=12, stylized=True)

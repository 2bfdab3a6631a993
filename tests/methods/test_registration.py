"""Every method scene3d registers with nerfstudio: found through the entry point, on this machine's device, with the
viewer on localhost, and each ``<name>`` paired with a ``<name>-tiny`` (docs/design.md, "Two scales, one code path")."""

from __future__ import annotations

from importlib.metadata import entry_points

import torch

from scene3d.methods.common.trainer import S3DTrainerConfig


def _scene3d_methods() -> dict[str, object]:
    found = entry_points(group="nerfstudio.method_configs")
    return {ep.name: ep.load() for ep in found if ep.value.startswith("scene3d.")}


def test_every_method_is_registered_in_two_scales_on_this_machines_device() -> None:
    methods = _scene3d_methods()
    assert {"s3d-nerf", "s3d-splat", "clnerf", "epigraf", "regs"} <= set(methods)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for name, spec in methods.items():
        config = spec.config  # type: ignore[attr-defined]
        assert isinstance(config, S3DTrainerConfig), name
        assert config.method_name == name
        assert config.machine.device_type == device, name  # no --machine.device-type needed on a CPU-only machine
        assert config.viewer.websocket_host == "127.0.0.1", name
        paired = name[: -len("-tiny")] if name.endswith("-tiny") else f"{name}-tiny"
        assert paired in methods, f"{name} has no {paired}"

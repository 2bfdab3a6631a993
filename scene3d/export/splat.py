"""Splat export: the standard 3DGS PLY (INRIA viewer, SuperSplat, gsplat, nerfstudio) and the ``.splat`` format.

**PLY** (binary little-endian, one ``vertex`` element, float32 properties in this order, as the INRIA code writes):
``x y z``, ``nx ny nz`` (zeros), ``f_dc_0..2`` (SH degree-0 coefficients), ``f_rest_0..`` (higher SH coefficients,
channel-major: all of red's, then green's, then blue's), ``opacity`` (logit), ``scale_0..2`` (log σ),
``rot_0..3`` (quaternion ``wxyz``, unnormalised). These are exactly the raw splat parameters, so a PLY reloads
losslessly (:func:`read_ply`).

**.splat** (antimatter15's WebGL viewer format, also read by SuperSplat): 32 bytes per Gaussian, sorted by
``σ_x σ_y σ_z · opacity`` descending: position ``3×float32``, scale ``3×float32`` (σ, not log), colour ``4×uint8``
(``0.5 + C0 · f_dc`` and the opacity, times 255), rotation ``4×uint8`` (unit ``wxyz`` mapped by ``q · 128 + 128``).
It keeps the DC colour only and quantises colour and rotation: a lossy preview format.

    s3d export splat --load-config outputs/.../config.yml --out scene.ply     # or scene.splat
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from scene3d.core.checkpoint import atomic_open
from scene3d.renderers.gaussians_project import SH_C0

logger = logging.getLogger(__name__)

PARAM_NAMES = ("means", "scales", "quats", "features_dc", "features_rest", "opacities")


def _arrays(params: Mapping[str, Tensor | np.ndarray]) -> dict[str, np.ndarray]:
    missing = [k for k in PARAM_NAMES if k not in params]
    if missing:
        raise ValueError(f"splat parameters need {list(PARAM_NAMES)}, missing {missing}")
    out = {}
    for k in PARAM_NAMES:
        v = params[k]
        out[k] = (v.detach().float().cpu().numpy() if isinstance(v, Tensor) else np.asarray(v, dtype=np.float32))
    n = out["means"].shape[0]
    out["opacities"] = out["opacities"].reshape(n, 1)
    out["features_rest"] = out["features_rest"].reshape(n, -1, 3)
    shapes = {"means": (n, 3), "scales": (n, 3), "quats": (n, 4), "features_dc": (n, 3)}
    for k, shape in shapes.items():
        if out[k].shape != shape:
            raise ValueError(f"{k} must have shape {shape} to match means, got {out[k].shape}")
    return out


def finite_rows(params: Mapping[str, Tensor | np.ndarray]) -> np.ndarray:
    """``[N]`` bool: Gaussians whose every parameter is finite (nerfstudio's exporter drops the others too)."""
    a = _arrays(params)
    n = a["means"].shape[0]
    return np.all(np.stack([np.isfinite(a[k].reshape(n, -1)).all(1) for k in PARAM_NAMES]), axis=0)


def ply_bytes(params: Mapping[str, Tensor | np.ndarray]) -> bytes:
    """The 3DGS PLY of raw splat parameters (see the module docstring for the layout)."""
    a = _arrays(params)
    n = a["means"].shape[0]
    rest = a["features_rest"].transpose(0, 2, 1).reshape(n, -1)  # [N, 3, K-1] flattened: channel-major
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    names += [f"f_rest_{i}" for i in range(rest.shape[1])] + ["opacity"]
    names += ["scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    cols = [a["means"], np.zeros((n, 3), np.float32), a["features_dc"], rest, a["opacities"], a["scales"], a["quats"]]
    data = np.ascontiguousarray(np.concatenate(cols, axis=1), dtype="<f4")
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {n}"]
    header += [f"property float {name}" for name in names] + ["end_header"]
    return ("\n".join(header) + "\n").encode("ascii") + data.tobytes()


def read_ply(path: str | Path) -> dict[str, Tensor]:
    """Raw splat parameters from a 3DGS PLY (binary little-endian, float properties, any property order)."""
    path = Path(path)
    blob = path.read_bytes()
    end = blob.find(b"end_header\n")
    if not blob.startswith(b"ply") or end < 0:
        raise ValueError(f"{path}: not a PLY file (no 'ply' magic or 'end_header')")
    lines = blob[:end].decode("ascii").splitlines()
    if "format binary_little_endian 1.0" not in lines:
        raise ValueError(f"{path}: only binary little-endian 3DGS PLYs are read")
    n, names = None, []
    for line in lines:
        parts = line.split()
        if parts[:2] == ["element", "vertex"]:
            n = int(parts[2])
        elif parts[:1] == ["property"] and n is not None:
            if parts[1] not in ("float", "float32"):
                raise ValueError(f"{path}: property {parts[-1]} is {parts[1]}, 3DGS PLYs hold float32 only")
            names.append(parts[2])
    if n is None:
        raise ValueError(f"{path}: no 'element vertex'")
    data = np.frombuffer(blob, dtype="<f4", count=n * len(names), offset=end + len("end_header\n")).reshape(n, -1)
    col = {name: data[:, i] for i, name in enumerate(names)}

    def take(*keys: str) -> np.ndarray:
        missing = [k for k in keys if k not in col]
        if missing:
            raise ValueError(f"{path}: missing 3DGS properties {missing}")
        return np.stack([col[k] for k in keys], axis=1)

    n_rest = sum(1 for k in col if k.startswith("f_rest_"))
    rest = take(*[f"f_rest_{i}" for i in range(n_rest)]).reshape(n, 3, -1).transpose(0, 2, 1)
    out = {
        "means": take("x", "y", "z"),
        "scales": take("scale_0", "scale_1", "scale_2"),
        "quats": take("rot_0", "rot_1", "rot_2", "rot_3"),
        "features_dc": take("f_dc_0", "f_dc_1", "f_dc_2"),
        "features_rest": np.ascontiguousarray(rest),
        "opacities": take("opacity"),
    }
    return {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in out.items()}


def splat_bytes(params: Mapping[str, Tensor | np.ndarray]) -> bytes:
    """The ``.splat`` encoding of raw splat parameters (see the module docstring)."""
    a = _arrays(params)
    scales = np.exp(a["scales"])
    opac = 1.0 / (1.0 + np.exp(-a["opacities"][:, 0]))
    order = np.argsort(-(scales.prod(axis=1) * opac), kind="stable")
    quats = a["quats"] / np.linalg.norm(a["quats"], axis=1, keepdims=True)
    rgba = np.concatenate([0.5 + SH_C0 * a["features_dc"], opac[:, None]], axis=1)
    rec = np.zeros(len(order), dtype=[("pos", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])
    rec["pos"] = a["means"][order]
    rec["scale"] = scales[order]
    rec["rgba"] = np.clip(np.round(rgba[order] * 255), 0, 255)
    rec["rot"] = np.clip(np.round(quats[order] * 128 + 128), 0, 255)
    return rec.tobytes()


def read_splat(path: str | Path) -> dict[str, Tensor]:
    """Raw splat parameters (SH degree 0) from a ``.splat`` file; colour and rotation come back quantised."""
    path = Path(path)
    blob = path.read_bytes()
    if len(blob) % 32:
        raise ValueError(f"{path}: a .splat file is a whole number of 32-byte records, got {len(blob)} bytes")
    rec = np.frombuffer(blob, dtype=[("pos", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])
    rgba = rec["rgba"].astype(np.float32) / 255.0
    opac = np.clip(rgba[:, 3], 1e-6, 1 - 1e-6)
    out = {
        "means": rec["pos"],
        "scales": np.log(np.maximum(rec["scale"], 1e-30)),
        "quats": (rec["rot"].astype(np.float32) - 128.0) / 128.0,
        "features_dc": (rgba[:, :3] - 0.5) / SH_C0,
        "features_rest": np.zeros((len(rec), 0, 3), np.float32),
        "opacities": np.log(opac / (1 - opac))[:, None],
    }
    return {k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in out.items()}


def write_splats(params: Mapping[str, Tensor | np.ndarray], out: str | Path, fmt: str | None = None) -> Path:
    """Write ``params`` (raw, splatfacto/``s3d-splat`` names) as ``.ply`` or ``.splat`` (by suffix unless ``fmt``).

    Gaussians with a non-finite parameter are dropped (and counted in a log message). The write is atomic.
    """
    out = Path(out)
    fmt = fmt or out.suffix.lstrip(".").lower()
    if fmt not in ("ply", "splat"):
        raise ValueError(f"format must be 'ply' or 'splat' (from --format or the file suffix), got {fmt!r}")
    keep = finite_rows(params)
    if not keep.all():
        logger.warning("dropping %d Gaussians with non-finite parameters", int((~keep).sum()))
    a = {k: v[keep] for k, v in _arrays(params).items()}
    with atomic_open(out, "wb") as f:
        f.write(ply_bytes(a) if fmt == "ply" else splat_bytes(a))
    return out


def params_from_run(load_config: str | Path) -> dict[str, Tensor]:
    """The raw splat parameters of a trained run (``s3d-splat``, ``splatfacto`` or any model with ``gauss_params``)."""
    from scene3d.export.runs import SPLAT_METHODS, load_pipeline, read_run, require_method

    run = read_run(load_config)  # one clear error for a wrong path or method before anything loads
    require_method(run, SPLAT_METHODS, "s3d export splat")
    _, pipeline, _, _ = load_pipeline(run)
    model = pipeline.model
    gauss = getattr(model, "gauss_params", None)
    if gauss is None:
        raise ValueError(f"{load_config}: the run's model ({type(model).__name__}) holds no Gaussian splats")
    return {k: gauss[k].detach().cpu() for k in PARAM_NAMES}


def main(argv: list[str]) -> int:
    """``s3d export splat --load-config CFG --out FILE [--format ply|splat]``."""
    parser = argparse.ArgumentParser(prog="s3d export splat", description="Export a trained run's Gaussian splats.")
    parser.add_argument("--load-config", required=True, type=Path, help="the run's config.yml")
    parser.add_argument("--out", required=True, type=Path, help="output file, .ply (3DGS layout) or .splat")
    parser.add_argument("--format", choices=("ply", "splat"), default=None, help="default: from the suffix of --out")
    args = parser.parse_args(argv)
    fmt = args.format or args.out.suffix.lstrip(".").lower()
    if fmt not in ("ply", "splat"):
        parser.error(f"cannot tell the format from {args.out.name!r}: use a .ply or .splat suffix or --format")
    params = params_from_run(args.load_config)
    path = write_splats(params, args.out, fmt)
    logger.info("wrote %d Gaussians to %s (%s)", len(params["means"]), path, fmt)
    return 0

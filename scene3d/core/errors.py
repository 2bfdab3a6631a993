"""The errors scene3d raises at its public boundaries.

Each names what a user has to fix: the file and field for bad data, the model id, the setting and the fetch
command for a missing pretrained model, the folder for a bad run.
"""

from __future__ import annotations

from pathlib import Path


class Scene3DError(Exception):
    """Base class of every error scene3d raises on purpose."""


class DataError(Scene3DError, ValueError):
    """Bad input data, found before any training starts.

    Args:
        path: the file (or folder) that holds the problem.
        field: the field inside it (a JSON key path such as ``frames[3].transform_matrix``), or ``None`` when the
            file as a whole is the problem.
        problem: what is wrong, and what was expected.
    """

    def __init__(self, path: str | Path, field: str | None, problem: str) -> None:
        self.path = Path(path)
        self.field = field
        self.problem = problem
        where = f"{self.path}" if field is None else f"{self.path}: field '{field}'"
        super().__init__(f"{where}: {problem}")


class ModelNotFoundError(Scene3DError, FileNotFoundError):
    """A pretrained model is not in the Hugging Face cache nor in the configured local folder.

    Args:
        model_id: the Hugging Face id (or preset name) that was looked for.
        setting: the setting (CLI flag or environment variable) that points at a local copy instead.
        fetch_command: the command that downloads it once, on a machine with network.
    """

    def __init__(self, model_id: str, setting: str, fetch_command: str, detail: str = "") -> None:
        self.model_id = model_id
        self.setting = setting
        self.fetch_command = fetch_command
        msg = (
            f"pretrained model '{model_id}' is not available offline. Download it once with `{fetch_command}`, "
            f"or point {setting} at a local copy."
        )
        if detail:
            msg += f" ({detail})"
        super().__init__(msg)


class RunFolderError(Scene3DError, ValueError):
    """A previous-run folder (``--load-dir``, ``--pipeline.previous-run``, ``--load-config``) is missing or unusable."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class BackendUnavailableError(Scene3DError, RuntimeError):
    """``backend="cuda-lib"`` was asked for, but the CUDA library does not run on the device.

    Args:
        module: the library (``gsplat``, ``nerfacc``, ``tinycudann``).
        device: the device its probe ran on.
        cause: what the probe raised (the import error, the kernel build's error, ...).
    """

    def __init__(self, module: str, device: str, cause: str) -> None:
        self.module = module
        self.device = device
        self.cause = cause
        super().__init__(
            f"backend='cuda-lib' needs {module}, which does not work on {device} ({cause}); "
            "use backend='auto' (falls back to scene3d's torch twin) or 'torch', or repair the install"
        )


class OutputFolderError(Scene3DError, ValueError):
    """A folder scene3d was asked to write into holds files it did not write (it never removes those)."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


class SettingsError(Scene3DError, ValueError):
    """A setting (a config field, a command-line flag) has a value scene3d cannot run with.

    Args:
        setting: the flag as a user types it (``--pipeline.iterations-per-scan``) or the field's name.
        problem: what is wrong with its value, and what is expected.
    """

    def __init__(self, setting: str, problem: str) -> None:
        self.setting = setting
        self.problem = problem
        super().__init__(f"{setting}: {problem}")

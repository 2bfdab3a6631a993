"""Test configuration: markers (defined here only), offline settings, shared tiny fixtures.

Markers:
    gpu      needs a CUDA device; skipped without one.
    slow     an end-to-end run (training through nerfstudio, a benchmark-sized case); still part of `make test`.
    browser  drives headless Chromium (Debian's /usr/bin/chromium through Python playwright).
    data     needs the synthetic scene generator's system libraries (open3d, which needs libusb-1.0).

Requirements that are missing make `browser` and `data` tests skip, except when ``SCENE3D_STRICT=1`` (set by
``make test`` and so by CI), where they fail: a CI run that silently skipped the browser test proves nothing.
"""

from __future__ import annotations

import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

STRICT = os.environ.get("SCENE3D_STRICT", "") == "1"
CHROMIUM = os.environ.get("SCENE3D_CHROMIUM", "/usr/bin/chromium")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs a CUDA device; skipped without one")
    config.addinivalue_line("markers", "slow: end-to-end or benchmark-sized; part of the full suite")
    config.addinivalue_line("markers", "browser: drives headless Chromium through playwright")
    config.addinivalue_line("markers", "data: needs the synthetic scene generator's system libraries (open3d)")


def _browser_missing() -> str | None:
    if not (os.path.exists(CHROMIUM) or shutil.which(CHROMIUM)):
        return f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError as err:
        return f"playwright is not installed ({err})"
    return None


def _data_missing() -> str | None:
    try:
        import open3d  # noqa: F401
    except (ImportError, OSError) as err:  # OSError: libusb-1.0.so.0 missing
        return f"open3d cannot be imported ({err}); apt-get install libusb-1.0-0"
    return None


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("gpu") and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    for marker, check in (("browser", _browser_missing), ("data", _data_missing)):
        if item.get_closest_marker(marker):
            reason = check()
            if reason is not None:
                if STRICT:
                    pytest.fail(f"[{marker}] requirement missing under SCENE3D_STRICT=1: {reason}", pytrace=False)
                pytest.skip(reason)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)

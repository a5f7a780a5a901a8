"""Shared fixtures: the real test data beside the checkout, and the `gpu` marker's skip rule."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

pytest_plugins = ["replay.pytest_plugin"]  # replay_regression fixture, --update-golden

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


def _gpu_reason() -> str | None:
    """Why `gpu` tests cannot run here, or None when a CUDA device is visible."""
    if shutil.which("nvidia-smi") is None:
        return "needs an NVIDIA GPU (no nvidia-smi on this machine)"
    try:
        import cupy  # noqa: F401

        if cupy.cuda.runtime.getDeviceCount() > 0:
            return None
    except Exception:  # noqa: BLE001 - any failure means no usable device
        pass
    try:
        import pycuda.driver as cuda

        cuda.init()
        if cuda.Device.count() > 0:
            return None
    except Exception:  # noqa: BLE001
        pass
    return "needs an NVIDIA GPU with CuPy or pycuda importable"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    gpu_items = [item for item in items if "gpu" in item.keywords]
    if not gpu_items:
        return
    reason = _gpu_reason()
    if reason is not None:
        for item in gpu_items:
            item.add_marker(pytest.mark.skip(reason=reason))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the checkout (real images and footage); skips when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA} (only present on the team's machines)")
    return SHARED_DATA

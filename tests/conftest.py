"""Shared fixtures: paths to ../shared and small helpers."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"../shared not found at {SHARED}; real-media tests need it beside the repo")
    return SHARED


@pytest.fixture(scope="module")
def ray_cluster(request):
    """A 2-CPU local Ray without GPUs (loopback only) for one test module; executors join it.
    Functions defined in the module travel to the workers by value."""
    ray = pytest.importorskip("ray", reason="Ray is the optional 'ray' extra")
    ray.cloudpickle.register_pickle_by_value(request.module)
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, logging_level=30)
    yield ray
    if started:
        ray.shutdown()
    ray.cloudpickle.unregister_pickle_by_value(request.module)

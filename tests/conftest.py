"""Shared test fixtures. Expensive things (tiny model, Ray cluster) are built once per session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
FIXTURES = Path(__file__).parent / "fixtures"

# Tests never reach the network: a hub lookup fails at once instead of retrying for 20 s.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """MBPP and MBPP+ from ../shared/data (present for developers and CI, never copied in)."""
    if not (SHARED_DATA / "mbpp" / "mbpp.jsonl").is_file():
        pytest.skip(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from ledex_rl.models import build_tiny_model

    return build_tiny_model(target=tmp_path_factory.mktemp("models") / "tiny")


@pytest.fixture
def tiny_env(tiny_model, monkeypatch):
    """The tiny model, also named in LEDEX_TEST_TINY for config overrides built by helpers."""
    monkeypatch.setenv("LEDEX_TEST_TINY", str(tiny_model))
    return tiny_model


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray cluster for the whole session, with explicit fractional resources."""
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # see ledex_rl/cluster.py
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, namespace="ledex_tests", log_to_driver=False)
    yield ray
    ray.shutdown()

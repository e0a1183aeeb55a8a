"""Shared fixtures. Real assets (a Whisper checkpoint, EmoDB) come from $PROBEKIT_SHARED, which `.ci/run` sets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


def _shared() -> Path | None:
    value = os.environ.get("PROBEKIT_SHARED")
    if not value:
        return None
    path = Path(value)
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    """The shared assets folder, or skip: real-model tests need $PROBEKIT_SHARED (set by .ci/run)."""
    path = _shared()
    if path is None:
        pytest.skip("real assets absent: set PROBEKIT_SHARED to the folder holding models/whisper-tiny.en and data/emodb")
    return path


@pytest.fixture(scope="session")
def whisper_tiny(shared_dir: Path) -> Path:
    path = shared_dir / "models" / "whisper-tiny.en"
    if not (path / "config.json").is_file():
        pytest.skip(f"{path} is missing: the real Whisper checkpoint is needed for this test")
    return path


@pytest.fixture(scope="session")
def emodb_manifest(shared_dir: Path) -> Path:
    path = shared_dir / "data" / "emodb" / "manifest.csv"
    if not path.is_file():
        pytest.skip(f"{path} is missing: EmoDB is needed for this test")
    return path

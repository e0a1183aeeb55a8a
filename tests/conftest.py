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


@pytest.fixture(scope="session")
def emodb_whisper_cache(whisper_tiny: Path, emodb_manifest: Path) -> Path:
    """A float32 whisper-tiny.en cache of all 535 EmoDB clips, made by `probekit extract`'s own code.

    $PROBEKIT_EMODB_CACHE may name one already built; otherwise it is extracted into the repo's
    git-ignored cache/ folder, so only the first run pays for it (later runs find it up to date).
    """
    value = os.environ.get("PROBEKIT_EMODB_CACHE")
    if value and Path(value).is_file():
        return Path(value)
    from probekit.extract.encoders import EncoderSpec
    from probekit.extract._extract import extract_cache

    out = Path(__file__).resolve().parent.parent / "cache" / "tests" / "emodb-whisper-tiny.en-float32.h5"
    result = extract_cache(emodb_manifest, EncoderSpec(str(whisper_tiny)), out, pooling="mean", dtype="float32", progress=False)
    assert result.n_segments == 535 and not result.skipped
    return result.path

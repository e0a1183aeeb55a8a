"""retained_heap keeps a CPU run's freed blocks in the process, and gives them back afterwards."""

from __future__ import annotations

import os

import numpy as np
import pytest

from probekit.extract.heap import _glibc, retained_heap

pytestmark = pytest.mark.skipif(_glibc() is None, reason="glibc's mallopt is needed (Linux with glibc)")

BLOCK = 64 * 1024**2  # bytes: above glibc's largest dynamic mmap threshold (32 MiB), so mmapped by default


def _rss() -> int:
    """Resident bytes of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _kept_after_free() -> int:
    """Resident bytes still held after a touched ``BLOCK`` is freed, relative to before it existed."""
    before = _rss()
    a = np.ones(BLOCK, dtype=np.uint8)  # ones, not zeros: every page is written, so resident
    del a
    return _rss() - before


def test_freed_block_is_kept_inside_and_returned_after(monkeypatch):
    for name in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_"):
        monkeypatch.delenv(name, raising=False)
    assert _kept_after_free() < BLOCK // 4  # default: the mmapped block goes straight back
    rss0 = _rss()
    with retained_heap() as on:
        assert on
        assert _kept_after_free() > BLOCK // 2
    # malloc_trim gave the kept block back, and the defaults are in force again.
    assert _rss() - rss0 < BLOCK // 4
    assert _kept_after_free() < BLOCK // 4


def test_user_settings_and_inactive_leave_glibc_alone(monkeypatch):
    with retained_heap(active=False) as on:
        assert not on
        assert _kept_after_free() < BLOCK // 4
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    with retained_heap() as on:
        assert not on


@pytest.mark.parametrize("fixed", [True, False])
def test_extract_keeps_the_heap_only_for_fixed_windows(tmp_path, monkeypatch, fixed):
    """Padded Whisper repeats one batch shape, so kept blocks are reused whole; other encoders'
    shapes vary and kept blocks would fragment the heap, so extraction leaves glibc alone for them."""
    from contextlib import contextmanager

    from fake_encoder import FakeEncoder, write_corpus

    import probekit.extract._extract as ex

    seen = []

    real = ex.retained_heap

    @contextmanager
    def spy(active=True):
        seen.append(active)
        with real(active) as on:
            yield on

    monkeypatch.setattr(ex, "retained_heap", spy)
    manifest = write_corpus(tmp_path)
    enc = FakeEncoder()
    enc.fixed_windows = fixed
    first = ex.extract_cache(manifest, enc, tmp_path / "a.h5", dtype="float32", batch_seconds=1.0, progress=False)
    plain = ex.extract_cache(manifest, FakeEncoder(), tmp_path / "b.h5", dtype="float32", batch_seconds=1.0, progress=False)
    assert seen == [fixed, False]
    from probekit.cache import EmbeddingCache

    a, b = EmbeddingCache(first.path), EmbeddingCache(plain.path)
    for layer in range(FakeEncoder().num_hidden_states):
        np.testing.assert_array_equal(a.read_layer(layer), b.read_layer(layer))

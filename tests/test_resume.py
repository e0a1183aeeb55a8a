"""Kill -9 mid-run, rerun: it finishes, recomputes at most the in-flight batch, and the file is
bit-identical to an uninterrupted run's. Uses a real subprocess and a real SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fake_encoder import FakeEncoder, write_corpus

from probekit.cache import EmbeddingCache
from probekit.extract._extract import extract_cache
from probekit.extract.journal import RunLocked

pytestmark = pytest.mark.slow
WORKER = Path(__file__).with_name("fake_encoder.py")
ROOT = Path(__file__).resolve().parents[1]


def _start(manifest, out, sleep):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(WORKER.parent)]), OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, str(WORKER), str(manifest), str(out), "--sleep", str(sleep), "--batch-seconds", "1.0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )


def _wait_for_batches(proc, count, timeout=60.0):
    deadline = time.monotonic() + timeout
    seen = 0
    while seen < count:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"worker ended early (rc={proc.wait()})")
        if line.startswith("batch "):
            seen += 1
        assert time.monotonic() < deadline, "worker too slow"


def _content(path):
    c = EmbeddingCache(path)
    return c, [c.read_layer(i, dtype=None) for i in range(c.num_layers)]


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    folder = tmp_path_factory.mktemp("resume")
    manifest = write_corpus(folder / "data", n=16)
    ref = extract_cache(manifest, FakeEncoder(), folder / "ref.h5", dtype="float32", batch_seconds=1.0, progress=False)
    return manifest, ref


def _assert_same(path, ref_path):
    a, la = _content(path)
    b, lb = _content(ref_path)
    assert list(a.ids) == list(b.ids)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.durations, b.durations)
    assert a.fingerprint == b.fingerprint


def test_kill_mid_run_then_resume(reference, tmp_path):
    manifest, ref = reference
    out = tmp_path / "c.h5"
    proc = _start(manifest, out, sleep=0.3)
    _wait_for_batches(proc, 3)
    # While the worker is alive, a second writer is refused.
    with pytest.raises(RunLocked):
        extract_cache(manifest, FakeEncoder(), out, dtype="float32", batch_seconds=1.0, progress=False)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not out.exists(), "a killed run must leave no cache file"
    journaled = len(list((tmp_path / "c.h5.partial").glob("batch-*.npz")))
    assert journaled >= 3
    total = ref.batches_computed
    r = extract_cache(manifest, FakeEncoder(), out, dtype="float32", batch_seconds=1.0, progress=False)
    assert r.batches_resumed == journaled and r.batches_computed == total - journaled
    assert not (tmp_path / "c.h5.partial").exists()
    _assert_same(out, ref.path)


@pytest.mark.parametrize("delay", [0.0, 0.15, 0.4])
def test_kill_at_arbitrary_moments_never_corrupts(reference, tmp_path, delay):
    """Kill without waiting for a batch boundary (during start-up, decoding, journaling or the final
    write), possibly twice, then rerun to completion."""
    manifest, ref = reference
    out = tmp_path / "c.h5"
    for _ in range(2):
        proc = _start(manifest, out, sleep=0.05)
        time.sleep(delay + 0.3)  # interpreter start-up takes ~0.3 s
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if out.exists():  # it may have finished: then it must be whole
            break
        for p in (tmp_path / "c.h5.partial").glob("batch-*.npz"):
            np.load(p, allow_pickle=False)["pooled"]  # every journaled batch is complete
    r = extract_cache(manifest, FakeEncoder(), out, dtype="float32", batch_seconds=1.0, progress=False)
    assert r.batches_computed + r.batches_resumed in (0, ref.batches_computed)
    _assert_same(out, ref.path)


class _ReusingEncoder(FakeEncoder):
    """Hands back every batch in one buffer it overwrites, as an encoder with a preallocated output would."""

    def encode(self, waves, pooling="mean"):
        out = super().encode(waves, pooling)
        buf = getattr(self, "_buf", None)
        if buf is None or buf.shape != out.shape:
            buf = self._buf = np.empty(out.shape, np.float32)
        buf[...] = out
        return buf


def test_an_encoder_reusing_its_output_buffer_gives_the_same_cache(tmp_path):
    """Batches held in memory for the final write are copies: a reused buffer must not turn them all into the last one."""
    manifest = write_corpus(tmp_path / "data", n=12)
    ref = extract_cache(manifest, FakeEncoder(), tmp_path / "ref.h5", dtype="float32", batch_seconds=1.0, progress=False)
    got = extract_cache(manifest, _ReusingEncoder(), tmp_path / "got.h5", dtype="float32", batch_seconds=1.0, progress=False)
    assert got.batches_computed > 2  # several batches of one shape share the buffer
    a, b = EmbeddingCache(ref.path), EmbeddingCache(got.path)
    for layer in range(FakeEncoder.num_hidden_states):
        np.testing.assert_array_equal(a.read_layer(layer), b.read_layer(layer))

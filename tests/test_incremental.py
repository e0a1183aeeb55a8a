"""Incremental extraction: a grown manifest, fixed bad rows and replaced files compute only what
changed; kept vectors stay bit-identical; a kill -9 mid-run resumes; the identity API."""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from fake_encoder import FakeEncoder, FakeSpec, write_corpus

from probekit.cache import EmbeddingCache
from probekit.extract._extract import ExtractError, extract_cache
from probekit.identity import CacheIdentity
from probekit.manifest import read_manifest

WORKER = Path(__file__).with_name("fake_encoder.py")
ROOT = Path(__file__).resolve().parents[1]


def _rows(manifest):
    with open(manifest, newline="") as fh:
        return list(csv.DictReader(fh))


def _write(manifest, rows):
    with open(manifest, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return manifest


@pytest.fixture()
def week(tmp_path):
    """16 clips; the manifest of 'last week' holds the first 10, 'this week' all 16."""
    full = write_corpus(tmp_path / "data", n=16)
    rows = _rows(full)
    first = _write(tmp_path / "data" / "week1.csv", rows[:10])
    return first, full


def _by_id(path):
    c = EmbeddingCache(path)
    layers = [c.read_layer(i, dtype=None) for i in range(c.num_layers)]
    return {sid: np.stack([la[k] for la in layers]) for k, sid in enumerate(c.ids)}


def _extract(manifest, out, **kw):
    return extract_cache(manifest, FakeEncoder(), out, batch_seconds=1.0, progress=False, **kw)


def test_a_new_week_computes_only_the_new_rows(week, tmp_path):
    first, full = week
    out = tmp_path / "cache.h5"
    r1 = _extract(first, out)
    before = _by_id(out)
    enc = FakeEncoder()
    r2 = extract_cache(full, enc, out, batch_seconds=1.0, progress=False)
    assert (r2.rows_reused, r2.rows_added, r2.rows_retried, r2.rows_changed) == (10, 6, 0, 0)
    assert sum(enc.calls) == 6  # only the new rows were encoded
    after = _by_id(out)
    assert list(EmbeddingCache(out).ids) == read_manifest(full).ids
    for sid, vec in before.items():
        assert vec.tobytes() == after[sid].tobytes()  # bit-identical, not merely close
    scratch = _by_id(_extract(full, tmp_path / "scratch.h5").path)
    for sid in after:
        np.testing.assert_array_equal(after[sid], scratch[sid])
    # The grown cache is what probe reads, and a rerun is up to date without loading a model.
    r3 = extract_cache(full, FakeSpec(whisper_mode=""), out, progress=False, batch_seconds=1.0,
                       loader=lambda s: pytest.fail("an up-to-date cache must not load the model"))
    assert r3.up_to_date and r3.rows_reused == 16 and r1.n_segments == 10


def test_fixed_rows_are_retried_and_replaced_files_recomputed(week, tmp_path):
    _, full = week
    folder = full.parent
    rows = _rows(full)
    rows[3]["path"] = "wav/later.wav"  # not there yet
    manifest = _write(folder / "m.csv", rows)
    out = tmp_path / "cache.h5"
    r1 = _extract(manifest, out)
    assert [s["id"] for s in r1.skipped] == [rows[3]["id"]] and "not found" in r1.skipped[0]["reason"]
    # An unchanged bad row is not retried: the cache is up to date.
    assert _extract(manifest, out).up_to_date
    before = _by_id(out)
    shutil.copy(folder / "wav" / "c03.wav", folder / "wav" / "later.wav")
    # Same path, other content: a different clip written over c05.
    data, rate = sf.read(folder / "wav" / "c07.wav")
    sf.write(folder / "wav" / "c05.wav", data, rate, subtype="PCM_16")
    r2 = _extract(manifest, out)
    assert (r2.rows_reused, r2.rows_added, r2.rows_retried, r2.rows_changed) == (14, 0, 1, 1)
    assert not r2.skipped
    after = _by_id(out)
    assert not np.array_equal(after["c05"], before["c05"])
    np.testing.assert_array_equal(after["c05"], after["c07"])
    for sid in before:
        if sid != "c05":
            assert before[sid].tobytes() == after[sid].tobytes()


def test_other_settings_are_refused_not_mixed(week, tmp_path):
    first, full = week
    out = tmp_path / "cache.h5"
    _extract(first, out)
    with pytest.raises(ExtractError, match="pooling"):
        _extract(full, out, pooling="mean+std")
    with pytest.raises(ExtractError, match="dtype"):
        _extract(full, out, dtype="float32")
    with pytest.raises(ExtractError, match="model"):
        extract_cache(full, FakeEncoder(name="other/model"), out, batch_seconds=1.0, progress=False)


def test_identity_api(week, tmp_path):
    first, full = week
    out = _extract(first, tmp_path / "cache.h5").path
    stored = CacheIdentity.from_cache(EmbeddingCache(out))
    assert stored is not None and len(stored.rows) == 10
    expected = CacheIdentity.expected(FakeSpec(whisper_mode=""), "mean", "float16", read_manifest(first))
    assert stored.differences(expected) == [] and stored == expected
    grown = CacheIdentity.expected(FakeSpec(whisper_mode=""), "mean+std", "float16", read_manifest(full))
    diff = stored.differences(grown)
    assert diff[0].startswith("pooling: 'mean' here, 'mean+std' there") and "manifest audio" in diff[1]
    assert replace(stored, rows={**stored.rows, "c00": "x"}).differences(stored) == ["1 row(s) audio changed: c00"]
    # No h5py, no transformers: the lead's `probekit run` calls it before anything heavy.
    code = "import sys, probekit.identity; sys.exit(bool({'h5py', 'transformers', 'torch'} & set(sys.modules)))"
    assert subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(ROOT))).returncode == 0


@pytest.mark.slow
def test_kill_during_an_incremental_run_then_resume(week, tmp_path):
    first, full = week
    out = tmp_path / "cache.h5"
    _extract(first, out)
    base = out.read_bytes()
    reference = tmp_path / "ref.h5"
    shutil.copy(out, reference)
    ref = _extract(full, reference)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(WORKER.parent)]), OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, str(WORKER), str(full), str(out), "--sleep", "0.5", "--batch-seconds", "1.0",
                             "--dtype", "float16"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + 60
    while True:
        line = proc.stdout.readline()
        assert line, f"worker ended early (rc={proc.wait()})"
        if line.startswith("batch "):
            break
        assert time.monotonic() < deadline
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert out.read_bytes() == base, "the old cache stays whole until the new one replaces it"
    journaled = len(list((tmp_path / "cache.h5.partial").glob("batch-*.npz")))
    assert journaled >= 1
    r = _extract(full, out)
    assert r.batches_resumed == journaled and r.batches_computed == ref.batches_computed - journaled
    assert (r.rows_reused, r.rows_added) == (10, 6)
    assert EmbeddingCache(out).fingerprint == EmbeddingCache(reference).fingerprint

"""extract_cache with a fake encoder: content, invariance, identity checks, locking and shards."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from fake_encoder import FakeEncoder, FakeSpec, write_corpus

from probekit.extract.audio import load_segment
from probekit.cache import EmbeddingCache
from probekit.extract._extract import (
    ExtractError,
    default_cache_path,
    extract_cache,
    merge_shard_files,
    model_slug,
    parse_shard,
    shard_from_env,
)
from probekit.extract.journal import JournalMismatch, RunLock, RunLocked
from probekit.manifest import read_manifest


@pytest.fixture()
def corpus(tmp_path):
    return write_corpus(tmp_path / "data", n=12)


def _layers(path):
    c = EmbeddingCache(path)
    return c, np.stack([c.read_layer(i) for i in range(c.num_layers)], axis=1)


def _one_by_one(manifest, enc, pooling="mean"):
    m = read_manifest(manifest)
    out = {}
    for s in m.segments:
        wave = load_segment(s.path, s.start, s.end, enc.sample_rate, enc.min_samples)
        out[s.id] = enc.encode([wave], pooling=pooling)[0]
    return out


@pytest.mark.parametrize("pooling", ["mean", "mean+std"])
def test_cache_matches_one_by_one_encoding(corpus, tmp_path, pooling):
    enc = FakeEncoder()
    r = extract_cache(corpus, enc, tmp_path / "c.h5", pooling=pooling, dtype="float32", batch_seconds=3.0, progress=False)
    assert max(enc.calls) > 1  # segments really were batched together
    c, emb = _layers(r.path)
    ref = _one_by_one(corpus, FakeEncoder(), pooling)
    assert list(c.ids) == read_manifest(corpus).ids
    assert emb.shape == (12, 3, 4 if pooling == "mean" else 8) == (r.n_segments, r.num_layers, r.dim)
    for k, sid in enumerate(c.ids):
        np.testing.assert_allclose(emb[k], ref[sid], atol=1e-6)
    with open(corpus) as fh:
        rows = list(csv.DictReader(fh))
    assert list(c.metadata["speaker"]) == [row["speaker"] for row in rows]
    assert list(c.metadata["label"]) == [row["label"] for row in rows]
    assert list(c.metadata["split"]) == [row["split"] for row in rows]
    np.testing.assert_allclose(c.durations, [[0.3, 0.5, 0.8, 1.0, 1.5][i % 5] for i in range(12)], atol=1e-3)
    assert r.audio_seconds == pytest.approx(float(c.durations.sum()))
    a = c.attrs
    assert a["pooling"] == pooling and a["encoder"] == "fake/encoder" and a["commit"] == "0" * 40
    assert a["manifest_fingerprint"] == read_manifest(corpus).audio_fingerprint()
    assert a["config_hash"] == "cafe" and a["sample_rate"] == "16000" and a["dtype"] == "float32"
    assert not (tmp_path / "c.h5.partial").exists() and not (tmp_path / "c.h5.tmp").exists()


def test_unsafe_padding_encoder_never_mixes_lengths(corpus, tmp_path):
    enc = FakeEncoder(pads_safely=False)
    r = extract_cache(corpus, enc, tmp_path / "c.h5", dtype="float32", batch_seconds=30.0, progress=False)
    c, emb = _layers(r.path)
    ref = _one_by_one(corpus, FakeEncoder(pads_safely=False))
    for k, sid in enumerate(c.ids):
        np.testing.assert_allclose(emb[k], ref[sid], atol=1e-6)
    # The fake really is padding-sensitive, so the check above can fail.
    m = read_manifest(corpus)
    short, long_ = (load_segment(m.segments[i].path, sample_rate=16000) for i in (0, 4))
    mixed = FakeEncoder(pads_safely=False).encode([short, long_])[0]
    assert np.abs(mixed - ref[m.segments[0].id]).max() > 1e-3


def test_shuffled_manifest_gives_same_per_id_vectors(corpus, tmp_path):
    lines = corpus.read_text().splitlines()
    shuffled = corpus.with_name("shuffled.csv")
    body = lines[1:]
    np.random.default_rng(3).shuffle(body)
    shuffled.write_text("\n".join([lines[0], *body]) + "\n")
    a, ea = _layers(extract_cache(corpus, FakeEncoder(), tmp_path / "a.h5", dtype="float32", progress=False).path)
    b, eb = _layers(extract_cache(shuffled, FakeEncoder(), tmp_path / "b.h5", dtype="float32", progress=False).path)
    assert list(b.ids) == read_manifest(shuffled).ids != list(a.ids)
    pos = {sid: k for k, sid in enumerate(b.ids)}
    np.testing.assert_array_equal(ea, eb[[pos[s] for s in a.ids]])


def test_float16_is_the_default(corpus, tmp_path):
    r = extract_cache(corpus, FakeEncoder(), tmp_path / "c.h5", progress=False)
    c = EmbeddingCache(r.path)
    assert c.read_layer(0, dtype=None).dtype == np.float16 and c.attrs["dtype"] == "float16"


def test_rerun_on_finished_cache_does_nothing_and_loads_no_model(corpus, tmp_path):
    loads = []

    def loader(spec):
        loads.append(spec)
        return FakeEncoder(name=spec.model)

    out = tmp_path / "c.h5"
    first = extract_cache(corpus, FakeSpec(), out, progress=False, loader=loader)
    assert len(loads) == 1 and first.batches_computed > 0
    before = out.stat().st_mtime_ns
    again = extract_cache(corpus, FakeSpec(), out, progress=False, loader=loader)
    assert len(loads) == 1 and again.up_to_date and again.batches_computed == 0
    assert out.stat().st_mtime_ns == before and again.n_segments == 12


@pytest.mark.parametrize(
    "change,field",
    [({"pooling": "mean+std"}, "pooling"), ({"spec": FakeSpec(model="other/model")}, "model"),
     ({"spec": FakeSpec(revision="v2")}, "revision"), ({"dtype": "float32"}, "dtype")],
)
def test_different_run_against_existing_cache_is_refused(corpus, tmp_path, change, field):
    out = tmp_path / "c.h5"
    extract_cache(corpus, FakeSpec(), out, progress=False, loader=lambda s: FakeEncoder(name=s.model))
    fingerprint = EmbeddingCache(out).fingerprint
    spec = change.pop("spec", FakeSpec())
    with pytest.raises(ExtractError, match=field) as info:
        extract_cache(corpus, spec, out, progress=False, loader=lambda s: pytest.fail("must not load"), **change)
    assert "another --out" in str(info.value)
    assert EmbeddingCache(out).fingerprint == fingerprint


def test_different_run_against_unfinished_journal_is_refused(corpus, tmp_path):
    out = tmp_path / "c.h5"

    class Stop(Exception):
        pass

    def stop(index):
        raise Stop

    with pytest.raises(Stop):
        extract_cache(corpus, FakeEncoder(), out, batch_seconds=2.0, progress=False, on_batch=stop)
    assert (tmp_path / "c.h5.partial" / "batch-000000.npz").is_file() and not out.exists()
    with pytest.raises(JournalMismatch, match="pooling"):
        extract_cache(corpus, FakeEncoder(), out, pooling="mean+std", progress=False)
    # The same run, even with another batch size, resumes with the journal's plan.
    r = extract_cache(corpus, FakeEncoder(), out, batch_seconds=50.0, progress=False)
    assert r.batches_resumed == 1 and EmbeddingCache(out).attrs["batch_seconds"] == 2.0


def test_second_writer_is_refused_while_locked(corpus, tmp_path):
    out = tmp_path / "c.h5"
    with RunLock(out):
        with pytest.raises(RunLocked, match="being written by process"):
            extract_cache(corpus, FakeEncoder(), out, progress=False)
    assert extract_cache(corpus, FakeEncoder(), out, progress=False).n_segments == 12


def test_shards_merge_to_the_unsharded_cache(corpus, tmp_path):
    full = extract_cache(corpus, FakeEncoder(), tmp_path / "full.h5", dtype="float32", batch_seconds=1.0, progress=False)
    paths = []
    for i in range(3):
        p = default_cache_path(corpus, "fake/encoder", tmp_path, shard=(i, 3))
        r = extract_cache(corpus, FakeEncoder(), p, dtype="float32", batch_seconds=1.0, shard=(i, 3), progress=False)
        assert r.n_segments == 4 and p.name == f"fake--encoder.shard-{i}-of-3.h5"
        paths.append(p)
    with pytest.raises(ExtractError, match="missing shard"):
        merge_shard_files(paths[:2], tmp_path / "m.h5")
    merged = merge_shard_files(paths[::-1], tmp_path / "merged.h5")
    a, ea = _layers(full.path)
    b, eb = _layers(merged)
    assert list(a.ids) == list(b.ids)
    np.testing.assert_array_equal(ea, eb)
    assert {k: list(v) for k, v in a.metadata.items()} == {k: list(v) for k, v in b.metadata.items()}
    assert json.loads(b.attrs["run_spec"])["shard"] == ""
    # A merged cache counts as the finished unsharded extraction.
    assert extract_cache(corpus, FakeEncoder(), merged, dtype="float32", progress=False).up_to_date


def test_shard_parsing_and_torchrun_env():
    assert parse_shard("1/4") == (1, 4) and parse_shard(None) is None
    for bad in ("4/4", "x/2", "1", "-1/2"):
        with pytest.raises(ValueError, match="i/n"):
            parse_shard(bad)
    assert shard_from_env({"RANK": "2", "WORLD_SIZE": "4"}) == (2, 4)
    assert shard_from_env({"RANK": "0", "WORLD_SIZE": "1"}) is None and shard_from_env({}) is None


def test_model_slug(tmp_path):
    assert model_slug("openai/whisper-tiny.en") == "openai--whisper-tiny.en"
    (tmp_path / "my model").mkdir()
    assert model_slug(str(tmp_path / "my model")) == "my_model"
    assert default_cache_path("data/emo.csv", "facebook/wav2vec2-base").as_posix() == "cache/emo/facebook--wav2vec2-base.h5"


def test_local_model_named_from_another_directory_is_the_same_run(corpus, tmp_path, monkeypatch):
    model = tmp_path / "models" / "tiny"
    model.mkdir(parents=True)
    out = tmp_path / "c.h5"
    monkeypatch.chdir(tmp_path)
    extract_cache(corpus, FakeSpec(model="models/tiny"), out, progress=False, loader=lambda s: FakeEncoder(name=s.model))
    monkeypatch.chdir(model.parent)
    again = extract_cache(corpus, FakeSpec(model="tiny"), out, progress=False, loader=lambda s: pytest.fail("must not load"))
    assert again.up_to_date


@pytest.mark.parametrize("hold", [0, 200, None])
def test_cache_is_the_same_whether_batches_are_held_in_memory_or_read_back(corpus, tmp_path, monkeypatch, hold):
    """The journal holds finished batches in memory up to a budget; the cache written from memory
    (None: the default budget holds all), from the files (0) or from both (200 bytes: some batches)
    is the same, bit for bit."""
    import probekit.extract.journal as journal

    ref = extract_cache(corpus, FakeEncoder(), tmp_path / "ref.h5", pooling="mean+std", dtype="float32",
                        batch_seconds=1.0, progress=False)
    seen = []
    if hold is not None:
        monkeypatch.setattr(journal, "HOLD_BYTES", hold)
    read = journal.Journal._read
    monkeypatch.setattr(journal.Journal, "_read", lambda self, i: seen.append(i) or read(self, i))
    r = extract_cache(corpus, FakeEncoder(), tmp_path / "c.h5", pooling="mean+std", dtype="float32",
                      batch_seconds=1.0, progress=False)
    assert r.batches_computed > 2
    if hold == 0:
        assert len(set(seen)) == r.batches_computed  # every batch read back from its file
    elif hold is None:
        assert seen == []  # all held: no file read back
    else:
        assert 0 < len(set(seen)) < r.batches_computed
    (a, la), (b, lb) = _layers(ref.path), _layers(r.path)
    assert list(a.ids) == list(b.ids) and a.attrs["fingerprint"] == b.attrs["fingerprint"]
    assert np.array_equal(la, lb) and np.array_equal(a.durations, b.durations)


def test_a_file_cut_into_segments_is_hashed_once(tmp_path, monkeypatch):
    """Rows that cut segments from one file fingerprint it with one read of the file and read its
    header once, and still get a fingerprint per segment (start and end are part of it)."""
    import probekit.identity as identity

    write_corpus(tmp_path / "data", n=2)
    (tmp_path / "data" / "turns.csv").write_text(
        "id,path,start,end,speaker,label\n" + "".join(
            f"t{k},wav/c01.wav,{0.1 * k:.1f},{0.1 * k + 0.1:.1f},s{k % 2},{'ab'[k % 2]}\n" for k in range(4)))
    hashed = []
    digest = identity.file_sha256
    monkeypatch.setattr(identity, "file_sha256", lambda p: hashed.append(p) or digest(p))
    import probekit.extract._extract as extract_module

    headers = []
    read = extract_module.read_header
    monkeypatch.setattr(extract_module, "read_header", lambda p: headers.append(p) or read(p))
    r = extract_cache(tmp_path / "data" / "turns.csv", FakeEncoder(), tmp_path / "c.h5", progress=False, workers=1)
    assert r.n_segments == 4 and len(hashed) == 1 and len(headers) == 1
    assert len(set(EmbeddingCache(r.path).audio["fingerprint"])) == 4


def test_extraction_pipeline_imports_no_torch_until_a_model_loads():
    """`probekit merge`, an up-to-date rerun and the Python API import the pipeline module; torch (2 s) loads
    only with the encoder, when there is work to do."""
    import subprocess
    import sys

    code = "import sys, probekit.extract._extract, probekit.cache; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"

"""A corpus of bad files and bad manifests, generated here: each bad row is reported with its line,
id and reason; the rest is extracted; skipped rows are recorded in the cache."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
from fake_encoder import FakeEncoder, FakeSpec

from probekit.cache import EmbeddingCache
from probekit.extract._extract import extract_cache
from probekit.manifest import ManifestError


def _voice(seconds, rate=16000, seed=0):
    t = np.arange(int(seconds * rate)) / rate
    return (0.3 * np.sin(2 * np.pi * 180 * t) + 0.02 * np.random.default_rng(seed).standard_normal(len(t))).astype(np.float32)


@pytest.fixture()
def bad_corpus(tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    for i in range(4):
        sf.write(d / f"good{i}.wav", _voice(0.5 + 0.25 * i, seed=i), 16000)
    sf.write(d / "long.flac", _voice(3.0), 16000)
    (d / "garbage.wav").write_bytes(b"this is not audio at all" * 20)
    (d / "zero.ogg").write_bytes(b"")
    sf.write(d / "empty.wav", np.zeros(0, np.float32), 16000)
    sf.write(d / "whole.wav", _voice(1.0), 16000)
    data = (d / "whole.wav").read_bytes()
    (d / "truncated.wav").write_bytes(data[: len(data) // 3])
    sf.write(d / "silent.wav", np.zeros(16000, np.float32), 16000)
    rows = [
        ("g0", "good0.wav", "", ""),
        ("garbage", "garbage.wav", "", ""),       # unreadable
        ("g1", "good1.wav", "", ""),
        ("zero", "zero.ogg", "", ""),             # zero-byte file
        ("empty", "empty.wav", "", ""),           # 0 frames
        ("trunc", "truncated.wav", "", ""),       # header promises more than the file holds
        ("silent", "silent.wav", "", ""),
        ("short", "long.flac", "1.0", "1.01"),    # 10 ms: under the encoder's receptive field
        ("beyond", "long.flac", "2.0", "9.0"),    # end past the file's end
        ("cut", "long.flac", "0.5", "1.5"),       # a fine segment
        ("g2", "good2.wav", "", ""),
        ("g3", "good3.wav", "", ""),
    ]
    lines = ["id,path,speaker,start,end,label"] + [f"{i},{p},spk,{s},{e},anger" for i, p, s, e in rows]
    (d / "manifest.csv").write_text("\n".join(lines) + "\n")
    return d / "manifest.csv"


EXPECTED = {  # id -> (manifest line, words in the reason)
    "garbage": (3, "unreadable"),
    "zero": (5, "unreadable"),
    "empty": (6, "empty"),
    "trunc": (7, "truncated"),
    "silent": (8, "silent"),
    "short": (9, "too short"),
    "beyond": (10, "past the end"),
}


def test_bad_rows_reported_and_the_rest_extracted(bad_corpus, tmp_path):
    reported = []
    r = extract_cache(bad_corpus, FakeEncoder(), tmp_path / "c.h5", batch_seconds=2.0, progress=False, on_bad=reported.append)
    assert {e["id"]: (e["line"], e["reason"]) for e in reported}.keys() == EXPECTED.keys()
    for entry in r.skipped:
        line, words = EXPECTED[entry["id"]]
        assert entry["line"] == line and words in entry["reason"], entry
    assert [e["id"] for e in r.skipped] == list(EXPECTED)  # manifest order
    c = EmbeddingCache(r.path)
    assert list(c.ids) == ["g0", "g1", "cut", "g2", "g3"]
    assert c.durations[2] == pytest.approx(1.0)
    assert [(s["id"], s["line"]) for s in c.skipped] == [(k, v[0]) for k, v in EXPECTED.items()]
    assert all(EXPECTED[s["id"]][1] in s["reason"] for s in c.skipped)
    # Rerunning reports the same rows again from the finished cache, without recomputing.
    again = extract_cache(bad_corpus, FakeEncoder(), tmp_path / "c.h5", batch_seconds=2.0, progress=False)
    assert again.up_to_date and [e["id"] for e in again.skipped] == list(EXPECTED)


def test_nothing_computed_is_lost_when_encoding_crashes(bad_corpus, tmp_path):
    class Crash(RuntimeError):
        pass

    class Flaky(FakeEncoder):
        def encode(self, waves, pooling="mean"):
            if len(self.calls) == 2:
                self.calls.append(-1)
                raise Crash("out of memory")
            return super().encode(waves, pooling)

    out = tmp_path / "c.h5"
    with pytest.raises(Crash):
        extract_cache(bad_corpus, Flaky(), out, batch_seconds=1.0, progress=False)
    journaled = len(list((tmp_path / "c.h5.partial").glob("batch-*.npz")))
    assert journaled >= 2
    r = extract_cache(bad_corpus, FakeEncoder(), out, batch_seconds=1.0, progress=False)
    ref = extract_cache(bad_corpus, FakeEncoder(), tmp_path / "ref.h5", batch_seconds=1.0, progress=False)
    assert r.batches_resumed == journaled and r.batches_computed == ref.batches_computed - journaled
    assert EmbeddingCache(out).fingerprint == EmbeddingCache(ref.path).fingerprint
    assert [e["id"] for e in r.skipped] == list(EXPECTED)


BAD_MANIFESTS = {
    "duplicate.csv": ("id,path,speaker,label\na,x.wav,s,anger\na,x.wav,s,anger\n", [(3, "duplicate id")]),
    "bad_times.csv": ("id,path,speaker,start,end,label\na,x.wav,s,3,1,anger\nb,x.wav,s,zz,,anger\n",
                      [(2, "not after start"), (3, "not a number")]),
    "empty_label.csv": ("id,path,speaker,label\na,x.wav,s,\n", [(2, "empty label")]),
    "no_speaker.csv": ("id,path,label\na,x.wav,anger\n", [(None, "speaker")]),
    "ragged.csv": ("id,path,speaker,label\na,x.wav,s,anger,extra\n", [(2, "more fields")]),
    "bad.jsonl": ('{"id": "a", "path": "x.wav", "speaker": "s"}\n{oops\n', [(2, "not valid JSON")]),
    "bad.tsv": ("id\tpath\tspeaker\nb\tx.wav\t\n", [(2, "empty speaker")]),
}


@pytest.mark.parametrize("name", sorted(BAD_MANIFESTS))
def test_bad_manifest_refused_before_any_model_loads(tmp_path, name):
    sf.write(tmp_path / "x.wav", _voice(0.5), 16000)
    text, expected = BAD_MANIFESTS[name]
    (tmp_path / name).write_text(text)
    with pytest.raises(ManifestError) as info:
        extract_cache(tmp_path / name, FakeSpec(), tmp_path / "c.h5", progress=False,
                      loader=lambda s: pytest.fail("the model must not load for a bad manifest"))
    problems = info.value.problems
    assert len(problems) == len(expected)
    for (line, msg), (want_line, words) in zip(problems, expected):
        assert line == want_line and words in msg
    assert not (tmp_path / "c.h5").exists() and not (tmp_path / "c.h5.partial").exists()


def test_all_rows_bad_still_gives_a_cache_listing_them(tmp_path):
    sf.write(tmp_path / "q.wav", np.zeros(8000, np.float32), 16000)
    (tmp_path / "m.csv").write_text("id,path,speaker\na,q.wav,s\nb,q.wav,s\n")
    r = extract_cache(tmp_path / "m.csv", FakeEncoder(), tmp_path / "c.h5", progress=False)
    c = EmbeddingCache(r.path)
    assert len(c) == 0 and (c.num_layers, c.dim) == (3, 4)
    assert [(s["id"], s["line"]) for s in c.skipped] == [("a", 2), ("b", 3)]


def _with_missing(bad_corpus):
    text = bad_corpus.read_text().replace("g3,good3.wav", "gone,no-such-file.wav")
    bad_corpus.write_text(text)
    return bad_corpus


def test_prepass_lists_every_bad_row_before_any_model_loads(bad_corpus, tmp_path):
    from probekit.extract._extract import BadRows

    manifest = _with_missing(bad_corpus)
    with pytest.raises(BadRows) as info:
        extract_cache(manifest, FakeSpec(), tmp_path / "c.h5", progress=False, skip_bad=False,
                      loader=lambda s: pytest.fail("the model must not load when rows are bad"))
    found = {r["id"]: (r["line"], r["reason"]) for r in info.value.rows}
    # Everything a header and size check can see, missing file included, in one report;
    # silence and a too-short cut need the samples, so decoding finds those later.
    header_visible = {k: v for k, v in EXPECTED.items() if k not in ("silent", "short")}
    assert set(found) == set(header_visible) | {"gone"}
    for sid, (line, words) in header_visible.items():
        assert found[sid][0] == line and words in found[sid][1]
    assert found["gone"] == (13, f"audio file not found: {manifest.parent / 'no-such-file.wav'}")
    assert "line 13, id gone: audio file not found" in str(info.value) and "--skip-bad" in str(info.value)
    assert not (tmp_path / "c.h5").exists() and not (tmp_path / "c.h5.partial").exists()


def test_skip_bad_skips_a_missing_file_too(bad_corpus, tmp_path):
    manifest = _with_missing(bad_corpus)
    r = extract_cache(manifest, FakeEncoder(), tmp_path / "c.h5", progress=False, skip_bad=True)
    reasons = {e["id"]: e["reason"] for e in r.skipped}
    assert set(reasons) == set(EXPECTED) | {"gone"} and "audio file not found" in reasons["gone"]
    assert list(EmbeddingCache(r.path).ids) == ["g0", "g1", "cut", "g2"]

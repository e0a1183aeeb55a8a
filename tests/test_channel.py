"""Channel selection: the manifest's ``channel`` column and ``load_segment(channel=...)`` on real EmoDB speech written as stereo."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import soxr
from fake_encoder import FakeEncoder

from probekit.cache import EmbeddingCache
from probekit.extract._extract import extract_cache
from probekit.extract.audio import AudioError, load_segment, probe_segment
from probekit.manifest import ManifestError, read_manifest


@pytest.fixture(scope="module")
def two_speakers(emodb_manifest):
    """Two EmoDB clips of different speakers, int16 at 16 kHz, cut to a common length: ``(a, b)``."""
    wav = emodb_manifest.parent / "wav"
    a, rate_a = sf.read(wav / "03a01Fa.wav", dtype="int16")
    b, rate_b = sf.read(wav / "08a01Wa.wav", dtype="int16")
    assert rate_a == rate_b == 16000
    n = min(len(a), len(b))
    return a[:n], b[:n]


def _stereo(path, a, b, rate=16000):
    sf.write(path, np.stack([a, b], axis=1), rate, subtype="PCM_16")
    return path


def test_each_channel_of_a_stereo_call_is_its_own_speaker(tmp_path, two_speakers):
    a, b = two_speakers
    path = _stereo(tmp_path / "call.wav", a, b)
    as_float = lambda x: (x / 32768.0).astype(np.float32)  # noqa: E731
    np.testing.assert_array_equal(load_segment(path, channel=0), as_float(a))
    np.testing.assert_array_equal(load_segment(path, channel=1), as_float(b))
    mixed = load_segment(path)
    np.testing.assert_allclose(mixed, (as_float(a) + as_float(b)) / 2, atol=1e-7)
    assert not np.allclose(mixed, as_float(a), atol=1e-3)
    # A cut keeps the chosen channel's frames only.
    np.testing.assert_array_equal(load_segment(path, start=0.5, end=1.0, channel=1), as_float(b[8000:16000]))


def test_channel_then_resample_equals_resampling_that_speaker_alone(tmp_path, two_speakers):
    a, b = (soxr.resample(x / 32768.0, 16000, 8000).astype(np.float32) for x in two_speakers)
    sf.write(tmp_path / "tel.wav", np.stack([a, b], axis=1), 8000, subtype="FLOAT")
    sf.write(tmp_path / "b.wav", b, 8000, subtype="FLOAT")
    np.testing.assert_array_equal(load_segment(tmp_path / "tel.wav", channel=1), load_segment(tmp_path / "b.wav"))


def test_silence_is_judged_on_the_kept_channel(tmp_path, two_speakers):
    a, _ = two_speakers
    path = _stereo(tmp_path / "one_sided.wav", a, np.zeros_like(a))
    assert np.abs(load_segment(path, channel=0)).max() > 0.1
    with pytest.raises(AudioError, match="silent"):
        load_segment(path, channel=1)


def test_a_missing_channel_is_named_by_the_header_check(tmp_path, two_speakers):
    a, b = two_speakers
    path = _stereo(tmp_path / "call.wav", a, b)
    assert probe_segment(path, channel=1).channels == 2
    with pytest.raises(AudioError, match=r"channel 2 does not exist: the file has 2 channels \(0-1\)"):
        load_segment(path, channel=2)
    sf.write(tmp_path / "mono.wav", a, 16000)
    with pytest.raises(AudioError, match=r"channel 1 does not exist: the file has 1 channel"):
        probe_segment(tmp_path / "mono.wav", channel=1)
    np.testing.assert_array_equal(load_segment(tmp_path / "mono.wav", channel=0), load_segment(tmp_path / "mono.wav"))


def test_manifest_channel_column_parsed_and_validated_with_line_numbers(tmp_path, two_speakers):
    a, b = two_speakers
    _stereo(tmp_path / "call.wav", a, b)
    sf.write(tmp_path / "mono.wav", a, 16000)
    good = tmp_path / "good.csv"
    good.write_text("id,path,speaker,channel,label\nx,call.wav,s1,0,anger\ny,call.wav,s2,1,anger\nz,mono.wav,s1,,calm\n")
    m = read_manifest(good)
    assert [s.channel for s in m.segments] == [0, 1, None]
    # Not a label, but recorded: the cache's /meta/channel says which side of each call was encoded.
    assert "channel" not in m.label_columns and m.columns()["channel"] == ["0", "1", ""]
    bad = tmp_path / "bad.csv"
    bad.write_text(
        "id,path,speaker,channel,label\n"
        "a,call.wav,s1,1,anger\n"      # line 2: fine
        "b,call.wav,s1,2,anger\n"      # line 3: stereo file has no channel 2
        "c,mono.wav,s1,1,anger\n"      # line 4: mono file has no channel 1
        "d,call.wav,s1,left,anger\n"   # line 5: not a number
        "e,call.wav,s1,-1,anger\n"     # line 6: negative
        "f,call.wav,s1,0.5,anger\n"    # line 7: not whole
    )
    with pytest.raises(ManifestError) as info:
        read_manifest(bad)
    by_line = dict(info.value.problems)
    assert sorted(by_line) == [3, 4, 5, 6, 7]
    assert "channel 2 does not exist" in by_line[3] and "call.wav" in by_line[3]
    assert "1 channel" in by_line[4]
    assert "not a whole number" in by_line[5] and "not a whole number" in by_line[7]
    assert "negative" in by_line[6]
    # Without file checks the header is not read, so only the syntax is judged.
    assert [s.channel for s in read_manifest(good, check_files=False).segments] == [0, 1, None]


def test_fingerprint_follows_the_channel_and_is_unchanged_without_one(tmp_path, two_speakers):
    a, b = two_speakers
    _stereo(tmp_path / "call.wav", a, b)
    plain = tmp_path / "plain.csv"
    plain.write_text("id,path,speaker\nx,call.wav,s\n")
    empty = tmp_path / "empty.csv"
    empty.write_text("id,path,speaker,channel\nx,call.wav,s,\n")
    left, right = tmp_path / "left.csv", tmp_path / "right.csv"
    left.write_text("id,path,speaker,channel\nx,call.wav,s,0\n")
    right.write_text("id,path,speaker,channel\nx,call.wav,s,1\n")
    prints = [read_manifest(p).audio_fingerprint() for p in (plain, empty, left, right)]
    assert prints[0] == prints[1]
    assert len({prints[0], prints[2], prints[3]}) == 3


def test_extract_encodes_the_chosen_side_and_the_cache_records_it(tmp_path, two_speakers):
    """Training segments come from the caller's channel only, and the cache says which channel each row is."""
    a, b = two_speakers
    _stereo(tmp_path / "call.wav", a, b)
    sf.write(tmp_path / "a.wav", a, 16000, subtype="PCM_16")
    (tmp_path / "m.csv").write_text("id,path,speaker,channel,label\nleft,call.wav,s1,0,x\nright,call.wav,s2,1,y\n"
                                    "alone,a.wav,s1,,x\nmixed,call.wav,s3,,y\n")
    out = extract_cache(tmp_path / "m.csv", FakeEncoder(), tmp_path / "cache", progress=False)
    cache = EmbeddingCache(out.path)
    by_id = dict(zip(cache.ids, range(len(cache.ids))))
    assert [cache.metadata["channel"][by_id[i]] for i in ("left", "right", "alone", "mixed")] == ["0", "1", "", ""]
    x = cache.read_layer(1)
    np.testing.assert_allclose(x[by_id["left"]], x[by_id["alone"]], atol=1e-6)  # channel 0 is speaker a's clip
    assert not np.allclose(x[by_id["right"]], x[by_id["left"]], atol=1e-3)
    assert not np.allclose(x[by_id["mixed"]], x[by_id["left"]], atol=1e-3)

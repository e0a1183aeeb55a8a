"""Manifest validation: every problem reported at once, with its line number."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from probekit.manifest import ManifestError, read_manifest, split_labels


@pytest.fixture()
def audio(tmp_path):
    sf.write(tmp_path / "a.wav", np.full(1600, 0.1, np.float32), 16000)
    sf.write(tmp_path / "b.wav", np.full(1600, 0.1, np.float32), 16000)
    return tmp_path


def _write(path, text):
    path.write_text(text)
    return path


def _problems(path, **kw):
    with pytest.raises(ManifestError) as info:
        read_manifest(path, **kw)
    return info.value.problems


def test_good_csv_resolves_paths_times_and_columns(audio):
    m = read_manifest(_write(audio / "m.csv", "id,path,speaker,start,end,label,split\nx,a.wav,s1,0.0,0.05,anger,train\n"
                             "y,b.wav,s2,,,neutral;calm,test\n"))
    assert m.ids == ["x", "y"]
    assert m.segments[0].path == audio / "a.wav" and m.segments[0].end == 0.05
    assert m.segments[1].start is None and m.segments[1].labels == {"label": "neutral;calm"}
    assert m.label_columns == ("label",)
    assert m.columns() == {"speaker": ["s1", "s2"], "split": ["train", "test"], "label": ["anger", "neutral;calm"]}
    assert [s.line for s in m.segments] == [2, 3]


def test_every_problem_at_once_with_line_numbers(audio):
    text = (
        "id,path,speaker,start,end,label\n"
        "x,a.wav,s1,,,anger\n"          # line 2: fine
        "x,b.wav,s1,,,anger\n"          # line 3: duplicate id
        "y,nothere.wav,s1,,,anger\n"    # line 4: missing file
        "z,a.wav,s1,2,1,anger\n"        # line 5: end before start
        "w,a.wav,s1,abc,,anger\n"       # line 6: start not a number
        "v,a.wav,s1,,,\n"               # line 7: empty label
        "u,a.wav,,,,anger\n"            # line 8: empty speaker
        "t,a.wav,s1,-1,,anger\n"        # line 9: negative start
    )
    problems = _problems(_write(audio / "m.csv", text))
    by_line = {line: msg for line, msg in problems}
    assert sorted(by_line) == [3, 4, 5, 6, 7, 8, 9]
    assert "duplicate id 'x'" in by_line[3] and "line 2" in by_line[3]
    assert "not found" in by_line[4]
    assert "not after start" in by_line[5]
    assert "not a number" in by_line[6]
    assert "empty label" in by_line[7]
    assert "empty speaker" in by_line[8]
    assert "negative" in by_line[9]


def test_missing_columns_named(audio):
    problems = _problems(_write(audio / "m.csv", "id,file,label\nx,a.wav,anger\n"))
    assert problems[0][0] is None and "path" in problems[0][1] and "speaker" in problems[0][1]


def test_tsv_and_jsonl(audio):
    m = read_manifest(_write(audio / "m.tsv", "id\tpath\tspeaker\tlabel\nx\ta.wav\ts1\tanger\n"))
    assert m.ids == ["x"]
    lines = [json.dumps({"id": "x", "path": "a.wav", "speaker": "s1", "labels": ["anger", "negative"]}),
             json.dumps({"id": "y", "path": str(audio / "b.wav"), "speaker": "s2", "labels": ["neutral"], "start": 0, "end": 0.05})]
    m = read_manifest(_write(audio / "m.jsonl", "\n".join(lines) + "\n"))
    assert m.ids == ["x", "y"]
    assert split_labels(m.segments[0].labels["labels"]) == ["anger", "negative"]
    assert m.segments[1].end == 0.05


def test_jsonl_reports_bad_lines(audio):
    text = '{"id": "x", "path": "a.wav", "speaker": "s"}\nnot json\n[1, 2]\n{"id": "x", "path": "a.wav", "speaker": "s"}\n'
    problems = _problems(_write(audio / "m.jsonl", text))
    assert {line for line, _ in problems} == {2, 3}
    fixed = text.replace("not json\n[1, 2]\n", "")
    problems = _problems(_write(audio / "m2.jsonl", fixed))
    assert problems == [(2, "duplicate id 'x' (first on line 1)")]


def test_empty_and_unknown_format(audio):
    assert "no rows" in _problems(_write(audio / "m.csv", "id,path,speaker\n"))[0][1]
    assert "unknown manifest format" in _problems(_write(audio / "m.xlsx", "x"))[0][1]
    assert "not found" in _problems(audio / "absent.csv")[0][1]


def test_fingerprint_ignores_labels_and_order_but_not_times(audio):
    a = read_manifest(_write(audio / "a.csv", "id,path,speaker,label\nx,a.wav,s,anger\ny,b.wav,s,calm\n"))
    b = read_manifest(_write(audio / "b.csv", "id,path,speaker,label\ny,b.wav,s,sad\nx,a.wav,s,joy\n"))
    c = read_manifest(_write(audio / "c.csv", "id,path,speaker,label,end\nx,a.wav,s,anger,0.05\ny,b.wav,s,calm,\n"))
    assert a.audio_fingerprint() == b.audio_fingerprint() != c.audio_fingerprint()


def test_fingerprint_is_independent_of_the_working_directory(audio, monkeypatch):
    _write(audio / "m.csv", "id,path,speaker\nx,a.wav,s\n")
    monkeypatch.chdir(audio)
    here = read_manifest("m.csv").audio_fingerprint()
    monkeypatch.chdir(audio.parent)
    assert read_manifest(f"{audio.name}/m.csv").audio_fingerprint() == here
    assert read_manifest(audio / "m.csv").audio_fingerprint() == here

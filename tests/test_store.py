"""The append-only store: reload, torn last line, damaged middle, and refusing mixed experiments."""

from __future__ import annotations

import pytest

from probekit.probe.store import ResultStore, StoreError, cell_key


def _rec(layer, C, fold="o0/i0", cache="fp1", task="t1", path="/c.h5"):
    return {"cache": cache, "cache_path": path, "task": task, "layer": layer, "probe": "logreg-fast",
            "params": {"C": C}, "fold": fold, "scores": {"f1": 0.5 + layer / 10}, "n_test": 10}


def test_reload_and_keys(tmp_path):
    with ResultStore(tmp_path / "r.jsonl") as s:
        s.append([_rec(0, 0.1), _rec(1, 0.1)])
    s2 = ResultStore(tmp_path / "r.jsonl")
    assert len(s2) == 2
    assert s2.get(cell_key("fp1", "t1", 1, "logreg-fast", {"C": 0.1}, "o0/i0"))["scores"]["f1"] == pytest.approx(0.6)
    assert not s2.has(cell_key("fp1", "t1", 1, "logreg-fast", {"C": 1.0}, "o0/i0"))


def test_torn_last_line_is_dropped_and_cut_before_appending(tmp_path):
    p = tmp_path / "r.jsonl"
    with ResultStore(p) as s:
        s.append([_rec(0, 0.1), _rec(1, 0.1)])
    with open(p, "ab") as fh:
        fh.write(b'{"cache": "fp1", "lay')  # a crash mid-write
    s = ResultStore(p)
    assert len(s) == 2 and s.torn
    s.append([_rec(2, 0.1)])
    s.close()
    lines = p.read_text().splitlines()
    assert len(lines) == 3 and all(line.startswith("{") and line.endswith("}") for line in lines)
    assert len(ResultStore(p)) == 3


def test_damaged_middle_is_an_error(tmp_path):
    p = tmp_path / "r.jsonl"
    with ResultStore(p) as s:
        s.append([_rec(0, 0.1)])
    text = p.read_text()
    p.write_text("garbage\n" + text)
    with pytest.raises(StoreError, match="line 1"):
        ResultStore(p)


def test_changed_cache_or_task_is_refused(tmp_path):
    p = tmp_path / "r.jsonl"
    with ResultStore(p) as s:
        s.append([_rec(0, 0.1)])
    s = ResultStore(p)
    s.check_compatible({"/c.h5": "fp1"}, "t1")
    s.check_compatible({"/other.h5": "fp9"}, "t1")
    with pytest.raises(StoreError, match="re-extracted"):
        s.check_compatible({"/c.h5": "fp2"}, "t1")
    with pytest.raises(StoreError, match="label definition"):
        s.check_compatible({"/c.h5": "fp1"}, "t2")

"""probekit stats: counts, co-occurrence, durations and fold support on manifests and caches."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from probekit.cli import app
from probekit.probe.stats import StatsConfig, StatsError, cooccurrence, dataset_stats, load_dataset

SR = 16000


def _corpus(tmp_path: Path) -> tuple[Path, list[dict]]:
    """Eight speakers; one long call recording per speaker cut by start/end, plus one whole-file row each."""
    rows = []
    rng = np.random.default_rng(0)
    for s in range(8):
        call = tmp_path / f"call{s}.wav"
        sf.write(call, rng.standard_normal(SR * 10).astype(np.float32) * 0.1, SR)
        short = tmp_path / f"short{s}.wav"
        sf.write(short, rng.standard_normal(SR // 2).astype(np.float32) * 0.1, SR)
        rows.append({"id": f"c{s}a", "path": call.name, "start": "0.0", "end": "1.5", "speaker": f"spk{s}",
                     "emotions": "anger;fear"})
        rows.append({"id": f"c{s}b", "path": call.name, "start": "2.0", "end": "6.0", "speaker": f"spk{s}",
                     "emotions": "sadness" if s % 2 else "anger"})
        rows.append({"id": f"c{s}c", "path": short.name, "start": "", "end": "", "speaker": f"spk{s}", "emotions": "none"})
    path = tmp_path / "manifest.csv"
    with path.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    return path, rows


def test_cooccurrence_counts_pairs_and_diagonal() -> None:
    y = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 1], [0, 0, 0]])  # rows: {a, b}, {a}, {b, c}, {}
    m = cooccurrence(y)
    np.testing.assert_array_equal(m, [[2, 1, 0], [1, 2, 1], [0, 1, 1]])


def test_manifest_stats_count_labels_durations_and_folds(tmp_path: Path) -> None:
    manifest, rows = _corpus(tmp_path)
    ds = load_dataset(manifest)
    # start/end rows take end - start; whole-file rows take the file's length from its header.
    np.testing.assert_allclose(ds.durations[:3], [1.5, 4.0, 0.5])
    report = dataset_stats(StatsConfig(path=str(manifest), cv="speaker-kfold", folds=4, out=str(tmp_path / "out")))
    s = report.summary
    assert s["target"] == "emotions" and s["multilabel"] and s["segments"] == 24 and s["speakers"] == 8
    counts = {r["label"]: r["segments"] for r in s["labels"]}
    assert counts == {"anger": 12, "fear": 8, "none": 8, "sadness": 4}
    labels = s["cooccurrence"]["labels"]
    matrix = np.array(s["cooccurrence"]["matrix"])
    assert matrix[labels.index("anger"), labels.index("fear")] == 8
    assert matrix[labels.index("sadness"), labels.index("fear")] == 0
    assert np.allclose(s["total_hours"] * 3600, 8 * (1.5 + 4.0 + 0.5))
    per_speaker = {r["speaker"]: r for r in s["speakers_table"]}
    assert per_speaker["spk1"]["labels"]["sadness"] == 1 and per_speaker["spk0"]["labels"]["anger"] == 2
    folds = s["folds"]["rows"]
    assert len(folds) == 4
    assert sum(r["test_segments"] for r in folds) == 24
    assert all(r["min_test_support"] <= r["test_segments"] for r in folds)
    for name in ("cooccurrence", "durations", "markdown", "json"):
        assert report.files[name].is_file() and report.files[name].stat().st_size > 0
    md = report.files["markdown"].read_text()
    assert "![co-occurrence](cooccurrence.png)" in md and "| anger | 12 |" in md


def test_loso_folds_report_labels_absent_from_test(tmp_path: Path) -> None:
    manifest, _ = _corpus(tmp_path)
    s = dataset_stats(StatsConfig(path=str(manifest), target="emotions", cv="loso",
                                  out=str(tmp_path / "o"))).summary
    rows = s["folds"]["rows"]
    assert len(rows) == 8 and all(r["test_speakers"] == 1 for r in rows)
    # Speakers 0, 2, 4, 6 have no sadness: their test folds report it absent.
    absent = [r for r in rows if "sadness" in r["labels_absent_from_test"]]
    assert len(absent) == 4


def test_cache_input_uses_stored_durations(tmp_path: Path) -> None:
    from probekit.cache import write_cache

    n = 12
    ids = [f"u{i}" for i in range(n)]
    meta = {"speaker": [f"s{i % 4}" for i in range(n)], "label": ["happy" if i % 3 else "sad" for i in range(n)]}
    durations = np.linspace(1.0, 3.2, n).astype(np.float32)
    write_cache(tmp_path / "c.h5", ids, np.zeros((n, 2, 4), np.float32), meta, attrs={"encoder": "x"},
                durations=durations, dtype="float32")
    s = dataset_stats(StatsConfig(path=str(tmp_path / "c.h5"), cv="speaker-kfold", folds=2, out=str(tmp_path / "o"))).summary
    assert s["kind"] == "cache" and s["target"] == "label" and not s["multilabel"]
    assert {r["label"]: r["segments"] for r in s["labels"]} == {"happy": 8, "sad": 4}
    assert s["durations"]["max"] == pytest.approx(3.2, abs=1e-5)


def test_unknown_target_and_bad_protocol_are_clear_errors(tmp_path: Path) -> None:
    manifest, _ = _corpus(tmp_path)
    with pytest.raises(StatsError, match="--target 'valence' is not a label column"):
        dataset_stats(StatsConfig(path=str(manifest), target="valence", out=str(tmp_path / "o")))
    with pytest.raises(StatsError, match="unknown --cv"):
        dataset_stats(StatsConfig(path=str(manifest), cv="random", out=str(tmp_path / "o")))
    too_many = dataset_stats(StatsConfig(path=str(manifest), folds=20, out=str(tmp_path / "o"))).summary
    assert "20" in too_many["folds"]["error"]


def test_cli_writes_outputs_and_refuses_missing_input(tmp_path: Path) -> None:
    manifest, _ = _corpus(tmp_path)
    runner = CliRunner()
    result = runner.invoke(app, ["stats", str(manifest), "--out", str(tmp_path / "cli"), "--folds", "4"])
    assert result.exit_code == 0, result.output
    assert "24 segments, 8 speakers" in result.output
    assert json.loads((tmp_path / "cli" / "stats.json").read_text())["segments"] == 24
    result = runner.invoke(app, ["stats", str(tmp_path / "nope.csv")])
    assert result.exit_code == 2 and "does not exist" in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_emodb_stats(tmp_path: Path, emodb_manifest: Path) -> None:
    report = dataset_stats(StatsConfig(path=str(emodb_manifest), cv="loso", out=str(tmp_path)))
    s = report.summary
    assert s["segments"] == 535 and s["speakers"] == 10 and s["target"] == "labels"
    counts = {r["label"]: r["segments"] for r in s["labels"]}
    assert counts["anger"] == 127 and counts["negative"] == sum(counts[e] for e in ("anger", "boredom", "disgust", "fear", "sadness"))
    assert len(s["folds"]["rows"]) == 10

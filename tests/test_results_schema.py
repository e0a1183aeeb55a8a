import copy
import json
from pathlib import Path

import pytest

from probekit.probe.metrics import SCALAR_METRICS
from probekit.probe.probing import ProbeConfig, run_probe
from probekit.results import SCHEMA_VERSION, ResultsSchemaError, load_results, validate_results, write_results
from probekit.probe.tasks import TaskSpec

from _synth import synth_cache

GOLDEN = Path(__file__).parent / "golden" / "results_v1.json"


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("out")
    path = synth_cache(root / "c.h5", n_layers=3, signal_layer=1, n_speakers=5, per_speaker=9)
    docs = {}
    for kind, spec in {
        "binary": TaskSpec("binary", "labels", positive="negative"),
        "multiclass": TaskSpec("multiclass", "label"),
        "multilabel": TaskSpec("multilabel", "labels"),
    }.items():
        run_probe(ProbeConfig(caches=(str(path),), task=spec, folds=3, bootstrap=50, out=str(root / kind)))
        docs[kind] = root / kind
    return docs


@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel"])
def test_written_folder_follows_schema(outputs, kind):
    out = outputs[kind]
    doc = load_results(out / "results.json")
    assert doc["schema_version"] == SCHEMA_VERSION
    assert doc["task"]["kind"] == kind
    assert len(doc["rows"]) == 3
    for row in doc["rows"]:
        assert set(row["metrics"]) == set(SCALAR_METRICS[kind])
    assert doc["caches"][0]["fingerprint"]
    assert {"probekit", "numpy", "scikit-learn", "lightgbm"} <= set(doc["versions"])
    best = doc["best"][0]
    csv_lines = (out / "results.csv").read_text().splitlines()
    assert len(csv_lines) == 4
    assert sum(line.split(",")[3] == "1" for line in csv_lines[1:]) == 1
    report = (out / "report.md").read_text()
    assert "★" in report and f"{doc['headline']['metric']}_by_layer.png" in report
    assert (out / f"{doc['headline']['metric']}_by_layer.png").stat().st_size > 5000
    if kind == "multiclass":
        assert (out / f"confusion_synth_logreg_layer{best['layer']}.png").is_file()
    if kind == "multilabel":
        assert (out / f"per_label_f1_synth_logreg_layer{best['layer']}.png").is_file()
        assert set(doc["rows"][0]["per_label"]) == set(doc["task"]["classes"])


def test_validation_lists_problems(outputs):
    doc = load_results(outputs["multiclass"] / "results.json")
    bad = copy.deepcopy(doc)
    del bad["rows"][0]["metrics"]["uar"]
    bad["rows"][1]["metrics"]["accuracy"]["ci_low"] = "high"
    del bad["rows"][2]["confusion_matrix"]
    with pytest.raises(ResultsSchemaError) as exc:
        validate_results(bad)
    text = str(exc.value)
    assert "rows[0].metrics lacks 'uar'" in text
    assert "rows[1].metrics.accuracy.ci_low" in text
    assert "rows[2] lacks 'confusion_matrix'" in text
    future = dict(doc, schema_version=SCHEMA_VERSION + 1)
    with pytest.raises(ResultsSchemaError, match="schema_version"):
        validate_results(future)


def test_nan_is_written_as_null(tmp_path, outputs):
    doc = load_results(outputs["binary"] / "results.json")
    doc["rows"][0]["metrics"]["roc_auc"]["mean"] = float("nan")
    write_results(doc, tmp_path / "r.json")
    assert json.loads((tmp_path / "r.json").read_text())["rows"][0]["metrics"]["roc_auc"]["mean"] is None


def test_golden_v1_still_loads():
    doc = load_results(GOLDEN)
    assert doc["schema_version"] == 1
    assert doc["task"]["kind"] == "multiclass"
    assert doc["best"][0]["layer"] == 1
    assert doc["rows"][0]["confusion_matrix"]

"""One pipeline, one truth: probe, export and sweep share one core and give the same numbers for the same settings."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from probekit.cache import EmbeddingCache
from probekit.cli import app
from probekit.deploy.export import ExportPlan, evaluate_export, export_probe, load_export
from probekit.deploy.scorer import load_scorer
from probekit.probe.evaluate import EvalProtocol, encoder_names
from probekit.probe.probing import ProbeConfig, run_probe
from probekit.probe.sweep import SweepSpec, run_sweep, write_outputs
from probekit.probe.tasks import TaskSpec

from _predict_helpers import SpectralEncoder, build_cache, training_set
from _synth import synth_cache

TASKS = {
    "binary": TaskSpec("binary", "labels", positive="negative"),
    "multiclass": TaskSpec("multiclass", "label"),
    "multilabel": TaskSpec("multilabel", "labels"),
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> str:
    return str(synth_cache(tmp_path_factory.mktemp("c") / "synth.h5", signal_layer=1, n_layers=3, n_speakers=6, per_speaker=9))


@pytest.mark.parametrize("cv", ["speaker-kfold", "loso"])
@pytest.mark.parametrize("kind", list(TASKS))
def test_probe_and_export_give_identical_folds_predictions_and_metrics(cache, tmp_path, kind, cv):
    layer, seed = 1, 3
    res = run_probe(ProbeConfig(caches=(cache,), task=TASKS[kind], layers=(layer,), cv=cv, folds=3, seed=seed, bootstrap=0,
                                params=(("C", 0.3),), out=str(tmp_path / "probe")))
    row = res.rows[0]
    oof = res.oof[(row["encoder"], "logreg")]

    plan = ExportPlan(TASKS[kind], "logreg", {"C": 0.3, "seed": seed}, EvalProtocol(cv=cv, folds=3, seed=seed))
    done = evaluate_export(EmbeddingCache(cache), layer, plan)
    # The same rows, the same folds, the same out-of-fold probabilities and decisions.
    assert done.prepared.ids.tolist() == oof.ids.tolist()
    assert done.prepared.fold_of().tolist() == oof.fold.tolist()
    np.testing.assert_array_equal(done.outcome.proba, oof.proba[0])
    np.testing.assert_array_equal(done.outcome.pred, oof.pred[0])
    assert json.dumps(done.row["metrics"], sort_keys=True) == json.dumps(row["metrics"], sort_keys=True)  # NaN-safe

    # And through the two commands as a user runs them.
    cli = CliRunner().invoke(app, ["export", cache, "--layer", str(layer), "--task", kind, "--target", TASKS[kind].target,
                                   *(["--positive", TASKS[kind].positive] if TASKS[kind].positive else []),
                                   "--param", "C=0.3", "--cv", cv, "--folds", "3", "--seed", str(seed), "--out", str(tmp_path / "m")])
    assert cli.exit_code == 0, cli.output
    exported = json.loads((tmp_path / "m" / "config.json").read_text())["metrics"]["cross_validated"]
    probed = json.loads((tmp_path / "probe" / "results.json").read_text())["rows"][0]
    assert exported["metrics"] == probed["metrics"]
    headline = {"binary": "f1", "multiclass": "uar", "multilabel": "weighted_f1"}[kind]
    assert f"{headline}={probed['metrics'][headline]['value']:.3f}" in cli.output


def test_export_takes_protocol_and_params_from_a_probe_results_json(cache, tmp_path):
    run_probe(ProbeConfig(caches=(cache,), task=TASKS["multiclass"], cv="loso", seed=5, params=(("C", 0.2),), bootstrap=0,
                          out=str(tmp_path / "p")))
    doc = json.loads((tmp_path / "p" / "results.json").read_text())
    out = export_probe(cache, 2, tmp_path / "m", results=tmp_path / "p" / "results.json")
    config, _ = load_export(out)
    assert config["protocol"]["cv"] == "loso" and config["protocol"]["seed"] == 5
    assert config["probe"]["params"] == {"C": 0.2, "seed": 5}
    probed = next(r for r in doc["rows"] if r["layer"] == 2)
    assert config["metrics"]["cross_validated"]["metrics"]["uar"]["value"] == probed["metrics"]["uar"]["value"]


def test_sweep_winner_exports_and_predicts(tmp_path):
    """sweep (logreg-fast) -> export --results -> predict: the exported C is the sweep's choice."""
    path, _waves = build_cache(tmp_path / "spectral.h5")
    spec = SweepSpec(task="multiclass", target="label", probe="logreg-fast", grid=(("C", (0.001, 0.1, 10.0)),), outer_folds=5, inner_folds=2)
    result = run_sweep([path], spec, tmp_path / "sweep")
    write_outputs(result, tmp_path / "sweep")
    row = next(r for r in result.rows if r["layer"] == 1)
    cli = CliRunner().invoke(app, ["export", str(path), "--layer", "1", "--results", str(tmp_path / "sweep" / "results.json"),
                                   "--out", str(tmp_path / "model")])
    assert cli.exit_code == 0, cli.output
    config, _ = load_export(tmp_path / "model")
    assert config["probe"]["kind"] == "logreg-fast"
    assert config["probe"]["params"] == row["best_params"]
    assert config["protocol"] == {"cv": "speaker-kfold", "folds": 5, "seed": 0, "speaker_column": "speaker"}
    # New audio of the same three kinds: the deployed winner scores it through the encoder.
    waves, labels, _ = training_set(np.random.default_rng(7), n_per_class=4)
    preds = load_scorer(tmp_path / "model", encoder=SpectralEncoder()).predict(waves)
    picked = np.asarray(preds.labels)[preds.probabilities.argmax(1)]
    assert (picked == np.asarray(labels)).mean() >= 0.9


def test_probe_sweep_and_export_refuse_a_missing_layer_with_one_message(cache, tmp_path):
    """The layer range is checked in one place (Prepared.layers), so all three commands name the same fix."""
    from probekit.probe.sweep import SweepError
    from probekit.probe.tasks import ProbeInputError

    want = "has hidden states 0..2; layer(s) [5] are out of range"
    with pytest.raises(ProbeInputError, match=re.escape(want)) as probe:
        run_probe(ProbeConfig(caches=(cache,), task=TASKS["multiclass"], layers=(5,)))
    with pytest.raises(SweepError) as sweep:
        run_sweep([cache], SweepSpec(task="multiclass", target="label", layers=(5,)), tmp_path / "sweep")
    with pytest.raises(ProbeInputError) as export:
        export_probe(cache, 5, tmp_path / "model", task="multiclass", target="label")
    assert str(probe.value) == str(sweep.value) == str(export.value)


def test_two_caches_of_one_model_are_named_by_what_differs(tmp_path):
    a = synth_cache(tmp_path / "a.h5", signal_layer=1, n_layers=2, attrs={"encoder": "/models/whisper-tiny.en", "whisper_mode": "padded", "pooling": "mean"})
    b = synth_cache(tmp_path / "b.h5", signal_layer=1, n_layers=2, attrs={"encoder": "/models/whisper-tiny.en", "whisper_mode": "fast", "pooling": "mean"})
    c = synth_cache(tmp_path / "c.h5", signal_layer=1, n_layers=2, attrs={"encoder": "facebook/wav2vec2-base", "pooling": "mean"})
    names = encoder_names([EmbeddingCache(p) for p in (a, b, c)])
    assert names == ["whisper-tiny.en [padded]", "whisper-tiny.en [fast]", "wav2vec2-base"]
    res = run_probe(ProbeConfig(caches=(str(a), str(b)), task=TASKS["multiclass"], folds=3, bootstrap=0))
    assert {r["encoder"] for r in res.rows} == {"whisper-tiny.en [padded]", "whisper-tiny.en [fast]"}
    swept = run_sweep([a, b], SweepSpec(task="multiclass", target="label", grid=(("C", (1.0,)),), outer_folds=3, inner_folds=2), tmp_path / "s")
    assert {r["encoder"] for r in swept.rows} == {"whisper-tiny.en [padded]", "whisper-tiny.en [fast]"}


def test_labels_come_from_the_current_manifest(tmp_path):
    """A relabelled manifest needs no re-extraction and never reports the old labels."""
    import csv

    from probekit.cache import write_cache

    rng = np.random.default_rng(0)
    n = 60
    ids = [f"u{i}" for i in range(n)]
    speakers = [f"s{i % 6}" for i in range(n)]
    old = ["a" if i % 2 else "b" for i in range(n)]
    new = ["x" if i % 3 else "y" for i in range(n)]
    man = tmp_path / "manifest.csv"

    def write(labels):
        with man.open("w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["id", "path", "speaker", "label"])
            for i in range(n):
                w.writerow([ids[i], f"{ids[i]}.wav", speakers[i], labels[i]])

    write(old)
    from probekit.manifest import read_manifest

    fp = read_manifest(man, check_files=False).audio_fingerprint()
    write_cache(tmp_path / "c.h5", ids, rng.normal(size=(n, 2, 4)).astype(np.float32), {"speaker": speakers, "label": old},
                attrs={"encoder": "m", "manifest": str(man), "manifest_fingerprint": fp}, dtype="float32")
    first = run_probe(ProbeConfig(caches=(str(tmp_path / "c.h5"),), task=TASKS["multiclass"], folds=3, bootstrap=0))
    assert first.document["task"]["classes"] == ["a", "b"]
    write(new)  # relabel in place: same audio, new labels
    second = run_probe(ProbeConfig(caches=(str(tmp_path / "c.h5"),), task=TASKS["multiclass"], folds=3, bootstrap=0))
    assert second.document["task"]["classes"] == ["x", "y"]
    assert second.document["caches"][0]["labels_from"]["source"] == "manifest"


def test_python_api_matches_the_readme():
    import probekit

    for name in ("extract_cache", "run_probe", "run_sweep", "export_probe", "load_scorer", "EmbeddingCache",
                 "ProbeConfig", "TaskSpec", "SweepSpec", "EncoderSpec", "read_manifest"):
        assert callable(getattr(probekit, name)), name
    assert probekit.run_probe is run_probe and probekit.export_probe is export_probe


def test_python_dash_m_probekit_is_the_command(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "probekit", "version"], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[1])
    import probekit

    assert out.stdout.strip() == probekit.__version__


def test_calibrated_and_tuned_probe_and_export_agree(cache, tmp_path):
    """--calibrate and --tune-thresholds are fitted on inner folds in the core, so export repeats probe's numbers."""
    res = run_probe(ProbeConfig(caches=(cache,), task=TASKS["binary"], layers=(1,), folds=3, bootstrap=0, calibrate="isotonic",
                                tune_thresholds=True, out=str(tmp_path / "p")))
    out = export_probe(cache, 1, tmp_path / "m", results=tmp_path / "p" / "results.json")
    config, _ = load_export(out)
    assert config["calibration"] is not None and config["probe"]["calibrate"] == "isotonic"
    assert json.dumps(config["metrics"]["cross_validated"]["metrics"], sort_keys=True) == json.dumps(
        json.loads((tmp_path / "p" / "results.json").read_text())["rows"][0]["metrics"], sort_keys=True)
    assert res.rows[0]["thresholds"] and len(config["thresholds"]) == 1

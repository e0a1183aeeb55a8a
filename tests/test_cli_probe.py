import json

import pytest
from typer.testing import CliRunner

from probekit.cli import app

from _synth import synth_cache

runner = CliRunner()


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(synth_cache(tmp_path_factory.mktemp("c") / "c.h5", n_layers=3, signal_layer=1, n_speakers=5, per_speaker=9))


def test_probe_command_writes_folder_and_table(cache, tmp_path):
    out = tmp_path / "res"
    r = runner.invoke(
        app,
        ["probe", cache, "--task", "binary", "--target", "labels", "--positive", "negative", "--layers", "0-2",
         "--folds", "3", "--bootstrap", "50", "--param", "C=0.5", "--class-weight", "balanced", "--tune-thresholds", "--out", str(out)],
    )
    assert r.exit_code == 0, r.output
    assert "★" in r.output and "f1" in r.output
    doc = json.loads((out / "results.json").read_text())
    assert doc["config"]["probe_params"]["logreg"]["C"] == 0.5
    assert doc["config"]["probe_params"]["logreg"]["class_weight"] == "balanced"
    assert doc["config"]["tune_thresholds"] is True
    assert doc["best"][0]["layer"] == 1
    assert (out / "report.md").is_file() and (out / "results.csv").is_file()


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--task", "multiclass", "--target", "mood"], "'mood' not found"),
        (["--task", "binary", "--target", "labels", "--positive", "joy"], "unknown label"),
        (["--task", "multiclass", "--target", "label", "--folds", "9"], "only 5 speaker"),
        (["--task", "multiclass", "--target", "label", "--probe", "svm"], "unknown probe 'svm'"),
        (["--task", "multiclass", "--target", "label", "--param", "depth"], "NAME=VALUE"),
        (["--task", "multiclass", "--target", "label", "--layers", "7"], "out of range"),
        (["--task", "multiclass", "--target", "label", "--cv", "split"], "split"),
    ],
)
def test_bad_input_gives_message_and_nonzero_exit(cache, tmp_path, args, needle):
    r = runner.invoke(app, ["probe", cache, *args, "--out", str(tmp_path / "o")])
    assert r.exit_code == 2
    assert needle in r.output
    assert "Traceback" not in r.output


def test_missing_cache_file(tmp_path):
    r = runner.invoke(app, ["probe", str(tmp_path / "nope.h5"), "--task", "multiclass", "--target", "label"])
    assert r.exit_code == 2
    assert "cache file not found" in r.output

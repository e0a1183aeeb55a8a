"""Recipes: every shipped recipe validates; broken recipes fail with errors that name the key to fix."""

from __future__ import annotations

import csv
import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from probekit.cli import app
from probekit.probe.probes import probe_params
from probekit.recipes._recipes import (
    RecipeError,
    manifest_header,
    parse_recipe,
    resolve_manifest,
    step_hash,
    validate_recipe,
)



def _shipped(recipes: bool) -> list[Path]:
    """The checkout's ``recipes/**/*.toml`` that are recipes (a ``[recipe]`` table), or the others: sweep files."""
    paths = sorted((Path(__file__).parents[1] / "recipes").glob("**/*.toml"))
    return [p for p in paths if ("recipe" in tomllib.loads(p.read_text(encoding="utf-8"))) == recipes]


RECIPES = _shipped(recipes=True)
SWEEP_FILES = _shipped(recipes=False)

GOOD = """\
# probekit run {path} --data {data}
[recipe]
name = "toy"
description = "a toy study"

[data]
manifest = "${{PROBEKIT_DATA}}/manifest.csv"
columns = ["id", "path", "speaker", "label", "labels"]

[data.vocabulary]
labels = ["anger", "negative", "neutral"]

[[encoders]]
model = "some/model"

[extract]
pooling = "mean"
dtype = "float32"

[[probes]]
name = "bin"
task = "binary"
target = "labels"
positive = "negative"
probes = ["logreg"]
cv = "loso"

[[sweeps]]
name = "sw"
task = "multiclass"
target = "label"
probe = "logreg-fast"

[sweeps.grid]
C = [0.1, 1.0]
"""


def _write(tmp_path: Path, text: str, data: Path | None = None) -> Path:
    path = tmp_path / "r.toml"
    path.write_text(text.format(path=path, data=data or tmp_path))
    return path


def _manifest(folder: Path, header: list[str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "manifest.csv"
    with path.open("w", newline="") as fh:
        csv.writer(fh).writerow(header)
    return path


def test_recipes_are_shipped() -> None:
    names = {p.parent.name for p in RECIPES}
    assert {"hotline", "emodb", "quickstart"} <= names


@pytest.mark.parametrize("path", RECIPES, ids=[p.parent.name for p in RECIPES])
def test_every_shipped_recipe_validates(path: Path) -> None:
    recipe = validate_recipe(path)
    assert any("probekit run" in c and str(path.relative_to(path.parents[2])) in c for c in recipe.commands)
    assert recipe.encoders and (recipe.probes or recipe.sweeps)


@pytest.mark.parametrize("path", SWEEP_FILES, ids=[p.stem for p in SWEEP_FILES])
def test_every_shipped_sweep_file_loads(path: Path) -> None:
    from probekit.probe.sweep import candidate_params
    from probekit.recipes.sweepfile import load_sweep_file

    assert candidate_params(load_sweep_file(path).spec)
    assert any("probekit sweep" in line for line in path.read_text().splitlines()[:3])


def test_emodb_recipe_columns_match_the_real_manifest(emodb_manifest: Path) -> None:
    recipe = validate_recipe(Path(__file__).parents[1] / "recipes" / "emodb" / "emodb.toml", data=emodb_manifest.parent)
    assert resolve_manifest(recipe, emodb_manifest.parent) == emodb_manifest
    assert set(recipe.columns) <= set(manifest_header(emodb_manifest))


def test_hotline_recipe_covers_the_study() -> None:
    recipe = parse_recipe(Path(__file__).parents[1] / "recipes" / "hotline" / "hotline.toml")
    models = {e.model for e in recipe.encoders}
    assert {"TencentGameMate/chinese-hubert-base", "TencentGameMate/chinese-hubert-large",
            "TencentGameMate/chinese-wav2vec2-base", "TencentGameMate/chinese-wav2vec2-large"} <= models
    assert any(m.startswith("openai/whisper-") for m in models)
    tasks = {p.task for p in recipe.probes}
    assert tasks == {"binary", "multilabel"}
    assert all(set(p.probes) == {"logreg", "mlp", "lgbm"} for p in recipe.probes)
    assert all(p.cv == "speaker-kfold" for p in recipe.probes)
    assert recipe.sweeps


def test_good_toy_recipe_parses(tmp_path: Path) -> None:
    recipe = parse_recipe(_write(tmp_path, GOOD))
    assert recipe.name == "toy" and recipe.probes[0].name == "bin" and recipe.sweeps[0].spec.grid == (("C", (0.1, 1.0)),)
    assert recipe.probes[0].cv == "loso" and recipe.extract.dtype == "float32"


@pytest.mark.parametrize(
    "old, new, message",
    [
        ('probes = ["logreg"]', 'probes = ["svm"]', "unknown probe 'svm'"),
        ('target = "labels"', 'target = "emotion"', "target column 'emotion' is not among the manifest columns"),
        ('cv = "loso"', 'cv = "random"', "cv = 'random'"),
        ('task = "binary"', 'task = "regression"', "task = 'regression'"),
        ('pooling = "mean"', 'pooling = "max"', "pooling = 'max'"),
        ('dtype = "float32"', 'dtype = "int8"', "dtype = 'int8'"),
        ("C = [0.1, 1.0]", "gamma = [0.1, 1.0]", "grid parameter 'gamma' is not a parameter of probe 'logreg-fast'"),
        ('positive = "negative"', 'positive = "angry"', "label 'angry' is not in [data.vocabulary]"),
        ('cv = "loso"', 'cv = "loso"\nfolds_count = 3', "unknown key 'folds_count'"),
        ('name = "sw"', 'name = "bin"', "name 'bin' is used twice"),
    ],
)
def test_broken_recipes_name_what_to_fix(tmp_path: Path, old: str, new: str, message: str) -> None:
    assert old in GOOD
    path = _write(tmp_path, GOOD.replace(old, new, 1))
    with pytest.raises(RecipeError) as info:
        parse_recipe(path)
    assert any(message in p for p in info.value.problems), info.value.problems


def test_unknown_probe_parameter_is_refused(tmp_path: Path) -> None:
    text = GOOD.replace('cv = "loso"\n', 'cv = "loso"\n\n[probes.params.logreg]\nC = 0.5\nnot_a_param = 3\n', 1)
    with pytest.raises(RecipeError) as info:
        parse_recipe(_write(tmp_path, text))
    assert len(info.value.problems) == 1 and "no parameter 'not_a_param'" in info.value.problems[0]
    assert "C" in probe_params("logreg")


def test_unnamed_steps_take_their_position_as_name(tmp_path: Path) -> None:
    """Two unnamed [[probes]] steps are probe1 and probe2, not two steps both called None."""
    step = GOOD.split("[[probes]]")[1].split("[[sweeps]]")[0].replace('name = "bin"\n', "")
    text = GOOD.split("[[probes]]")[0] + "[[probes]]" + step + "[[probes]]" + step
    recipe = parse_recipe(_write(tmp_path, text))
    assert [p.name for p in recipe.probes] == ["probe1", "probe2"]


def test_a_step_that_is_not_a_table_is_named(tmp_path: Path) -> None:
    text = GOOD.split("[[probes]]")[0].replace("[recipe]", "probes = [1]\n\n[recipe]")
    with pytest.raises(RecipeError) as info:
        parse_recipe(_write(tmp_path, text))
    assert "[[probes]] #1 must be a table" in info.value.problems


def test_missing_command_comment_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text(GOOD.format(path=path, data=tmp_path).split("\n", 1)[1])
    with pytest.raises(RecipeError, match="first lines must be comments"):
        parse_recipe(path)


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    text = GOOD.replace('probes = ["logreg"]', 'probes = ["svm"]').replace('pooling = "mean"', 'pooling = "max"')
    with pytest.raises(RecipeError) as info:
        parse_recipe(_write(tmp_path, text))
    assert len(info.value.problems) == 2


def test_manifest_header_must_hold_the_declared_columns(tmp_path: Path) -> None:
    data = tmp_path / "data"
    _manifest(data, ["id", "path", "speaker", "label"])
    with pytest.raises(RecipeError, match="lacks column\\(s\\) labels"):
        validate_recipe(_write(tmp_path, GOOD, data), data=data)
    _manifest(data, ["id", "path", "speaker", "label", "labels"])
    assert validate_recipe(_write(tmp_path, GOOD, data), data=data).name == "toy"


def test_data_flag_accepts_a_manifest_file_or_a_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROBEKIT_DATA", raising=False)
    data = tmp_path / "d"
    man = _manifest(data, ["id", "path", "speaker", "label", "labels"])
    recipe = parse_recipe(_write(tmp_path, GOOD))
    assert resolve_manifest(recipe, data) == man
    assert resolve_manifest(recipe, man) == man
    monkeypatch.setenv("PROBEKIT_DATA", str(data))
    assert resolve_manifest(recipe) == man
    monkeypatch.delenv("PROBEKIT_DATA")
    with pytest.raises(RecipeError, match="PROBEKIT_DATA"):
        resolve_manifest(recipe)


def test_step_hash_changes_with_settings_and_caches() -> None:
    base = step_hash({"task": "binary", "C": 1.0}, ["abc"])
    assert base == step_hash({"C": 1.0, "task": "binary"}, ["abc"])
    assert base != step_hash({"task": "binary", "C": 0.5}, ["abc"])
    assert base != step_hash({"task": "binary", "C": 1.0}, ["abd"])


def test_cli_check_reports_errors_without_traceback(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD.replace('probes = ["logreg"]', 'probes = ["svm"]'))
    result = CliRunner().invoke(app, ["run", str(path), "--check"])
    assert result.exit_code == 2
    assert "unknown probe 'svm'" in result.output and "Traceback" not in result.output
    good = _write(tmp_path, GOOD)
    result = CliRunner().invoke(app, ["run", str(good), "--check"])
    assert result.exit_code == 0, result.output
    assert "valid" in result.output


def test_run_without_data_says_where_to_put_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROBEKIT_DATA", raising=False)
    result = CliRunner().invoke(app, ["run", str(_write(tmp_path, GOOD)), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "--data" in result.output


def _toy_audio(data: Path, labels_of) -> Path:
    """Short tones for 60 segments of 5 speakers (every speaker has both labels) and their manifest."""
    import soundfile as sf

    (data / "wav").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rows = []
    for i in range(60):
        label = labels_of(i)
        t = np.arange(int(0.4 * 16000)) / 16000
        wave = 0.3 * np.sin(2 * np.pi * (200 if label == "anger" else 900) * t) + 0.02 * rng.standard_normal(len(t))
        sf.write(data / "wav" / f"u{i}.wav", wave.astype(np.float32), 16000, subtype="PCM_16")
        rows.append([f"u{i}", f"wav/u{i}.wav", f"s{i % 5}", label, label + (";negative" if label == "anger" else "")])
    with (data / "manifest.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["id", "path", "speaker", "label", "labels"])
        w.writerows(rows)
    return data / "manifest.csv"


def _toy_cache_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, with_sweep: bool = False):
    """A recipe over real (tiny) audio, extracted with the test's stand-in encoder instead of a checkpoint."""
    from fake_encoder import FakeEncoder

    monkeypatch.setattr("probekit.extract._extract._load", lambda spec, loader: FakeEncoder(name=spec.model))
    data = tmp_path / "data"
    _toy_audio(data, lambda i: "anger" if i % 2 else "neutral")
    text = GOOD if with_sweep else GOOD.split("[[sweeps]]")[0]
    return _write(tmp_path, text), data, tmp_path / "out"


def test_run_probes_then_skips_finished_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, data, out = _toy_cache_run(tmp_path, monkeypatch)
    from probekit.recipes._recipes import run_recipe

    first = run_recipe(path, data=data, out=out, progress=False)
    assert [(s.kind, s.status) for s in first.steps] == [("extract", "ran"), ("probe", "ran")]
    doc = json.loads((out / "probe" / "bin" / "results.json").read_text())
    assert doc["best"]
    second = run_recipe(path, data=data, out=out, progress=False)
    assert [s.status for s in second.steps] == ["skipped", "skipped"]
    # A changed probe setting reruns that step only.
    path.write_text(path.read_text().replace('cv = "loso"', 'cv = "speaker-kfold"\nfolds = 3'))
    third = run_recipe(path, data=data, out=out, progress=False)
    assert [s.status for s in third.steps] == ["skipped", "ran"]


def test_run_includes_sweep_steps(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, data, out = _toy_cache_run(tmp_path, monkeypatch, with_sweep=True)
    from probekit.recipes._recipes import run_recipe

    first = run_recipe(path, data=data, out=out, progress=False)
    assert [(s.kind, s.status) for s in first.steps] == [("extract", "ran"), ("probe", "ran"), ("sweep", "ran")]
    assert (out / "sweep" / "sw" / "results.json").is_file()
    second = run_recipe(path, data=data, out=out, progress=False)
    assert [s.status for s in second.steps] == ["skipped"] * 3


def test_a_changed_manifest_never_reports_the_old_numbers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run, change the manifest, run again: the second run's results are the new manifest's (or it refuses)."""
    path, data, out = _toy_cache_run(tmp_path, monkeypatch)
    from probekit.recipes._recipes import run_recipe

    run_recipe(path, data=data, out=out, progress=False)
    old = json.loads((out / "probe" / "bin" / "results.json").read_text())
    (out / "probe" / "bin" / "stale.png").write_bytes(b"")  # a user's file is left alone; the old run's are not kept as new
    # Relabelled: same audio, other labels -> no re-extraction, new numbers.
    _toy_audio(data, lambda i: "anger" if i % 3 == 0 else "neutral")
    relabelled = run_recipe(path, data=data, out=out, progress=False)
    assert [s.status for s in relabelled.steps] == ["skipped", "ran"]
    doc = json.loads((out / "probe" / "bin" / "results.json").read_text())
    assert doc["caches"][0]["n_rows_used"] == 60 and doc["rows"] != old["rows"]
    assert doc["caches"][0]["labels_from"]["sha256"] == _sha(data / "manifest.csv")
    # The out-of-fold file holds the new labels: 20 positives (every third row), not the old 30.
    oof = np.load(next((out / "probe" / "bin" / "oof").glob("*.npz")), allow_pickle=False)
    assert int(oof["y_true"].sum()) == 20
    # Another corpus in the same place: fewer rows -> the cache is recomputed, the probe rerun on it.
    other = tmp_path / "other"
    _toy_audio(other, lambda i: "anger" if i % 2 else "neutral")
    with (other / "manifest.csv").open() as fh:
        lines = fh.readlines()[:41]
    (other / "manifest.csv").write_text("".join(lines))
    third = run_recipe(path, data=other, out=out, progress=False)
    assert [s.status for s in third.steps] == ["ran", "ran"]
    doc = json.loads((out / "probe" / "bin" / "results.json").read_text())
    assert doc["caches"][0]["n_rows"] == 40 and doc["caches"][0]["n_rows_used"] == 40
    plots = json.loads((out / "probe" / "bin" / ".probekit-outputs.json").read_text())["files"]
    assert all((out / "probe" / "bin" / p).is_file() for p in plots)


def _sha(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_cli_run_prints_the_layer_table_and_plots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path, data, out = _toy_cache_run(tmp_path, monkeypatch)
    result = CliRunner().invoke(app, ["run", str(path), "--data", str(data), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "== bin" in result.output and "plot:" in result.output
    assert str(out / "probe" / "bin") in result.output


@pytest.mark.parametrize("key, value", [("class_weight", '"balance"'), ("calibrate", '"platt"')])
def test_probe_step_choices_are_checked_before_any_work(tmp_path: Path, key: str, value: str) -> None:
    """class_weight and calibrate are closed sets (probekit.choices): a typo fails --check, not the run."""
    path = _write(tmp_path, GOOD.replace('cv = "loso"\n', f'cv = "loso"\n{key} = {value}\n', 1))
    with pytest.raises(RecipeError) as info:
        parse_recipe(path)
    assert any(f"{key} = {value.strip(chr(34))!r}" in p for p in info.value.problems), info.value.problems

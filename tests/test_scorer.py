"""The scorer mirrors the CLI: waveforms, paths, lists and manifests; encoder truncation; CLI commands."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from typer.testing import CliRunner

from probekit.cli import app
from probekit.deploy.export import ExportError, export_probe
from probekit.deploy.scorer import ScorerError, load_scorer

from _predict_helpers import RATE, SpectralEncoder, build_cache, save_tiny_whisper, tone


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("s")
    cache, _ = build_cache(root / "c.h5")
    return export_probe(cache, 1, root / "m", task="multiclass", target="label", probe="logreg", evaluate=False)


@pytest.fixture()
def scorer(model):
    return load_scorer(model, encoder=SpectralEncoder())


def test_predict_accepts_waveforms_paths_lists_and_manifests(scorer, tmp_path):
    rng = np.random.default_rng(5)
    low, high = tone(300, 1.5, rng), tone(3000, 1.2, rng)
    sf.write(tmp_path / "low.wav", low, RATE, subtype="FLOAT")
    sf.write(tmp_path / "high.wav", high, RATE, subtype="FLOAT")
    (tmp_path / "m.csv").write_text("id,path,speaker,start,end\nlo,low.wav,a,0.0,1.0\nhi,high.wav,a,0.2,1.2\n")

    one = scorer.predict(low)
    assert one.labels == ("high", "low", "quiet") and one.probabilities.shape == (1, 3)
    assert one.decisions[0].tolist() == [False, True, False]
    expected = scorer.head.predict_proba(SpectralEncoder().encode([low, high])[:, 1])
    by_path = scorer.predict([tmp_path / "low.wav", str(tmp_path / "high.wav")])
    np.testing.assert_allclose(by_path.probabilities, expected, atol=1e-6)
    np.testing.assert_allclose(scorer.predict([low, high]).probabilities, expected, atol=1e-6)
    assert scorer.predict(tmp_path / "high.wav").decisions[0].tolist() == [True, False, False]

    seg = scorer.predict(tmp_path / "m.csv")
    assert seg.ids == ("lo", "hi") and seg.start.tolist() == [0.0, 0.2] and seg.end.tolist() == [1.0, 1.2]
    cut = SpectralEncoder().encode([low[:RATE], high[int(0.2 * RATE):int(1.2 * RATE)]])[:, 1]
    np.testing.assert_allclose(seg.probabilities, scorer.head.predict_proba(cut), atol=1e-6)

    rows = list(csv.DictReader(open(seg.to_csv(tmp_path / "p.csv"))))
    assert [r["id"] for r in rows] == ["lo", "hi"] and rows[1]["high"] == "1" and rows[0]["low"] == "1"
    assert abs(float(rows[0]["p_low"]) - seg.probabilities[0, 1]) < 1e-5


def test_bad_inputs_are_named(scorer, tmp_path):
    with pytest.raises(ScorerError, match="nope.wav"):
        scorer.predict(tmp_path / "nope.wav")
    (tmp_path / "bad.wav").write_bytes(b"not audio at all")
    with pytest.raises(ScorerError, match="bad.wav"):
        scorer.predict(tmp_path / "bad.wav")
    with pytest.raises(ScorerError, match="1-D"):
        scorer.predict(np.zeros((2, 100), np.float32))


def test_encoder_identity_mismatch_is_refused(model):
    enc = SpectralEncoder()
    cfg = json.loads((model / "config.json").read_text())
    enc.identity = {"commit": "abc", "config_hash": "different"}
    assert cfg["encoder"]["config_hash"] == ""  # the synthetic cache records none, so nothing to compare
    load_scorer(model, encoder=enc)
    enc.sample_rate = 8000
    with pytest.raises(ScorerError, match="8000 Hz"):
        load_scorer(model, encoder=enc)


def test_cli_export_then_predict(tmp_path, monkeypatch):
    cache, _ = build_cache(tmp_path / "c.h5")
    runner = CliRunner()
    res = runner.invoke(app, ["export", str(cache), "--layer", "1", "--task", "binary", "--target", "labels",
                              "--positive", "tonal", "--probe", "logreg", "--out", str(tmp_path / "m")])
    assert res.exit_code == 0, res.output
    assert "f1=" in res.output
    again = runner.invoke(app, ["export", str(cache), "--layer", "1", "--task", "binary", "--target", "labels",
                                "--out", str(tmp_path / "m2")])
    assert again.exit_code == 2 and "--positive" in again.output  # bad input: exit status 2, as in every command
    missing = runner.invoke(app, ["export", str(tmp_path / "none.h5"), "--layer", "1", "--task", "binary",
                                  "--target", "labels", "--positive", "tonal", "--out", str(tmp_path / "m3")])
    assert missing.exit_code == 2 and "none.h5" in missing.output

    import probekit.deploy.scorer as scorer_mod

    real = scorer_mod.load_scorer
    monkeypatch.setattr(scorer_mod, "load_scorer", lambda d, device="auto", fast=False: real(d, device, encoder=SpectralEncoder()))
    rng = np.random.default_rng(1)
    sf.write(tmp_path / "a.wav", np.concatenate([tone(3000, 2, rng), 0.01 * rng.normal(size=2 * RATE)]).astype(np.float32), RATE)
    res = runner.invoke(app, ["predict", str(tmp_path / "m"), str(tmp_path / "a.wav"), "--out", str(tmp_path / "o")])
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(open(tmp_path / "o" / "predictions.csv")))
    assert len(rows) == 1 and set(rows[0]) == {"id", "start_s", "end_s", "p_tonal", "tonal"}
    res = runner.invoke(app, ["predict", str(tmp_path / "m"), str(tmp_path / "a.wav"), "--out", str(tmp_path / "o"),
                              "--window", "1", "--hop", "1", "--no-vad"])
    assert res.exit_code == 0, res.output
    tl = list(csv.DictReader(open(tmp_path / "o" / "a.timeline.csv")))
    assert [r["tonal"] for r in tl] == ["1", "1", "0", "0"] and {r["speech"] for r in tl} == {""}
    assert (tmp_path / "o" / "a.timeline.png").stat().st_size > 1000
    bad = runner.invoke(app, ["predict", str(tmp_path / "m"), str(tmp_path / "a.wav"), "--window", "1"])
    assert bad.exit_code == 2 and "--hop" in bad.output
    (tmp_path / "m" / "weights.safetensors").write_bytes(b"x")
    tampered = runner.invoke(app, ["predict", str(tmp_path / "m"), str(tmp_path / "a.wav"), "--out", str(tmp_path / "o")])
    assert tampered.exit_code == ExportError.exit_code and "weights.safetensors" in tampered.output


# ----------------------------------------------------------------- truncation (needs probekit.extract.encoders)
def _tiny_wav2vec2(path: Path, layers: int) -> Path:
    transformers = pytest.importorskip("transformers")
    import torch

    cfg = transformers.Wav2Vec2Config(hidden_size=32, num_hidden_layers=layers, num_attention_heads=2, intermediate_size=64,
                                      conv_dim=(32, 32), conv_kernel=(10, 3), conv_stride=(5, 2), num_conv_pos_embeddings=16,
                                      num_conv_pos_embedding_groups=2, feat_extract_norm="layer", do_stable_layer_norm=True)
    torch.manual_seed(0)
    transformers.Wav2Vec2Model(cfg).save_pretrained(path)
    return path


@pytest.mark.parametrize("make", [save_tiny_whisper, _tiny_wav2vec2], ids=["whisper", "wav2vec2"])
def test_truncated_encoder_gives_the_full_pass_vectors(tmp_path, make):
    encoders = pytest.importorskip("probekit.extract.encoders", reason="probekit.extract.encoders (branch `encoders`) not merged yet")
    model = make(tmp_path / "tiny", 4)
    rng = np.random.default_rng(0)
    waves = [rng.normal(size=n).astype(np.float32) * 0.1 for n in (8000, 12345)]
    full = encoders.load_encoder(encoders.EncoderSpec(str(model), device="cpu"))
    ref = full.encode(waves)
    assert ref.shape[1] == 5
    for k in (1, 2):
        cut = encoders.load_encoder(encoders.EncoderSpec(str(model), device="cpu", max_layer=k))
        got = cut.encode(waves)
        assert got.shape[1] == k + 1
        np.testing.assert_allclose(got, ref[:, : k + 1], atol=1e-5)


@pytest.mark.parametrize("method", ["temperature", "isotonic"])
def test_a_calibrated_export_scores_with_its_calibration_map(tmp_path, method):
    """The thresholds were tuned on calibrated scores, so the scorer must calibrate before comparing."""
    from probekit.cache import EmbeddingCache
    from probekit.probe.calibration import ProbabilityCalibrator

    cache, waves = build_cache(tmp_path / "c.h5")
    out = export_probe(cache, 1, tmp_path / "m", task="binary", target="label", positive="low", probe="logreg",
                       calibrate=method, tune=True, protocol=None, evaluate=False)
    config = json.loads((out / "config.json").read_text())
    assert config["calibration"]["method"] == method and len(config["thresholds"]) == 1
    scorer = load_scorer(out, encoder=SpectralEncoder())
    x = EmbeddingCache(cache).read_layer(1)
    raw = scorer.head.predict_proba(x)
    want = ProbabilityCalibrator.from_config(config["calibration"]).transform(raw)
    assert not np.allclose(want, raw, atol=1e-3)  # the map is not the identity, so the check below can fail
    p, d = scorer.score_embeddings(x)
    np.testing.assert_allclose(p, want, atol=1e-9)
    np.testing.assert_array_equal(d, want >= np.asarray(config["thresholds"]))
    # From audio too: the same map, through the encoder.
    got = scorer.predict(waves[:4]).probabilities
    np.testing.assert_allclose(got, ProbabilityCalibrator.from_config(config["calibration"]).transform(
        scorer.head.predict_proba(SpectralEncoder().encode(waves[:4])[:, 1])), atol=1e-6)


def test_a_malformed_calibration_block_is_named(model, tmp_path):
    import shutil

    bad = tmp_path / "m"
    shutil.copytree(model, bad)
    config = json.loads((bad / "config.json").read_text())
    config["calibration"] = {"method": "temperature", "columns": 3, "temperature": [1.0]}
    (bad / "config.json").write_text(json.dumps(config))
    with pytest.raises((ScorerError, ExportError), match="calibration"):
        load_scorer(bad, encoder=SpectralEncoder())

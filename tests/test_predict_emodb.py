"""Real model, real speech: export a whisper-tiny.en EmoDB probe, then predict from audio.

A subset of EmoDB (4 speakers) is embedded with Whisper's fast mode to keep CI short; the full-corpus
numbers (all 535 utterances, padded mode) are in docs/predict.md.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.metrics import balanced_accuracy_score

from probekit.extract.audio import load_segment
from probekit.cache import EmbeddingCache, write_cache
from probekit.deploy.export import export_probe, predict_proba_columns
from probekit.probe.evaluate import EvalProtocol, prepare
from probekit.probe.probes import make_probe
from probekit.probe.tasks import TaskSpec
from probekit.deploy.scorer import load_scorer

pytestmark = pytest.mark.slow
SPEAKERS = ("03", "08", "11", "16")
HELD_OUT = "03"
LAYER = 2


@pytest.fixture(scope="module")
def emodb(whisper_tiny, emodb_manifest, tmp_path_factory):
    """(cache path, export folder, rows) for the subset; the export is trained without HELD_OUT."""
    from probekit.extract.encoders import EncoderSpec, load_encoder

    rows = [r for r in csv.DictReader(open(emodb_manifest)) if r["speaker"] in SPEAKERS]
    for r in rows:
        r["file"] = emodb_manifest.parent / r["path"]
    enc = load_encoder(EncoderSpec(str(whisper_tiny), whisper_mode="fast", device="cpu"))
    waves = [load_segment(r["file"], sample_rate=enc.sample_rate) for r in rows]
    emb = np.concatenate([enc.encode(waves[i:i + 16]) for i in range(0, len(waves), 16)])
    root = tmp_path_factory.mktemp("emodb")
    attrs = {k: enc.identity.get(k, "") for k in ("encoder", "revision", "commit", "config_hash", "whisper_mode")}
    attrs.update(pooling="mean", sample_rate=enc.sample_rate)
    cache = write_cache(root / "emodb.h5", [r["id"] for r in rows], emb,
                        {c: [r[c] for r in rows] for c in ("speaker", "label", "labels")}, attrs, dtype="float32")
    model = export_probe(cache, LAYER, root / "model", task="multiclass", target="label", probe="logreg",
                         exclude_speakers=[HELD_OUT])
    return cache, model, rows


def test_training_rows_match_the_in_memory_probe(emodb):
    cache, model, rows = emodb
    c = EmbeddingCache(cache)
    train = c.metadata["speaker"] != HELD_OUT
    x = c.read_layer(LAYER)[train]
    y = prepare(c, TaskSpec("multiclass", "label"), EvalProtocol(), exclude_speakers=[HELD_OUT]).targets.y
    est = clone(make_probe("logreg", seed=0)).fit(x, y)
    scorer = load_scorer(model, device="cpu")
    # Same embeddings: the exported head equals the fitted probe.
    np.testing.assert_allclose(scorer.head.predict_proba(x), predict_proba_columns(est, x, "multiclass"), atol=1e-6, rtol=0)
    # From audio, through the encoder truncated after LAYER: the embeddings agree with the cache's full pass.
    pick = np.flatnonzero(train)[::10]
    preds = scorer.predict([rows[i]["file"] for i in pick])
    assert scorer.encoder.num_hidden_states == LAYER + 1
    waves = [load_segment(rows[i]["file"]) for i in pick]
    np.testing.assert_allclose(scorer.embed(waves), c.read_layer(LAYER)[pick], atol=1e-4, rtol=0)
    np.testing.assert_allclose(preds.probabilities, scorer.head.predict_proba(c.read_layer(LAYER)[pick]), atol=1e-3, rtol=0)


def test_held_out_speaker_scores_like_cross_validation(emodb):
    cache, model, rows = emodb
    scorer = load_scorer(model, device="cpu")
    held = [r for r in rows if r["speaker"] == HELD_OUT]
    preds = scorer.predict([r["file"] for r in held])
    truth = np.array([scorer.labels.index(r["label"]) for r in held])
    uar = balanced_accuracy_score(truth, preds.probabilities.argmax(axis=1))
    cv_uar = scorer.config["metrics"]["pooled"]["uar"]
    print(f"held-out speaker {HELD_OUT}: UAR {uar:.3f}; CV (LOSO over the 3 training speakers) UAR {cv_uar:.3f}")
    # CV here trains on 2 speakers per fold and the export on 3, so the deployed scorer may do better than
    # CV promised, never clearly worse; the full corpus (docs/predict.md) gives 0.918 held out vs 0.919 CV.
    assert uar > 0.6 and uar >= cv_uar - 0.1


def test_call_timeline_peaks_on_the_anger_clips(emodb, tmp_path):
    """A 2-minute call of the held-out speaker's clips with noise between them; anger placed at known times."""
    import soundfile as sf
    from sklearn.metrics import roc_auc_score

    _, model, rows = emodb
    held = [r for r in rows if r["speaker"] == HELD_OUT]
    rng = np.random.default_rng(0)
    parts, placed, t = [], [], 0.0
    while t < 110:
        gap = rng.uniform(1, 3)
        parts.append((0.002 * rng.normal(size=int(gap * 16000))).astype(np.float32))
        t += gap
        clip = held[rng.integers(len(held))]
        wave, _ = sf.read(clip["file"], dtype="float32")
        parts.append(wave)
        placed.append((clip["label"], t, t + len(wave) / 16000))
        t += len(wave) / 16000
    sf.write(tmp_path / "call.wav", np.concatenate(parts), 16000)
    scorer = load_scorer(model, device="cpu")
    tl = scorer.timeline(tmp_path / "call.wav", 3.0, 3.0, csv_path=tmp_path / "tl.csv", png_path=tmp_path / "tl.png")
    anger = [(s, e) for lab, s, e in placed if lab == "anger"]
    assert len(anger) >= 3
    overlap = np.array([any(s < e1 and e > s1 for s1, e1 in anger) for s, e in zip(tl.start, tl.end)])
    p = tl.probabilities[:, scorer.labels.index("anger")]
    auc = roc_auc_score(overlap, p)
    print(f"anger: {len(anger)} clips, {overlap.sum()}/{len(p)} windows overlap them, window AUC {auc:.3f}")
    assert overlap[np.argmax(p)] and auc > 0.85

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
                         protocol=EvalProtocol(cv="loso"), exclude_speakers=[HELD_OUT])
    return cache, model, rows


def test_training_rows_match_the_in_memory_probe(emodb):
    cache, model, rows = emodb
    c = EmbeddingCache(cache)
    train = c.metadata["speaker"] != HELD_OUT
    x = c.read_layer(LAYER)[train]
    y = prepare(c, TaskSpec("multiclass", "label"), EvalProtocol(cv="loso"), exclude_speakers=[HELD_OUT]).targets.y
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
    cv_uar = scorer.config["metrics"]["cross_validated"]["metrics"]["uar"]["value"]
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
    # Only windows the VAD found speech in carry scores; every clip holds speech, so each anger clip is scored.
    overlap = np.array([any(s < e1 and e > s1 for s1, e1 in anger) for s, e in zip(tl.start, tl.end)])
    assert tl.speech[overlap].all()
    p = tl.probabilities[tl.speech, scorer.labels.index("anger")]
    auc = roc_auc_score(overlap[tl.speech], p)
    print(f"anger: {len(anger)} clips, {overlap.sum()}/{tl.speech.sum()} scored windows overlap them "
          f"({len(tl.start)} windows in all), window AUC {auc:.3f}")
    assert overlap[tl.speech][np.argmax(p)] and auc > 0.85


def _clips(rows, speaker, label, n, min_seconds=2.0):
    import soundfile as sf

    out = [r for r in rows if r["speaker"] == speaker and r["label"] == label and sf.info(r["file"]).duration >= min_seconds]
    assert len(out) >= n, (speaker, label)
    return [sf.read(r["file"], dtype="float32")[0] for r in out[:n]]


def test_two_channel_call_vad_and_channel_choice(emodb, tmp_path):
    """Caller (held-out speaker 03: anger and neutral, turn by turn) on channel 0, counsellor (speaker 08, sadness)
    on channel 1, quiet gaps between turns: each channel's timeline scores its own speaker only."""
    import soundfile as sf
    from sklearn.metrics import roc_auc_score

    _, model, rows = emodb
    caller = [w for pair in zip(_clips(rows, HELD_OUT, "anger", 6), _clips(rows, HELD_OUT, "neutral", 6)) for w in pair]
    caller_labels = ["anger", "neutral"] * 6
    counsellor = _clips(rows, "08", "sadness", 6) * 2
    rng = np.random.default_rng(1)
    left, right, turns, t = [], [], [], 0.0  # turns: (channel, label, start_s, end_s)

    def put(ch, wave, label):
        nonlocal t
        gap = (0.0003 * rng.normal(size=(int(rng.uniform(2.5, 3.5) * 16000), 2))).astype(np.float32)
        left.append(gap[:, 0]), right.append(gap[:, 1])
        t += len(gap) / 16000
        quiet = (0.0003 * rng.normal(size=len(wave))).astype(np.float32)
        left.append(wave if ch == 0 else quiet), right.append(quiet if ch == 0 else wave)
        turns.append((ch, label, t, t + len(wave) / 16000))
        t += len(wave) / 16000

    for a, lab, b in zip(caller, caller_labels, counsellor):
        put(0, a, lab)
        put(1, b, "sadness")
    put(0, np.zeros(0, np.float32), "")  # a closing gap
    turns.pop()
    sf.write(tmp_path / "call.wav", np.stack([np.concatenate(left), np.concatenate(right)], axis=1), 16000, subtype="PCM_16")

    scorer = load_scorer(model, device="cpu")
    runs = {ch: scorer.timeline(tmp_path / "call.wav", 2.0, 1.0, channel=ch, csv_path=tmp_path / f"c{ch}.csv",
                                png_path=tmp_path / f"c{ch}.png") for ch in (0, 1)}

    def within(tl, ch=None, label=None):
        """Windows lying wholly inside a turn of channel ``ch`` (and ``label``), or wholly inside a gap for ch=None."""
        spans = [(s, e) for c, lab, s, e in turns if (ch is None or c == ch) and (label is None or lab == label)]
        inside = np.array([any(s <= a and b <= e for s, e in spans) for a, b in zip(tl.start, tl.end)])
        if ch is None:
            return np.array([not any(s < b and a < e for _, _, s, e in turns) for a, b in zip(tl.start, tl.end)])
        return inside

    for ch, tl in runs.items():
        gaps = within(tl)
        assert gaps.sum() >= 10 and not tl.speech[gaps].any(), f"channel {ch}: a quiet gap was scored"
        assert tl.speech[within(tl, ch)].mean() > 0.95, f"channel {ch}: its own speaker was not scored"
        assert not tl.speech[within(tl, 1 - ch)].any(), f"channel {ch}: the other side's speech was scored"
    anger, sad = scorer.labels.index("anger"), scorer.labels.index("sadness")
    tl = runs[0]
    scored = tl.speech
    on_anger = np.array([any(s < b and a < e for c, lab, s, e in turns if c == 0 and lab == "anger")
                         for a, b in zip(tl.start, tl.end)])
    auc = roc_auc_score(on_anger[scored], tl.probabilities[scored, anger])
    peak = np.nanargmax(tl.probabilities[:, anger])
    p_sad_1 = np.nanmean(runs[1].probabilities[runs[1].speech, sad])
    p_sad_0 = np.nanmean(tl.probabilities[scored, sad])
    print(f"channel 0: {scored.sum()}/{len(scored)} windows scored, anger window AUC {auc:.3f}; "
          f"mean p(sadness) on scored windows: channel 0 {p_sad_0:.3f}, channel 1 {p_sad_1:.3f}")
    assert on_anger[peak] and auc > 0.8
    assert p_sad_1 > 0.5 and p_sad_1 > p_sad_0 + 0.3
    rows0 = list(csv.DictReader(open(tmp_path / "c0.csv")))
    assert [r["speech"] for r in rows0] == [str(int(s)) for s in tl.speech]


def test_telephone_8k_against_16k(emodb, whisper_tiny, tmp_path):
    """EmoDB downsampled to 8 kHz (telephone band), read back through probekit's decoder (soxr up to 16 kHz):
    leave-one-speaker-out UAR per hidden state next to the 16 kHz cache's, on the same 4 speakers."""
    import soundfile as sf
    import soxr
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import LeaveOneGroupOut, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from probekit.extract.audio import resampled_length
    from probekit.extract.encoders import EncoderSpec, load_encoder

    cache, _, rows = emodb
    c = EmbeddingCache(cache)
    enc = load_encoder(EncoderSpec(str(whisper_tiny), whisper_mode="fast", device="cpu"))
    waves = []
    for r in rows:
        wave, rate = sf.read(r["file"], dtype="float32")
        sf.write(tmp_path / "tel.wav", soxr.resample(wave, rate, 8000), 8000, subtype="PCM_16")
        back = load_segment(tmp_path / "tel.wav", sample_rate=16000)
        assert len(back) == resampled_length(resampled_length(len(wave), 16000, 8000), 8000, 16000)
        waves.append(back)
    tel = np.concatenate([enc.encode(waves[i:i + 16]) for i in range(0, len(waves), 16)])
    wide = np.stack([c.read_layer(k) for k in range(tel.shape[1])], axis=1)
    y = np.array([r["label"] for r in rows])
    groups = np.array([r["speaker"] for r in rows])

    def uar(x):
        probe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
        return balanced_accuracy_score(y, cross_val_predict(probe, x, y, groups=groups, cv=LeaveOneGroupOut()))

    scores = {k: (uar(wide[:, k]), uar(tel[:, k])) for k in range(tel.shape[1])}
    best = max(scores, key=lambda k: scores[k][0])
    for k, (w, t) in scores.items():
        print(f"hidden state {k}: UAR 16 kHz {w:.3f}, 8 kHz {t:.3f}{'  <- best at 16 kHz' if k == best else ''}")
    cos = np.sum(tel[:, best] * wide[:, best], 1) / np.linalg.norm(tel[:, best], axis=1) / np.linalg.norm(wide[:, best], axis=1)
    print(f"best layer {best}: 8 kHz vectors vs 16 kHz, median cosine {np.median(cos):.4f}")
    # The band limit changes the vectors, yet the emotion stays far above chance (1/7) at the best layer.
    assert np.median(cos) < 0.9999
    assert scores[best][1] > 0.45

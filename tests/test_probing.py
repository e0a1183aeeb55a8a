import json

import numpy as np
import pytest

from probekit.probe.probes import LogRegProbe
from probekit.probe.evaluate import EvalProtocol, Prepared, evaluate_layer
from probekit.probe.params import parse_param, resolve_params
from probekit.probe.probing import ProbeConfig, parse_layers, run_probe
from probekit.probe.tasks import Targets
from probekit.probe.splits import make_folds
from probekit.probe.tasks import ProbeInputError, TaskSpec

from _synth import synth_cache

FAST = (("mlp.hidden", 16), ("mlp.max_iter", 80), ("lgbm.n_estimators", 25))
TASKS = {
    "binary": TaskSpec("binary", "labels", positive="negative"),
    "multiclass": TaskSpec("multiclass", "label"),
    "multilabel": TaskSpec("multilabel", "labels"),
}


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return str(synth_cache(tmp_path_factory.mktemp("c") / "synth.h5", signal_layer=1, n_layers=3, n_speakers=6, per_speaker=9))


@pytest.mark.parametrize("kind", list(TASKS))
def test_known_answer_layer_is_best_for_every_probe(cache, kind):
    cfg = ProbeConfig(caches=(cache,), task=TASKS[kind], probes=("logreg", "mlp", "lgbm"), params=FAST, folds=3, bootstrap=50)
    res = run_probe(cfg)
    assert {(b["probe"], b["layer"]) for b in res.best} == {("logreg", 1), ("mlp", 1), ("lgbm", 1)}
    assert len(res.rows) == 3 * 3


def test_signal_in_another_layer_moves_the_best(tmp_path):
    path = synth_cache(tmp_path / "c.h5", signal_layer=0, n_layers=3, n_speakers=5)
    res = run_probe(ProbeConfig(caches=(str(path),), task=TASKS["multiclass"], cv="loso", bootstrap=0))
    assert res.best[0]["layer"] == 0
    assert res.rows[0]["n_folds"] == 5


class SpyProbe(LogRegProbe):
    """Records the row ids (last feature) it is fitted on and scores."""

    seen: list[tuple[str, set]] = []

    def fit(self, X, y):
        SpyProbe.seen.append(("fit", set(X[:, -1].astype(int))))
        return super().fit(X[:, :-1], y)

    def predict_proba(self, X):
        SpyProbe.seen.append(("score", set(X[:, -1].astype(int))))
        return super().predict_proba(X[:, :-1])


@pytest.mark.parametrize("kind", ["binary", "multilabel"])
def test_threshold_tuning_never_touches_the_test_fold(kind):
    rng = np.random.default_rng(0)
    n = 60
    groups = np.repeat([f"s{i}" for i in range(6)], 10)
    X = np.column_stack([rng.normal(size=(n, 3)), np.arange(n)])
    y = (rng.random(n) < 0.5).astype(int) if kind == "binary" else (rng.random((n, 2)) < 0.5).astype(int)
    X[:, 0] += 2 * (y if y.ndim == 1 else y[:, 0])
    for train, test in make_folds("speaker-kfold", groups, y, n_folds=3):
        SpyProbe.seen.clear()
        classes = ("no", "yes") if kind == "binary" else ("a", "b")
        prepared = Prepared(cache=None, encoder="spy", rows=np.arange(n), ids=np.arange(n).astype(str), groups=groups,
                            targets=Targets(y, classes, kind, np.ones(n, bool)), folds=[(train, test)],
                            protocol=EvalProtocol(), labels_from={"source": "test"})
        thr = evaluate_layer(prepared, X, SpyProbe(), tune=True).thresholds[0]
        assert thr is not None and len(thr) == (1 if kind == "binary" else 2)
        test_rows = set(test.tolist())
        calls = SpyProbe.seen
        # First the outer fit and its test scoring, then inner fits: only the final scoring may see test rows.
        assert calls[0] == ("fit", set(train.tolist()))
        assert calls[1] == ("score", test_rows)
        assert len(calls) > 2
        for what, rows in calls[2:]:
            assert not rows & test_rows, what


def test_thresholds_change_predictions_and_are_recorded(cache):
    plain = run_probe(ProbeConfig(caches=(cache,), task=TASKS["multilabel"], layers=(0,), folds=3, bootstrap=0))
    tuned = run_probe(ProbeConfig(caches=(cache,), task=TASKS["multilabel"], layers=(0,), folds=3, bootstrap=0, tune_thresholds=True))
    assert "thresholds" in tuned.rows[0] and "thresholds" not in plain.rows[0]
    assert len(tuned.rows[0]["thresholds"]) == 3
    assert tuned.rows[0]["metrics"]["weighted_f1"]["value"] != plain.rows[0]["metrics"]["weighted_f1"]["value"]


def test_same_seed_same_results_json(cache, tmp_path):
    docs = []
    for name in ("a", "b"):
        cfg = ProbeConfig(caches=(cache,), task=TASKS["binary"], probes=("logreg", "lgbm"), params=FAST[2:], folds=3, bootstrap=100, out=str(tmp_path / name), tune_thresholds=True)
        run_probe(cfg)
        doc = json.loads((tmp_path / name / "results.json").read_text())
        # Wall-clock fields are the only ones allowed to differ between identical runs.
        doc.pop("created")
        doc.pop("timing")
        for row in doc["rows"]:
            row.pop("seconds")
        docs.append(doc)
    assert docs[0] == docs[1]
    other = run_probe(ProbeConfig(caches=(cache,), task=TASKS["binary"], probes=("logreg",), folds=3, bootstrap=100, seed=7))
    assert other.document["rows"][0]["metrics"] != docs[0]["rows"][0]["metrics"]


def test_jobs_change_no_number(cache, tmp_path):
    # Units go to workers longest first, and each worker computes its rows' metrics and bootstrap: the
    # order of the work must not reach the document.
    docs = []
    for jobs in (1, 2):
        cfg = ProbeConfig(caches=(cache,), task=TASKS["multilabel"], probes=("logreg", "mlp", "lgbm"), params=FAST, folds=3,
                          bootstrap=200, jobs=jobs, out=str(tmp_path / f"jobs{jobs}"))
        run_probe(cfg)
        doc = json.loads((tmp_path / f"jobs{jobs}" / "results.json").read_text())
        for key in ("created", "timing", "config"):
            doc.pop(key)
        for row in doc["rows"]:
            row.pop("seconds")
        docs.append(doc)
    assert [(r["probe"], r["layer"]) for r in docs[0]["rows"]] == [(p, la) for p in ("logreg", "mlp", "lgbm") for la in range(3)]
    assert docs[0] == docs[1]


def test_manifest_relabels_and_reports_missing_rows(cache, tmp_path):
    from probekit.cache import EmbeddingCache

    c = EmbeddingCache(cache)
    lines = ["id,path,speaker,mood"]
    for i, (sid, spk, lab) in enumerate(zip(c.ids, c.metadata["speaker"], c.metadata["label"])):
        if i < 5:
            continue  # left out: must be reported
        lines.append(f"{sid},x.wav,{spk},{'calm' if lab == 'happiness' else 'upset'}")
    man = tmp_path / "m.csv"
    man.write_text("\n".join(lines) + "\n")
    res = run_probe(ProbeConfig(caches=(cache,), task=TaskSpec("binary", "mood", positive="upset"), manifest=str(man), layers=(1,), folds=3, bootstrap=0))
    info = res.document["caches"][0]
    assert info["missing_from_manifest"]["count"] == 5
    assert info["missing_from_manifest"]["ids"] == list(c.ids[:5])
    assert info["n_rows_used"] == len(c) - 5
    assert res.rows[0]["metrics"]["f1"]["value"] > 0.8


def test_clear_errors(cache, tmp_path):
    with pytest.raises(ProbeInputError, match="only 6 speaker"):
        run_probe(ProbeConfig(caches=(cache,), task=TASKS["multiclass"], folds=10))
    with pytest.raises(ProbeInputError, match="'mood' not found"):
        run_probe(ProbeConfig(caches=(cache,), task=TaskSpec("multiclass", "mood")))
    with pytest.raises(ProbeInputError, match="unknown label"):
        run_probe(ProbeConfig(caches=(cache,), task=TaskSpec("binary", "labels", positive="joy")))
    with pytest.raises(ProbeInputError, match="out of range"):
        run_probe(ProbeConfig(caches=(cache,), task=TASKS["multiclass"], layers=(9,)))
    with pytest.raises(ProbeInputError, match="--class-weight must be balanced"):
        run_probe(ProbeConfig(caches=(cache,), task=TASKS["multiclass"], class_weight="balance"))
    # One speaker holds every positive: the fold that tests it trains on a single class.
    lone = synth_cache(tmp_path / "lone.h5", n_speakers=4, per_speaker=6)
    from probekit.cache import EmbeddingCache, write_cache

    c = EmbeddingCache(lone)
    meta = dict(c.metadata)
    meta["flag"] = np.where(c.metadata["speaker"] == "spk0", "yes", "no")
    emb = np.stack([c.read_layer(i) for i in range(c.num_layers)], 1)
    write_cache(tmp_path / "lone2.h5", list(c.ids), emb, {k: list(v) for k, v in meta.items()}, dtype="float32")
    with pytest.raises(ProbeInputError, match="single class 'not yes'"):
        run_probe(ProbeConfig(caches=(str(tmp_path / "lone2.h5"),), task=TaskSpec("binary", "flag", positive="yes"), cv="loso"))


def test_split_protocol(tmp_path):
    path = synth_cache(tmp_path / "s.h5", n_speakers=6, split=lambda spk: np.where(np.isin(spk, ["spk0", "spk1"]), "test", "train"))
    res = run_probe(ProbeConfig(caches=(str(path),), task=TASKS["multiclass"], cv="split", layers=(2,), bootstrap=0))
    assert res.rows[0]["n_folds"] == 1
    assert res.rows[0]["metrics"]["uar"]["std"] == 0.0


def test_parsers_and_param_routing():
    assert parse_layers("0-2,5") == (0, 1, 2, 5)
    assert parse_layers(None) is None
    with pytest.raises(ProbeInputError):
        parse_layers("a-b")
    assert parse_param("C=0.1") == ("C", 0.1)
    assert parse_param("mlp.hidden=256") == ("mlp.hidden", 256)
    assert parse_param("solver=adam") == ("solver", "adam")
    p = resolve_params(("logreg", "mlp"), (("C", 0.5), ("mlp.hidden", 8), ("alpha", 0.1)), 0, "balanced")
    assert p["logreg"]["C"] == 0.5 and "C" not in p["mlp"]
    assert p["mlp"]["hidden"] == 8 and p["mlp"]["alpha"] == 0.1
    assert p["logreg"]["class_weight"] == "balanced"
    with pytest.raises(ProbeInputError, match="no selected probe takes 'depth'"):
        resolve_params(("logreg",), (("depth", 3),), 0, None)

"""Export round trip and the safety of loading: tampering is rejected and nothing from the folder runs."""

from __future__ import annotations

import hashlib
import io
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone

from probekit.cache import EmbeddingCache
from probekit.deploy.export import ExportError, export_probe, load_export, predict_proba_columns
from probekit.probe.evaluate import EvalProtocol, prepare
from probekit.probe.probes import make_probe
from probekit.probe.tasks import TaskSpec


def _targets(cache, task, target, positive=None):
    """The labels the core builds (every row of the synthetic cache is labelled)."""
    return prepare(EmbeddingCache(cache), TaskSpec(task, target, positive), EvalProtocol()).targets

from _predict_helpers import build_cache

CASES = [
    ("binary", "labels", "tonal", "logreg"),
    ("multiclass", "label", None, "logreg"),
    ("multiclass", "label", None, "mlp"),
    ("binary", "labels", "tonal", "lgbm"),
    ("multilabel", "labels", None, "logreg"),
    ("multilabel", "labels", None, "lgbm"),
    ("multilabel", "labels", None, "mlp"),
]


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    path, _ = build_cache(tmp_path_factory.mktemp("c") / "synthetic.h5")
    return path


@pytest.mark.parametrize("task,target,positive,probe", CASES)
def test_export_reproduces_in_memory_probe(cache, tmp_path, task, target, positive, probe):
    out = export_probe(cache, 1, tmp_path / "m", task=task, target=target, positive=positive, probe=probe, evaluate=False)
    config, head = load_export(out)
    c = EmbeddingCache(cache)
    x = c.read_layer(1)
    targets = _targets(cache, task, target, positive)
    est = clone(make_probe(probe, seed=0)).fit(x, targets.y)
    np.testing.assert_allclose(head.predict_proba(x), predict_proba_columns(est, x, task), atol=1e-6, rtol=0)
    names = [targets.classes[1]] if task == "binary" else list(targets.classes)
    assert config["labels"] == names and config["layer"] == 1
    assert config["cache"]["fingerprint"] == c.fingerprint
    assert {k: config["task"][k] for k in ("kind", "target", "positive")} == {"kind": task, "target": target, "positive": positive}


def test_export_records_encoder_cv_metrics_and_manifest(cache, tmp_path):
    out = export_probe(cache, 1, tmp_path / "m", task="multiclass", target="label", probe="logreg")
    config = json.loads((out / "config.json").read_text())
    assert config["encoder"]["model"] == "spectral-test" and config["encoder"]["dim"] == 8
    # Only hidden state 1 carries the tones: CV on it must be far above the 1/3 chance level.
    assert config["metrics"]["cross_validated"]["metrics"]["uar"]["value"] > 0.9
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["format_version"] == 1
    assert set(manifest["files"]) == {p.name for p in out.iterdir()} - {"manifest.json"}
    for name, entry in manifest["files"].items():
        assert entry["sha256"] == hashlib.sha256((out / name).read_bytes()).hexdigest()
    noise = export_probe(cache, 0, tmp_path / "m0", task="multiclass", target="label", probe="logreg")
    assert json.loads((noise / "config.json").read_text())["metrics"]["cross_validated"]["metrics"]["uar"]["value"] < 0.6


def test_export_refuses_a_non_empty_folder(cache, tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "old.txt").write_text("x")
    with pytest.raises(ExportError, match="not empty"):
        export_probe(cache, 1, tmp_path / "m", task="multiclass", target="label", evaluate=False)


@pytest.fixture()
def exported(cache, tmp_path) -> Path:
    return export_probe(cache, 1, tmp_path / "m", task="binary", target="labels", positive="tonal", probe="lgbm", evaluate=False)


def _rehash(folder: Path) -> None:
    """Rewrite the manifest to match the folder: an attacker who controls the whole folder."""
    manifest = json.loads((folder / "manifest.json").read_text())
    files = {}
    for p in folder.iterdir():
        if p.name != "manifest.json":
            files[p.name] = {"sha256": hashlib.sha256(p.read_bytes()).hexdigest(), "bytes": p.stat().st_size}
    manifest["files"] = files
    (folder / "manifest.json").write_text(json.dumps(manifest))


def test_flipped_byte_is_rejected_naming_the_file(exported):
    path = exported / "weights.safetensors"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(ExportError, match="weights.safetensors.*sha256"):
        load_export(exported)


@pytest.mark.parametrize("name", ["config.json", "weights.safetensors", "lgbm_0.txt"])
def test_truncated_file_is_rejected_naming_it(exported, name):
    path = exported / name
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ExportError, match=f"{name}.*truncated"):
        load_export(exported)


def test_missing_and_extra_files_are_rejected(exported):
    (exported / "extra.pkl").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ExportError, match="extra.pkl.*not listed"):
        load_export(exported)
    (exported / "extra.pkl").unlink()
    (exported / "lgbm_0.txt").unlink()
    with pytest.raises(ExportError, match="lgbm_0.txt.*missing"):
        load_export(exported)


class _Payload:
    """Unpickling this touches the sentinel file: proof that code ran."""

    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return (Path.touch, (self.sentinel,))


def test_crafted_pickles_never_run(exported, tmp_path):
    sentinel = tmp_path / "code_ran"
    payload = pickle.dumps(_Payload(sentinel))
    # The payload is live: unpickling it does run code (on a second sentinel, to keep the first clean).
    control = tmp_path / "control"
    pickle.loads(pickle.dumps(_Payload(control)))
    assert control.exists()

    # 1) Weights replaced by the pickle, manifest rewritten to match.
    (exported / "weights.safetensors").write_bytes(payload)
    _rehash(exported)
    with pytest.raises(ExportError, match="weights.safetensors.*not a valid safetensors"):
        load_export(exported)
    # 2) Weights replaced by an npz holding a pickled object array.
    buf = io.BytesIO()
    np.savez(buf, **{"scaler.mean": np.array([_Payload(sentinel)], dtype=object)})
    (exported / "weights.safetensors").write_bytes(buf.getvalue())
    _rehash(exported)
    with pytest.raises(ExportError, match="weights.safetensors"):
        load_export(exported)
    # 3) The booster replaced by the pickle.
    (exported / "lgbm_0.txt").write_bytes(payload)
    _rehash(exported)
    with pytest.raises(ExportError):
        load_export(exported)
    assert not sentinel.exists()


def test_config_shape_lies_are_rejected(cache, tmp_path):
    out = export_probe(cache, 1, tmp_path / "m", task="multiclass", target="label", probe="logreg", evaluate=False)
    cfg = json.loads((out / "config.json").read_text())
    cfg["labels"] = cfg["labels"][:2]
    (out / "config.json").write_text(json.dumps(cfg))
    _rehash(out)
    with pytest.raises(ExportError, match="labels"):
        load_export(out)


def test_a_multilabel_probe_with_one_linear_head_per_label_loads_back(cache, tmp_path):
    # Each label's head reads the standardised embedding: its width must not carry over from the previous head.
    out = export_probe(cache, 1, tmp_path / "m", task="multilabel", target="labels", probe="logreg", exact=True,
                       evaluate=False)
    _, head = load_export(out)
    x = EmbeddingCache(cache).read_layer(1)
    y = _targets(cache, "multilabel", "labels").y
    est = clone(make_probe("logreg", exact=True)).fit(x, y)
    assert head.output == "sigmoid" and len(head.parts) == y.shape[1] > 1
    np.testing.assert_allclose(head.predict_proba(x), predict_proba_columns(est, x, "multilabel"), atol=1e-6)


def test_a_label_constant_in_training_exports_as_its_constant(cache, tmp_path):
    from probekit.deploy.export import head_from_estimator

    c = EmbeddingCache(cache)
    x = c.read_layer(1)
    y = _targets(cache, "multilabel", "labels").y
    y = np.concatenate([y, np.ones((len(y), 1), dtype=y.dtype)], axis=1)  # a label every row carries
    est = clone(make_probe("logreg", exact=True)).fit(x, y)
    head = head_from_estimator(est, "multilabel", y.shape[1], x.shape[1])
    assert head.parts[-1].constant == 1.0
    np.testing.assert_allclose(head.predict_proba(x), predict_proba_columns(est, x, "multilabel"), atol=1e-6)
    # The fast logreg solves all labels as one linear head; a constant label gets an infinite intercept.
    fast = clone(make_probe("logreg")).fit(x, y)
    head = head_from_estimator(fast, "multilabel", y.shape[1], x.shape[1])
    np.testing.assert_allclose(head.predict_proba(x)[:, -1], 1.0)
    np.testing.assert_allclose(head.predict_proba(x), predict_proba_columns(fast, x, "multilabel"), atol=1e-6)


def test_metrics_params_and_thresholds_come_from_results_json(cache, tmp_path):
    from probekit.probe.probing import ProbeConfig, run_probe

    run_probe(ProbeConfig(caches=(str(cache),), task=TaskSpec("binary", "labels", "tonal"), params=(("C", 0.5),), folds=3,
                          tune_thresholds=True, bootstrap=0, out=str(tmp_path / "probe")))
    doc = json.loads((tmp_path / "probe" / "results.json").read_text())
    row = next(r for r in doc["rows"] if r["layer"] == 1)
    out = export_probe(cache, 1, tmp_path / "m", results=tmp_path / "probe" / "results.json")
    config, _ = load_export(out)
    assert config["probe"]["params"]["C"] == 0.5 and config["protocol"]["folds"] == 3
    assert config["metrics"]["selected_by"]["row"]["metrics"]["f1"] == row["metrics"]["f1"]
    # Thresholds were tuned in probe, so the export tunes them the same way, on inner folds of all its rows.
    from probekit.probe.calibration import fit_inner

    c = EmbeddingCache(cache)
    prepared = prepare(c, TaskSpec("binary", "labels", "tonal"), EvalProtocol(folds=3))
    _cal, thr = fit_inner(make_probe("logreg", C=0.5, seed=0), c.read_layer(1), prepared.targets.y, prepared.groups, "binary", tune=True)
    assert config["thresholds"] == pytest.approx(thr.tolist()) and config["probe"]["tune_thresholds"] is True
    # The same settings in the same core: export's cross-validated numbers equal probe's for that layer.
    assert config["metrics"]["cross_validated"]["metrics"]["f1"]["value"] == pytest.approx(row["metrics"]["f1"]["value"], abs=1e-12)
    with pytest.raises(ExportError, match="no row"):
        export_probe(cache, 7, tmp_path / "m2", results=tmp_path / "probe" / "results.json")


def test_the_layer_weighted_probe_is_refused_by_name(cache, tmp_path):
    with pytest.raises(ExportError, match="layer-weights.*every hidden state"):
        export_probe(cache, 1, tmp_path / "m", task="multiclass", target="label", probe="layer-weights", evaluate=False)
    assert not (tmp_path / "m").exists()


@pytest.fixture(scope="module")
def wide_cache(tmp_path_factory):
    """2,600 rows, so the fast LightGBM path (not its small-data fallback) is what gets exported."""
    from probekit.cache import write_cache

    rng = np.random.default_rng(0)
    n, d = 2600, 24
    y = rng.integers(0, 3, n)
    X = rng.normal(size=(n, 3, d)).astype(np.float32)
    X[:, 1, :3] += 1.5 * np.eye(3)[y]
    X[:, 1, 20] += 0.8 * (y == 2)  # a quiet raw column the trees can use
    labels = np.array(["a", "b", "c"])[y]
    sets = [lab + (";loud" if v > 0 else "") for lab, v in zip(labels, X[:, 1, 5])]
    path = tmp_path_factory.mktemp("wide") / "c.h5"
    write_cache(path, [f"u{i}" for i in range(n)], X, {"speaker": [f"s{i % 20}" for i in range(n)], "label": list(labels),
                "labels": sets}, {"encoder": "x", "revision": "", "commit": "", "pooling": "mean", "sample_rate": 16000,
                "whisper_mode": ""}, dtype="float32")
    return path


@pytest.mark.parametrize("task, target, positive", [("binary", "label", "c"), ("multiclass", "label", None), ("multilabel", "labels", None)])
def test_the_fast_lgbm_probe_exports_with_its_feature_map(wide_cache, tmp_path, task, target, positive):
    """Raw columns drawn by seed plus a per-part PCA, in float32: the export scores exactly as the fitted probe."""
    params = {"raw_features": 8, "pca_dims": 4, "n_estimators": 60}
    out = export_probe(wide_cache, 1, tmp_path / "m", task=task, target=target, positive=positive, probe="lgbm",
                       params=params, evaluate=False)
    config, head = load_export(out)
    assert head.kind == "lgbm" and head.features is not None
    assert (head.features.n_raw, head.features.pca_dims) == (8, 4) == (config["head"]["features"]["raw_columns"], config["head"]["features"]["pca_dims"])
    c = EmbeddingCache(wide_cache)
    x = c.read_layer(1)
    prepared = prepare(c, TaskSpec(task, target, positive), EvalProtocol())
    est = clone(make_probe("lgbm", seed=0, **params)).fit(x, prepared.targets.y, prepared.groups)
    assert est.report_["solver"] == "lightgbm fast path"
    fresh = np.random.default_rng(1).normal(size=(50, x.shape[1])).astype(np.float32)
    for rows in (x[:300], fresh):
        np.testing.assert_allclose(head.predict_proba(rows), predict_proba_columns(est, rows, task), atol=1e-12, rtol=0)
    # A tampered column list is refused by name, not silently mis-scored.
    from safetensors.numpy import load_file

    from probekit.deploy.export import _read_features

    t = load_file(str(out / "weights.safetensors"))
    t["features.columns"] = t["features.columns"][::-1].copy()
    with pytest.raises(ExportError, match="features.columns"):
        _read_features(config["head"]["features"], t, x.shape[1], "lgbm", out)


def test_a_wide_float32_probe_exports(tmp_path):
    """The default logreg scores in float32. On embeddings like real ones (a large common offset, small spread,
    hundreds of dims) its probabilities sit a few 1e-6 from the float64 head's; export accepts that and no more.
    A 1e-6 bound once refused every such probe, EmoDB's included."""
    from probekit.cache import write_cache

    rng = np.random.default_rng(0)
    n, d = 535, 384
    y = rng.integers(0, 2, n)
    X = (rng.normal(size=(n, d)) * rng.uniform(0.01, 0.3, d) + rng.normal(size=d)).astype(np.float32)
    X[:, :8] += 0.05 * y[:, None]
    path = tmp_path / "c.h5"
    write_cache(path, [f"u{i}" for i in range(n)], np.stack([X, X], 1), {"speaker": [f"s{i % 10}" for i in range(n)],
                "label": ["neg" if v else "pos" for v in y]}, {"encoder": "x", "pooling": "mean", "sample_rate": 16000}, dtype="float32")
    out = export_probe(path, 1, tmp_path / "m", task="binary", target="label", positive="neg", probe="logreg", evaluate=False)
    _config, head = load_export(out)
    est = clone(make_probe("logreg")).fit(X, y)
    gap = np.abs(head.predict_proba(X[:64].astype(np.float64)) - predict_proba_columns(est, X[:64].astype(np.float64), "binary")).max()
    assert gap <= 1e-5  # on this machine about 2.7e-6: above the old 1e-6 bound, so export_probe above raised

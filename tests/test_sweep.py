"""Nested sweeps: known answers, no peeking at outer test folds, resume, widened grids, mixed inputs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import probekit.probe.sweep as sw
from probekit.cache import EmbeddingCache
from probekit.oof import load_oof
from probekit.probe.metrics import SCALAR_METRICS, compute_metrics
from probekit.results import load_results, validate_results
from probekit.probe.store import ResultStore, StoreError, params_key
from probekit.probe.evaluate import prepare
from probekit.probe.params import parse_grid
from probekit.probe.sweep import SweepError, SweepSpec, candidate_params, fold_rows, fold_table, run_sweep, sweep_document, write_outputs
from probekit.probe.tasks import ProbeInputError
from probekit.recipes.sweepfile import load_sweep_file

from _sweep_data import planted_cache

GRID = (("C", (0.01, 0.1, 1.0)),)
# Per task: the SweepSpec fields that pick its target in the planted cache.
TASKS = {
    "binary": {},
    "multiclass": {"target": "class3", "positive": None},
    "multilabel": {"target": "labels", "positive": None, "labels": ("e0", "e1", "e2")},
}


def _spec(**kw):
    base = dict(task="binary", target="binary", positive="neg", grid=GRID, outer_folds=3, inner_folds=2)
    base.update(kw)
    return SweepSpec(**base)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return planted_cache(tmp_path_factory.mktemp("c") / "a.h5", signal_layer=1, row_feature=True)


def _mean(row, metric):
    return row["metrics"][metric]["mean"]


@pytest.mark.parametrize("task", ["binary", "multilabel", "multiclass"])
def test_planted_layer_is_best_and_outputs_are_written(cache, tmp_path, task):
    res = run_sweep([cache], _spec(task=task, **TASKS[task]), tmp_path)
    h = res.headline
    best = max(res.rows, key=lambda r: _mean(r, h))
    assert best["layer"] == 1
    assert all(_mean(best, h) > _mean(r, h) + 0.05 for r in res.rows if r is not best)
    assert [(b["layer"], b["value"]) for b in res.best] == [(1, _mean(best, h))]
    paths = write_outputs(res, tmp_path)
    assert set(paths) == {"results.json", "results.csv", "sweep_layers.csv", "layer_curve.png", "oof/synthetic-0__logreg-fast.npz"}
    doc = load_results(paths["results.json"])
    assert doc["best"][0]["layer"] == 1 and doc["headline"] == {"metric": h, "aggregate": "mean"}
    assert len(paths["results.csv"].read_text().splitlines()) == 1 + len(res.rows)
    curve = paths["sweep_layers.csv"].read_text().splitlines()
    assert curve[0] == f"encoder,layer,probe,{h},{h}_std,best_params,inner_score" and len(curve) == 1 + len(res.rows)
    assert paths["layer_curve.png"].stat().st_size > 1000


def _outer_records(store_path, row):
    """The store records of ``row``'s outer cells at its selected parameters, in outer-fold order."""
    records = [json.loads(line) for line in Path(store_path).read_text().splitlines()]
    by_key = {(r["layer"], r["fold"], params_key(r["params"])): r for r in records}
    return [by_key[(row["layer"], f"o{k}", params_key(p))] for k, p in enumerate(row["fold_params"])]


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_sweep_results_json_is_a_probe_results_document(cache, tmp_path, task):
    """results.json validates and loads as probe's schema; every row carries the sweep columns, its
    metric stats come from the stored outer cells, and the pooled counts cover each row exactly once."""
    spec = _spec(task=task, **TASKS[task])
    res = run_sweep([cache], spec, tmp_path)
    write_outputs(res, tmp_path)
    doc = load_results(tmp_path / "results.json")
    validate_results(sweep_document(res))  # in memory too, NaN and all
    candidates = candidate_params(spec)
    c = EmbeddingCache(cache)
    targets = prepare(c, spec.task_spec(), spec.protocol()).targets
    y = targets.y  # of the used rows
    assert doc["task"]["kind"] == task and doc["task"]["classes"] == list(targets.classes)
    assert doc["caches"][0]["n_rows_used"] == len(y) and doc["caches"][0]["fingerprint"] == c.fingerprint
    assert doc["sweep"] == {"cells_computed": res.computed, "cells_reused": 0, "store": str(tmp_path / "results.jsonl"),
                            "candidates": candidates, "cv": "speaker-kfold", "outer_folds": 3, "inner_folds": 2}
    assert [r["layer"] for r in doc["rows"]] == [0, 1, 2]
    for row in doc["rows"]:
        assert row["n_candidates"] == len(candidates) and len(row["fold_params"]) == row["n_folds"] == 3
        assert all(p in candidates for p in row["fold_params"])
        assert row["fold_params"].count(row["best_params"]) == max(row["fold_params"].count(p) for p in row["fold_params"])
        assert 0 < row["inner_score"] <= 1
        outer = _outer_records(tmp_path / "results.jsonl", row)
        n_test = np.array([r["n_test"] for r in outer])
        assert n_test.sum() == len(y)  # the outer test folds partition the used rows
        assert set(row["metrics"]) == set(SCALAR_METRICS[task])
        for name, stats in row["metrics"].items():
            scores = np.array([r["scores"][name] for r in outer], dtype=float)
            assert stats["mean"] == pytest.approx(scores.mean(), abs=1e-12), name
            assert stats["std"] == pytest.approx(scores.std(), abs=1e-12), name  # ddof=0, as probe
            if stats["value"] is not None:  # the speaker bootstrap of the out-of-fold predictions
                assert stats["ci_low"] <= stats["ci_high"], name
        weighted = lambda name: float(np.dot([r["scores"][name] for r in outer], n_test) / n_test.sum())  # noqa: E731
        oof = load_oof(tmp_path / "oof" / "synthetic-0__logreg-fast.npz")
        i = oof.layer_index(row["layer"])
        pooled = compute_metrics(task, oof.y_true, oof.pred[i], oof.score(row["layer"]), oof.classes)
        for name, stats in row["metrics"].items():  # value: pooled over the out-of-fold file, as probe's
            assert stats["value"] == pytest.approx(pooled[name], abs=1e-6, nan_ok=True), name
        if task == "binary":
            assert row["metrics"]["accuracy"]["value"] == pytest.approx(weighted("accuracy"), abs=0.02)
            assert 0 < row["metrics"]["roc_auc"]["value"] <= 1 and 0 < row["metrics"]["pr_auc"]["value"] <= 1
            assert 0 <= row["metrics"]["f1"]["value"] <= 1
        if task == "multiclass":
            cm = np.array(row["confusion_matrix"])
            assert cm.shape == (3, 3)
            assert cm.sum(1).tolist() == np.bincount(y, minlength=3).tolist()  # rows = truth, classes in task order
            # logreg-fast's stored outer cells and its refit are two solves of one problem: a row or two
            # on the decision boundary of a noise layer may fall the other way.
            assert row["metrics"]["accuracy"]["value"] == pytest.approx(weighted("accuracy"), abs=0.02)
            assert row["metrics"]["uar"]["value"] == pytest.approx(np.mean(np.diag(cm) / cm.sum(1)), abs=1e-12)
        if task == "multilabel":
            assert list(row["per_label"]) == list(targets.classes)
            assert [row["per_label"][lab]["support"] for lab in targets.classes] == y.sum(0).tolist()
            for name in ("hamming_loss", "subset_accuracy", "lrap"):
                assert row["metrics"][name]["value"] == pytest.approx(weighted(name), abs=0.02), name


def test_store_without_counts_still_loads(cache, tmp_path):
    """A results.jsonl written before outer cells kept their confusion counts is reused as is: the
    document still validates; the pooled values and the confusion matrix come from the out-of-fold
    refit, so they equal a fresh run's."""
    spec = _spec(task="multiclass", **TASKS["multiclass"])
    fresh = run_sweep([cache], spec, tmp_path)
    store = tmp_path / "results.jsonl"
    lines = [json.loads(line) for line in store.read_text().splitlines()]
    store.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "confusion"}) + "\n" for r in lines))
    old = run_sweep([cache], spec, tmp_path)
    assert old.computed == 0
    write_outputs(old, tmp_path)
    doc = load_results(tmp_path / "results.json")
    for a, b in zip(fresh.rows, doc["rows"]):
        assert b["confusion_matrix"] == a["confusion_matrix"] and a["confusion_matrix"] is not None
        assert b["metrics"]["uar"]["value"] == pytest.approx(a["metrics"]["uar"]["value"], abs=1e-12)
        assert b["metrics"]["uar"]["mean"] == pytest.approx(a["metrics"]["uar"]["mean"], abs=1e-12)


def test_outer_test_fold_is_never_touched_while_choosing(cache, tmp_path, monkeypatch):
    """Instrument every fit: selection fits and scores only rows of the outer training part; each outer
    cell (the refit that also gives the out-of-fold file) trains on outer fold k's training rows and predicts its test rows."""
    calls = []

    class Recorder:
        def __init__(self, **params):
            self.params = params

        def get_params(self, deep=True):
            return dict(self.params)

        def set_params(self, **p):
            self.params.update(p)
            return self

        def fit(self, X, y):
            calls.append(("fit", frozenset(X[:, -1].astype(int).tolist())))
            self.mean_ = X[:, :-1].mean(0)
            self.classes_ = np.unique(y)
            return self

        def predict_proba(self, X):
            calls.append(("predict", frozenset(X[:, -1].astype(int).tolist())))
            p = (X[:, 0] > self.mean_[0]).astype(float)
            return np.stack([1 - p, p], 1)

    monkeypatch.setattr(sw, "make_probe", lambda probe, **params: Recorder(**params))
    spec = _spec(probe="logreg", layers=(1,))
    res = run_sweep([cache], spec, tmp_path)
    c = EmbeddingCache(cache)
    pr = prepare(c, spec.task_spec(), spec.protocol())
    table = fold_table(spec, pr.groups, pr.targets.y, pr.folds)
    outer_tests = [set(fold_rows(table, f"o{k}")[1].tolist()) for k in range(table.shape[0])]
    pairs = list(zip(calls[::2], calls[1::2]))
    n_inner = len(candidate_params(spec)) * sum(int(table[k].max()) + 1 for k in range(table.shape[0]))
    K = table.shape[0]
    # One fit per outer fold: the out-of-fold refit is the outer cell's fit (no second one).
    assert len(pairs) == n_inner + K and res.computed == n_inner + K
    per_outer = [len(candidate_params(spec)) * (int(table[k].max()) + 1) for k in range(table.shape[0])]
    owner = [k for k, m in enumerate(per_outer) for _ in range(m)]  # cells run outer fold by outer fold
    for i, ((_, fit_rows), (_, pred_rows)) in enumerate(pairs):
        if i < n_inner:  # the selection phase comes first, all of it
            k = owner[i]
            assert fit_rows and pred_rows
            assert not (fit_rows | pred_rows) & outer_tests[k], f"selection for outer fold {k} touched its test rows"
        else:  # the outer cells, fitted once by the out-of-fold refit
            k = i - n_inner
            assert pred_rows == outer_tests[k]
            assert not fit_rows & outer_tests[k]


def test_fast_path_training_masks_never_include_their_outer_test_rows(cache, tmp_path, monkeypatch):
    seen = []
    real = sw.fit_batched

    def spy(X, Y, masks, gf, gc, **kw):
        seen.append(np.asarray(masks).copy())
        return real(X, Y, masks, gf, gc, **kw)

    monkeypatch.setattr(sw, "fit_batched", spy)
    spec = _spec(layers=(0,))
    run_sweep([cache], spec, tmp_path)
    c = EmbeddingCache(cache)
    pr = prepare(c, spec.task_spec(), spec.protocol())
    table = fold_table(spec, pr.groups, pr.targets.y, pr.folds)
    K = table.shape[0]
    # One batched solve per layer: its mask columns are the sorted fold names, inner and outer.
    folds = sorted([f"o{k}" for k in range(K)] + [f"o{k}/i{j}" for k in range(K) for j in range(int(table[k].max()) + 1)])
    assert len(seen) == 1 and seen[0].shape[1] == len(folds)
    for col, fold in enumerate(folds):
        k = int(fold.split("/")[0][1:])
        assert np.array_equal(np.flatnonzero(seen[0][:, col]), fold_rows(table, fold)[0]), fold
        assert not seen[0][table[k] == sw.OUTER_TEST, col].any(), f"{fold} trains on outer fold {k}'s test rows"


def test_fast_path_split_by_outer_fold_trains_each_on_its_own_rows(cache, tmp_path, monkeypatch):
    """With enough problems per outer fold, each outer fold's cells are solved on its training rows
    alone; the choices match the single-solve path."""
    spec = _spec(task="multilabel", **TASKS["multilabel"])
    single = run_sweep([cache], spec, tmp_path / "single")
    seen = []
    real = sw.fit_batched

    def spy(X, Y, masks, gf, gc, **kw):
        seen.append((X.shape[0], sorted(np.asarray(masks).sum(0).tolist())))
        return real(X, Y, masks, gf, gc, **kw)

    monkeypatch.setattr(sw, "SPLIT_MIN_WIDTH", 1)
    monkeypatch.setattr(sw, "fit_batched", spy)
    split = run_sweep([cache], spec, tmp_path / "split")
    c = EmbeddingCache(cache)
    pr = prepare(c, spec.task_spec(), spec.protocol())
    table = fold_table(spec, pr.groups, pr.targets.y, pr.folds)
    K = table.shape[0]
    want = []
    for k in range(K):  # rows = outer fold k's training part; columns = its outer and inner folds
        folds = [f"o{k}"] + [f"o{k}/i{j}" for j in range(int(table[k].max()) + 1)]
        want.append((int((table[k] >= 0).sum()), sorted(len(fold_rows(table, f)[0]) for f in folds)))
    assert sorted(seen) == sorted(want * 3)  # 3 layers
    # Same optimum, same rows scored: every metric of every layer agrees with the single solve.
    for a, b in zip(split.rows, single.rows):
        assert a["fold_params"] == b["fold_params"]
        for name, stats in a["metrics"].items():
            assert stats["mean"] == pytest.approx(b["metrics"][name]["mean"], abs=1e-6, nan_ok=True), name
        assert a["per_label"] == b["per_label"]


def test_selection_reads_inner_cells_only(cache, tmp_path):
    """logreg-fast stores every candidate's outer cells too; poisoning them (the worst choice made
    best on the outer test folds) must not move the selection."""
    spec = _spec()
    first = run_sweep([cache], spec, tmp_path)
    chosen = {(r["layer"], k): params_key(p) for r in first.rows for k, p in enumerate(r["fold_params"])}
    path = tmp_path / "results.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    outer = [r for r in records if "/" not in r["fold"]]
    assert len(outer) == len(first.rows) * 3 * len(candidate_params(spec))  # every candidate, every outer fold
    for r in outer:
        r["scores"]["f1"] = 0.0 if params_key(r["params"]) == chosen[(r["layer"], int(r["fold"][1:]))] else 1.0
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    again = run_sweep([cache], spec, tmp_path)
    assert again.computed == 0
    assert [r["fold_params"] for r in again.rows] == [r["fold_params"] for r in first.rows]
    assert all(_mean(r, "f1") == 0.0 for r in again.rows)  # the poisoned outer scores are what it reports


def test_interrupted_sweep_resumes_computing_only_missing_cells(cache, tmp_path, monkeypatch):
    spec = _spec()
    full = run_sweep([cache], spec, tmp_path / "full")
    real_append = ResultStore.append
    written = {"n": 0}

    def failing(self, records):
        if written["n"] >= 17:
            raise RuntimeError("injected crash")
        written["n"] += 1
        return real_append(self, records)

    monkeypatch.setattr(ResultStore, "append", failing)
    with pytest.raises(RuntimeError, match="injected crash"):
        run_sweep([cache], spec, tmp_path / "cut")
    monkeypatch.setattr(ResultStore, "append", real_append)
    assert len(ResultStore(tmp_path / "cut" / "results.jsonl")) == 17
    resumed = run_sweep([cache], spec, tmp_path / "cut")
    assert resumed.computed == full.computed - 17
    assert resumed.reused == 17
    assert resumed.rows == full.rows
    again = run_sweep([cache], spec, tmp_path / "cut")
    assert again.computed == 0


@pytest.mark.parametrize("probe", ["logreg-fast", "logreg"])
def test_widened_grid_computes_only_new_cells(cache, tmp_path, probe):
    first = run_sweep([cache], _spec(probe=probe, grid=(("C", (0.01, 0.1)),)), tmp_path)
    second = run_sweep([cache], _spec(probe=probe, grid=(("C", (0.01, 0.1, 1.0)),)), tmp_path)
    layers, K, inner = 3, 3, 2
    # Every cell the second run needs counts once, as computed or as reused.
    needed = layers * K * (inner + 1) * 3 if probe == "logreg-fast" else layers * K * inner * 3 + layers * K
    assert second.computed + second.reused == needed
    if probe == "logreg-fast":  # the new C's inner and outer cells, nothing else
        assert second.computed == layers * K * (inner + 1)
        assert len(ResultStore(tmp_path / "results.jsonl")) == layers * K * (inner + 1) * 3
    else:  # the new C's inner cells, and the outer cells whose choice changed
        new_outer = sum(a != b for r1, r2 in zip(first.rows, second.rows) for a, b in zip(r1["fold_params"], r2["fold_params"]))
        assert second.computed == layers * K * inner + new_outer
        assert len(ResultStore(tmp_path / "results.jsonl")) == layers * K * inner * 3 + K * layers + new_outer


def test_changed_cache_or_labels_is_refused(tmp_path):
    path = planted_cache(tmp_path / "c.h5", seed=1)
    run_sweep([path], _spec(layers=(0,)), tmp_path / "out")
    with pytest.raises(StoreError, match="label definition"):
        run_sweep([path], _spec(layers=(0,), positive="pos"), tmp_path / "out")
    path.unlink()
    planted_cache(path, seed=2)  # re-extracted: same path, new content
    with pytest.raises(StoreError, match="re-extracted"):
        run_sweep([path], _spec(layers=(0,)), tmp_path / "out")


def test_random_search_is_seeded_and_in_range():
    spec = _spec(grid=(), ranges=sw.parse_range(["C=1e-3:1e2:log"]), trials=6, seed=3)
    a, b = candidate_params(spec), candidate_params(spec)
    assert a == b and len(a) == 6
    assert all(1e-3 <= p["C"] <= 1e2 for p in a)
    assert candidate_params(_spec(grid=(), ranges=spec.ranges, trials=6, seed=4)) != a


def test_bad_specs_name_what_to_fix(cache, tmp_path):
    with pytest.raises(ProbeInputError, match="NAME=VALUE"):
        parse_grid(["C"])
    with pytest.raises(SweepError, match="LOW < HIGH"):
        sw.parse_range(["C=10:1:log"])
    with pytest.raises(SweepError, match="target column 'nope'"):
        run_sweep([cache], _spec(target="nope"), tmp_path)
    with pytest.raises(SweepError, match="speaker"):
        run_sweep([cache], _spec(outer_folds=50), tmp_path)


def test_shipped_sweep_files_validate():
    files = sorted((Path(__file__).parents[1] / "recipes" / "sweeps").glob("*.toml"))
    assert files
    for f in files:
        assert candidate_params(load_sweep_file(f).spec)
        assert f.read_text().startswith("# probekit sweep")


def test_cli_sweep_runs_and_reports_bad_input(cache, tmp_path):
    from probekit.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["sweep", str(cache), "--task", "binary", "--target", "binary", "--positive", "neg",
                            "--param", "C=0.1,1", "--folds", "3", "--inner-folds", "2", "--layers", "0-1", "--out", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert load_results(tmp_path / "results.json")["rows"] and (tmp_path / "layer_curve.png").is_file()
    assert "cells computed" in r.output and "★" in r.output
    doc = load_results(tmp_path / "results.json")
    assert doc["rows"][0]["metrics"]["f1"]["ci_low"] is not None and "tied" in doc["best"][0]
    # --bootstrap 0: no intervals and no tied-layer tests.
    r = runner.invoke(app, ["sweep", str(cache), "--task", "binary", "--target", "binary", "--positive", "neg",
                            "--param", "C=0.1,1", "--folds", "3", "--inner-folds", "2", "--layers", "0-1", "--bootstrap", "0",
                            "--out", str(tmp_path / "nb")])
    assert r.exit_code == 0, r.output
    doc = load_results(tmp_path / "nb" / "results.json")
    assert doc["rows"][0]["metrics"]["f1"]["ci_low"] is None and "tied" not in doc["best"][0]
    r = runner.invoke(app, ["sweep", str(cache), "--task", "binary", "--target", "binary", "--param", "C", "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "NAME=VALUE" in r.output


@pytest.mark.parametrize("task", ["binary", "multiclass", "multilabel"])
def test_shared_probe_path_agrees_with_batched_path(cache, tmp_path, task):
    """``logreg`` (probekit.probe.probes, one-vs-rest inside the probe) and ``logreg-fast`` solve the same
    objective on the same folds, so their per-layer scores agree; rows carry probe's metric names."""
    kw = {"binary": {}, "multiclass": {"positive": None}, "multilabel": {"target": "labels", "positive": None}}[task]
    fast = run_sweep([cache], _spec(task=task, grid=(("C", (0.1, 1.0)),), **kw), tmp_path / "fast")
    slow = run_sweep([cache], _spec(task=task, grid=(("C", (0.1, 1.0)),), probe="logreg", **kw), tmp_path / "slow")
    h = fast.headline
    assert h == {"binary": "f1", "multiclass": "uar", "multilabel": "weighted_f1"}[task]
    for a, b in zip(fast.rows, slow.rows):
        assert a["layer"] == b["layer"]
        assert abs(_mean(a, h) - _mean(b, h)) < 0.02, (a["layer"], _mean(a, h), _mean(b, h))
        assert set(b["metrics"]) == set(SCALAR_METRICS[task])
    cells = [json.loads(line) for line in (tmp_path / "slow" / "results.jsonl").read_text().splitlines()]
    assert all(set(c["scores"]) == set(SCALAR_METRICS[task]) for c in cells)
    # Counts are kept for outer cells only: inner cells just select parameters.
    assert all((c["confusion"] is None) == ("/" in c["fold"]) for c in cells)

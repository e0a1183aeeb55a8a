import numpy as np
import pytest
from sklearn.metrics import balanced_accuracy_score, f1_score

from probekit.choices import HEADLINE
from probekit.probe.metrics import SCALAR_METRICS, bootstrap_ci, compute_metrics, confusion_counts, resampled_point


def _data(kind, n=120, seed=0):
    rng = np.random.default_rng(seed)
    groups = np.repeat([f"s{i}" for i in range(8)], n // 8)
    if kind == "binary":
        y = rng.integers(0, 2, n)
        score = np.clip(0.35 * y + rng.random(n) * 0.7, 0, 1).round(2)  # rounding makes ties
        return y, (score >= 0.5).astype(int), score, groups, ("no", "yes")
    if kind == "multiclass":
        y = rng.integers(0, 4, n)
        score = rng.random((n, 4)) + 0.8 * np.eye(4)[y]
        return y, score.argmax(1), score, groups, ("a", "b", "c", "d")
    y = rng.integers(0, 2, (n, 3))
    score = np.clip(0.4 * y + rng.random((n, 3)) * 0.7, 0, 1).round(1)  # ties exercise LRAP ranking
    return y, (score >= 0.5).astype(int), score, groups, ("x", "y", "z")


@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel"])
def test_vectorised_metrics_equal_sklearn_at_unit_weights(kind):
    y, pred, score, groups, classes = _data(kind)
    ref = compute_metrics(kind, y, pred, score, classes)
    fast = resampled_point(kind, y, pred, score, groups, classes)
    assert set(fast) == set(SCALAR_METRICS[kind])
    for name in SCALAR_METRICS[kind]:
        assert fast[name] == pytest.approx(ref[name], abs=1e-9), name


@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel"])
def test_counts_summed_over_parts_give_the_pooled_counts(kind):
    """Counts of two disjoint parts, added, are the counts of all rows, laid out [[tn, fp], [fn, tp]]
    (binary, and per label for multilabel) or as compute_metrics' confusion matrix (multiclass)."""
    y, pred, score, groups, classes = _data(kind)
    parts = [slice(0, 50), slice(50, None)]
    summed = np.sum([confusion_counts(kind, y[p], pred[p], len(classes)) for p in parts], axis=0)
    if kind == "multiclass":
        np.testing.assert_array_equal(summed, compute_metrics(kind, y, pred, score, classes)["confusion_matrix"])
        return
    cells = np.array([[(y == 0) & (pred == 0), (y == 0) & (pred == 1)],
                      [(y == 1) & (pred == 0), (y == 1) & (pred == 1)]]).sum(2)
    np.testing.assert_array_equal(summed, np.moveaxis(cells, -1, 0) if kind == "multilabel" else cells)


def test_duplicated_speaker_weights_match_sklearn_on_repeated_rows():
    y, pred, score, groups, classes = _data("multiclass")
    # Speaker s0 drawn twice, s1 dropped: same as sklearn on the rows repeated accordingly.
    keep = np.concatenate([np.flatnonzero(groups == "s0")] * 2 + [np.flatnonzero((groups != "s0") & (groups != "s1"))])
    ref = compute_metrics("multiclass", y[keep], pred[keep], score[keep], classes)
    from probekit.probe.metrics import resampled_metrics

    uniq, inv = np.unique(groups, return_inverse=True)
    W = np.ones((1, len(uniq)))
    W[0, list(uniq).index("s0")] = 2
    W[0, list(uniq).index("s1")] = 0
    got = resampled_metrics("multiclass", y, pred, score, inv, W)
    for name in SCALAR_METRICS["multiclass"]:
        assert got[name][0] == pytest.approx(ref[name]), name


def test_binary_resampled_ranking_metrics_match_sklearn_on_repeated_rows():
    """ROC-AUC and average precision under speaker weights (drawn 0-3 times, several resamples at once)
    equal scikit-learn's on the rows repeated accordingly, ties included."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    from probekit.probe.metrics import resampled_metrics

    y, pred, score, groups, _classes = _data("binary", n=240, seed=4)
    uniq, inv = np.unique(groups, return_inverse=True)
    W = np.random.default_rng(1).integers(0, 4, size=(6, len(uniq))).astype(float)
    W[0, 0] = 0  # a dropped speaker
    got = resampled_metrics("binary", y, pred, score, inv, W)
    for b, w in enumerate(W):
        keep = np.repeat(np.arange(len(y)), w[inv].astype(int))
        assert got["roc_auc"][b] == pytest.approx(roc_auc_score(y[keep], score[keep]), abs=1e-12)
        assert got["pr_auc"][b] == pytest.approx(average_precision_score(y[keep], score[keep]), abs=1e-12)


@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel"])
def test_resampled_metrics_asked_by_name_equal_the_full_set(kind):
    # The tied-layer test asks for the headline alone, which skips the ranking metrics' cost.
    from probekit.probe.metrics import resampled_metrics, speaker_resamples

    y, pred, score, groups, _classes = _data(kind)
    inv, W = speaker_resamples(groups, 50, seed=3)
    full = resampled_metrics(kind, y, pred, score, inv, W)
    assert set(full) == set(SCALAR_METRICS[kind])
    for names in ([HEADLINE[kind]], ["roc_auc"] if kind == "binary" else ["lrap"] if kind == "multilabel" else ["uar"]):
        part = resampled_metrics(kind, y, pred, score, inv, W, names=names)
        assert set(part) == set(names)
        for name in names:
            np.testing.assert_array_equal(part[name], full[name])


@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel"])
def test_fold_metrics_equal_compute_metrics_fold_by_fold(kind):
    from probekit.probe.metrics import fold_metrics

    y, pred, score, groups, classes = _data(kind, n=240, seed=2)
    order = np.random.default_rng(0).permutation(len(y))
    folds = [(np.setdiff1d(order, te), te) for te in np.array_split(order, 4)]
    if kind == "binary":  # a fold with one class: ROC-AUC and balanced accuracy as scikit-learn leaves them
        te = np.flatnonzero(y == 1)[:20]
        folds.append((np.setdiff1d(np.arange(len(y)), te), te))
        folds = [(tr, np.setdiff1d(t, te)) for tr, t in folds[:-1]] + folds[-1:]
    got = fold_metrics(kind, y, pred, score, folds)
    for k, (_tr, te) in enumerate(folds):
        want = compute_metrics(kind, y[te], pred[te], score[te], classes)
        for name in SCALAR_METRICS[kind]:
            if np.isnan(want[name]):
                assert np.isnan(got[name][k]), (k, name)
            else:
                assert got[name][k] == pytest.approx(want[name], abs=1e-12), (k, name)


def test_multiclass_uar_is_balanced_accuracy_and_has_confusion_matrix():
    y = np.array([0, 0, 0, 1, 2, 2])
    pred = np.array([0, 1, 0, 1, 2, 0])
    m = compute_metrics("multiclass", y, pred, np.eye(3)[pred], ("a", "b", "c"))
    assert m["uar"] == pytest.approx(balanced_accuracy_score(y, pred))
    assert m["weighted_f1"] == pytest.approx(f1_score(y, pred, average="weighted"))
    assert m["confusion_matrix"] == [[2, 1, 0], [0, 1, 0], [1, 0, 1]]


def test_multilabel_per_label_lists():
    y = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])
    pred = np.array([[1, 0], [0, 1], [0, 1], [1, 0]])
    m = compute_metrics("multilabel", y, pred, pred.astype(float), ("p", "q"))
    assert m["support_per_label"] == [2, 2]
    assert m["f1_per_label"][1] == pytest.approx(1.0)
    assert m["f1_per_label"][0] == pytest.approx(0.5)
    assert m["hamming_loss"] == pytest.approx(2 / 8)


@pytest.mark.parametrize("kind", ["binary", "multiclass", "multilabel"])
def test_bootstrap_ci_brackets_point_and_is_seeded(kind):
    y, pred, score, groups, classes = _data(kind)
    ci = bootstrap_ci(kind, y, pred, score, groups, classes, n_boot=300, seed=3)
    ref = compute_metrics(kind, y, pred, score, classes)
    for name in SCALAR_METRICS[kind]:
        lo, hi = ci[name]
        assert lo <= hi
        assert lo - 1e-9 <= ref[name] <= hi + 1e-9 or hi - lo < 1e-9, name
    assert bootstrap_ci(kind, y, pred, score, groups, classes, n_boot=300, seed=3) == ci


def test_bootstrap_is_degenerate_with_one_speaker_constant_data():
    y = np.array([0, 1, 0, 1])
    pred = y.copy()
    ci = bootstrap_ci("binary", y, pred, y.astype(float), np.array(["a"] * 4), ("n", "p"), n_boot=50)
    assert ci["f1"] == (1.0, 1.0)


def test_bootstrap_interval_narrows_with_more_speakers():
    widths = []
    for n_spk in (4, 40):
        rng = np.random.default_rng(0)
        n = n_spk * 20
        groups = np.repeat(np.arange(n_spk).astype(str), 20)
        y = rng.integers(0, 2, n)
        pred = np.where(rng.random(n) < 0.8, y, 1 - y)
        lo, hi = bootstrap_ci("binary", y, pred, pred.astype(float), groups, ("n", "p"), n_boot=400)["accuracy"]
        widths.append(hi - lo)
    assert widths[1] < widths[0]


@pytest.mark.parametrize("seed", range(4))
def test_lrap_equals_sklearn_with_ties_and_trivial_rows(seed):
    from sklearn.metrics import label_ranking_average_precision_score

    rng = np.random.default_rng(seed)
    n, k = 300, 7
    y = (rng.random((n, k)) < 0.3).astype(int)
    y[:10] = 0  # no relevant label: sklearn scores these rows 1
    y[10:20] = 1  # every label relevant: also 1
    score = rng.random((n, k)).round(1)  # rounding makes many ties (sklearn ranks ties high)
    got = compute_metrics("multilabel", y, (score > 0.5).astype(int), score, [f"l{j}" for j in range(k)])["lrap"]
    assert got == pytest.approx(label_ranking_average_precision_score(y, score), abs=1e-12)

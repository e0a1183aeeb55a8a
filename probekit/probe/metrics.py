"""Metrics per task, and speaker-resampling bootstrap confidence intervals.

Point values come from scikit-learn, except label-ranking average precision, which is our
vectorised equivalent (tested equal to scikit-learn's). The bootstrap resamples *speakers* with replacement
(a speaker drawn twice counts twice) and is vectorised: every metric is a function of per-speaker
sufficient statistics (confusion counts, per-score-bucket counts, per-row scores), so one matrix
product per statistic gives all resamples at once.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    hamming_loss,
    multilabel_confusion_matrix,
    precision_recall_fscore_support,
    precision_score,
    recall_score,
    roc_auc_score,
)

from probekit.choices import SCALAR_METRICS


def _safe(fn, *args, **kw) -> float:
    try:
        return float(fn(*args, **kw))
    except ValueError:  # e.g. ROC-AUC of a fold whose test speaker has a single class
        return float("nan")


def compute_metrics(kind: str, y_true, y_pred, y_score, classes) -> dict[str, float | list]:
    """All metrics of ``kind`` for one set of predictions.

    binary: ``y_true``/``y_pred`` ``(n,)`` {0,1}, ``y_score`` ``(n,)`` positive-class score;
    multiclass: ``(n,)`` class indices, ``y_score`` ``(n, C)``; adds ``confusion_matrix`` (C x C list, rows = truth);
    multilabel: ``(n, k)`` indicators and scores; adds ``precision_per_label``, ``recall_per_label``,
    ``f1_per_label``, ``support_per_label`` (lists of length k).
    """
    y_true, y_pred, y_score = np.asarray(y_true), np.asarray(y_pred), np.asarray(y_score)
    if kind == "binary":
        return {
            "f1": float(f1_score(y_true, y_pred, zero_division=0)),
            "precision": float(precision_score(y_true, y_pred, zero_division=0)),
            "recall": float(recall_score(y_true, y_pred, zero_division=0)),
            "accuracy": float(accuracy_score(y_true, y_pred)),
            "balanced_accuracy": _safe(balanced_accuracy_score, y_true, y_pred),
            "roc_auc": _safe(roc_auc_score, y_true, y_score),
            "pr_auc": _safe(average_precision_score, y_true, y_score) if y_true.any() else float("nan"),
        }
    labels = list(range(len(classes)))
    if kind == "multiclass":
        return {
            "uar": float(_recall_mean(confusion_matrix(y_true, y_pred, labels=labels))),
            "accuracy": float(accuracy_score(y_true, y_pred)),
            "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
            "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
            "confusion_matrix": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        }
    if kind == "multilabel":
        p, r, f, s = precision_recall_fscore_support(y_true, y_pred, average=None, zero_division=0)
        return {
            "weighted_f1": float(f1_score(y_true, y_pred, average="weighted", zero_division=0)),
            "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
            "micro_f1": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
            "hamming_loss": float(hamming_loss(y_true, y_pred)),
            "subset_accuracy": float(accuracy_score(y_true, y_pred)),
            # Our vectorised LRAP (same definition, tested equal): scikit-learn ranks every row
            # with scipy, about 2 s per 4,000 rows, more than fitting the probe itself.
            "lrap": float(_row_lrap(y_true, y_score).mean()) if len(y_true) else float("nan"),
            "precision_per_label": p.tolist(),
            "recall_per_label": r.tolist(),
            "f1_per_label": f.tolist(),
            "support_per_label": s.astype(int).tolist(),
        }
    raise ValueError(f"unknown task kind {kind!r}")


def _recall_mean(cm: np.ndarray) -> np.ndarray:
    """Mean recall over classes present in the truth; ``cm`` ``(..., C, C)`` rows = truth.

    Equals balanced accuracy (UAR)."""
    support = cm.sum(-1)
    diag = np.diagonal(cm, axis1=-2, axis2=-1)
    present = support > 0
    rec = np.divide(diag, support, out=np.zeros_like(diag, dtype=float), where=present)
    return rec.sum(-1) / np.maximum(present.sum(-1), 1)


def _f1(tp, fp, fn):
    den = 2 * tp + fp + fn
    return np.divide(2 * tp, den, out=np.zeros_like(den, dtype=float), where=den > 0)


def _ratio(a, b):
    return np.divide(a, b, out=np.zeros_like(np.asarray(a, dtype=float)), where=np.asarray(b) > 0)


def confusion_counts(kind: str, y_true, y_pred, n_classes: int) -> list:
    """Confusion counts of one set of predictions (inputs as in :func:`compute_metrics`).

    binary: ``2 x 2`` ``[[tn, fp], [fn, tp]]``; multiclass: ``C x C``, rows = truth, columns =
    prediction, classes by index; multilabel: ``k x 2 x 2``, per label ``[[tn, fp], [fn, tp]]``.
    ``n_classes``: 2 for binary, C for multiclass, unused for multilabel. Counts of disjoint test
    sets add up to the counts of their union.
    """
    if kind == "multilabel":
        return multilabel_confusion_matrix(np.asarray(y_true), np.asarray(y_pred)).tolist()
    return confusion_matrix(y_true, y_pred, labels=list(range(n_classes))).tolist()


def _per_group(values: np.ndarray, inv: np.ndarray, n_groups: int) -> np.ndarray:
    """Sum rows of ``values`` ``(n, ...)`` per group -> ``(n_groups, ...)`` (a bincount per column: a
    quarter of ``np.add.at``'s time, the same sums in the same order)."""
    flat = values.reshape(len(values), -1)
    out = np.stack([np.bincount(inv, weights=flat[:, j], minlength=n_groups) for j in range(flat.shape[1])], 1)
    return out.reshape((n_groups,) + values.shape[1:])


def _ranking_stats(y_true: np.ndarray, y_score: np.ndarray, inv: np.ndarray, n_groups: int):
    """Per-group counts for ROC-AUC and average precision, over the score buckets holding a positive.

    Buckets are distinct scores, descending; ``cols`` the J of them holding a positive. A curve only
    needs its running sums at those buckets, so every negative is counted in the first of them at or
    below its score (its block). Returns sparse ``(G, J)`` ``pos`` (positives per group and bucket),
    ``neg`` (negatives per group and block), a dense ``(G, J)`` ``tie`` (negatives in the bucket itself)
    and ``(G,)`` ``neg_total``.
    """
    import scipy.sparse

    uniq, bucket = np.unique(-y_score, return_inverse=True)
    pos_row = y_true == 1
    cols = np.unique(bucket[pos_row])
    J = len(cols)
    block = np.searchsorted(cols, bucket)  # J for a negative scored below every positive
    neg_row = (y_true == 0) & (block < J)

    def counts(rows):
        return scipy.sparse.csr_matrix((np.ones(np.count_nonzero(rows)), (inv[rows], block[rows])), shape=(n_groups, J))

    tie_row = neg_row & (bucket == cols[np.minimum(block, J - 1)]) if J else neg_row
    neg_total = np.bincount(inv, weights=(y_true == 0).astype(float), minlength=n_groups)
    return counts(pos_row), counts(neg_row), counts(tie_row).toarray(), neg_total


def _auc_from_buckets(P, N, tie: np.ndarray, neg_total: np.ndarray, W: np.ndarray, chunk: int = 125):
    """ROC-AUC and average precision ``(B,)`` under each row of group weights ``W`` ``(B, G)``, from
    :func:`_ranking_stats`' counts ``P``, ``N``, ``tie`` ``(G, J)`` and ``neg_total`` ``(G,)``.

    The same values as the curves of the weighted counts ``W @ P``, ``W @ N``, without dense
    ``(B, G) @ (G, rows)`` products: ROC-AUC's numerator is bilinear in the weights, ``w M w`` with
    ``M[g, h]`` = pairs (positive of group g, negative of group h) ranked right, ties half; for average
    precision a bucket's weighted count is its own group's weight (a sparse product), whose running
    sums give the curve at the buckets holding a positive, ``chunk`` resamples at a time.
    """
    tot_p, tot_n = W @ np.asarray(P.sum(1)).ravel(), W @ neg_total
    if P.shape[1] == 0:
        return np.full(len(W), np.nan), np.full(len(W), np.nan)
    neg_at_or_above = np.cumsum(N.toarray(), 1)  # (G, J) negatives of each group scored at or above each bucket
    M = np.asarray(P @ (neg_total[:, None] - neg_at_or_above + 0.5 * tie).T)
    auc = _ratio(((W @ M) * W).sum(1), tot_p * tot_n)
    Pt, Nt = P.T.tocsr(), N.T.tocsr()
    ap = np.empty(len(W))
    for lo in range(0, len(W), chunk):
        Wc = W[lo : lo + chunk].T
        # (chunk, J) weighted positives / negatives per bucket or block, row-major so the running sums are contiguous
        wp, wn = (np.ascontiguousarray((S @ Wc).T) for S in (Pt, Nt))
        tp = np.cumsum(wp, 1)
        ap[lo : lo + chunk] = (wp * _ratio(tp, tp + np.cumsum(wn, 1))).sum(1)
    ap = _ratio(ap, tot_p)
    undefined_auc = (tot_p == 0) | (tot_n == 0)
    return np.where(undefined_auc, np.nan, auc), np.where(tot_p == 0, np.nan, ap)


def _row_lrap(y_true: np.ndarray, y_score: np.ndarray, block: int = 4096) -> np.ndarray:
    """Label-ranking average precision of each row ``(n,)``, as sklearn defines it (ties rank high;
    rows with no or all labels relevant score 1), so speaker weights can average it.

    ``y_true``, ``y_score``: ``(n, k)``. Rows go in blocks: the pairwise comparison is ``(block, k, k)``.
    """
    y = np.asarray(y_true).astype(bool)
    y_score = np.asarray(y_score)
    out = np.empty(len(y))
    for lo in range(0, len(y), block):
        yb, sb = y[lo : lo + block], y_score[lo : lo + block]
        ge = sb[:, None, :] >= sb[:, :, None]  # [i, j, l]: label l ranks at or above label j
        rank = ge.sum(2)
        hits = (ge & yb[:, None, :]).sum(2)
        n_rel = yb.sum(1)
        per = np.where(yb, hits / rank, 0.0).sum(1)
        trivial = (n_rel == 0) | (n_rel == yb.shape[1])
        out[lo : lo + block] = np.where(trivial, 1.0, per / np.maximum(n_rel, 1))
    return out


def resampled_metrics(kind, y_true, y_pred, y_score, inv: np.ndarray, W: np.ndarray,
                      names=None) -> dict[str, np.ndarray]:
    """Every scalar metric of ``kind`` (``names``: only those; ``None``: all) under each row of group
    weights ``W`` ``(B, G)`` (e.g. from :func:`speaker_resamples`), ``inv`` ``(n,)`` the group of each row:
    ``{name: (B,)}``, NaN where a resample leaves it undefined. The ranking metrics (binary ROC-AUC and
    average precision, multi-label LRAP) cost most, and are skipped unless asked for."""
    y_true, y_pred, y_score = np.asarray(y_true), np.asarray(y_pred), np.asarray(y_score)
    n_groups = W.shape[1]
    want = set(SCALAR_METRICS[kind] if names is None else names)
    if kind == "binary":
        cells = np.stack([(y_true == 1) & (y_pred == 1), (y_true == 0) & (y_pred == 1), (y_true == 1) & (y_pred == 0), (y_true == 0) & (y_pred == 0)], 1)
        tp, fp, fn, tn = (W @ _per_group(cells.astype(float), inv, n_groups)).T
        unasked = np.full(len(W), np.nan)
        auc, ap = _auc_from_buckets(*_ranking_stats(y_true, y_score, inv, n_groups), W) if want & {"roc_auc", "pr_auc"} else (unasked, unasked)
        rec = _ratio(tp, tp + fn)
        spec = _ratio(tn, tn + fp)
        has_both = ((tp + fn) > 0) & ((tn + fp) > 0)
        out = {
            "f1": _f1(tp, fp, fn),
            "precision": _ratio(tp, tp + fp),
            "recall": rec,
            "accuracy": _ratio(tp + tn, tp + fp + fn + tn),
            "balanced_accuracy": np.where(has_both, (rec + spec) / 2, np.where((tp + fn) > 0, rec, spec)),
            "roc_auc": auc,
            "pr_auc": ap,
        }
    elif kind == "multiclass":
        C = y_score.shape[1]
        onehot = np.zeros((len(y_true), C * C))
        onehot[np.arange(len(y_true)), y_true * C + y_pred] = 1
        cm = (W @ _per_group(onehot, inv, n_groups)).reshape(len(W), C, C)
        support, predicted, diag = cm.sum(2), cm.sum(1), np.diagonal(cm, axis1=1, axis2=2)
        f1 = _f1(diag, predicted - diag, support - diag)
        total = support.sum(1)
        out = {
            "uar": _recall_mean(cm),
            "accuracy": _ratio(diag.sum(1), total),
            "macro_f1": f1.mean(1),
            "weighted_f1": _ratio((f1 * support).sum(1), total),
        }
    elif kind == "multilabel":
        n, k = y_true.shape
        stats = np.concatenate(
            [
                (y_true & y_pred),
                ((1 - y_true) & y_pred),
                (y_true & (1 - y_pred)),
                (y_true != y_pred).sum(1, keepdims=True),
                (y_true == y_pred).all(1, keepdims=True),
                _row_lrap(y_true, y_score)[:, None] if "lrap" in want else np.zeros((n, 1)),
                np.ones((n, 1)),
            ],
            1,
        ).astype(float)
        S = W @ _per_group(stats, inv, n_groups)
        tp, fp, fn = S[:, :k], S[:, k : 2 * k], S[:, 2 * k : 3 * k]
        wrong, exact, lrap, rows = S[:, 3 * k], S[:, 3 * k + 1], S[:, 3 * k + 2], S[:, 3 * k + 3]
        f1 = _f1(tp, fp, fn)
        support = tp + fn
        out = {
            "weighted_f1": _ratio((f1 * support).sum(1), support.sum(1)),
            "macro_f1": f1.mean(1),
            "micro_f1": _f1(tp.sum(1), fp.sum(1), fn.sum(1)),
            "hamming_loss": _ratio(wrong, rows * k),
            "subset_accuracy": _ratio(exact, rows),
            "lrap": _ratio(lrap, rows),
        }
    else:
        raise ValueError(f"unknown task kind {kind!r}")
    return {k: v for k, v in out.items() if k in want}


def speaker_resamples(groups, n_boot: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """The speaker bootstrap's draws: ``inv`` ``(n,)`` speaker index of each row, and ``W``
    ``(n_boot, G)`` how often each of the G speakers is drawn in each resample.

    The same ``W`` applied to two sets of predictions of the same rows gives a paired bootstrap.
    """
    uniq, inv = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    G = len(uniq)
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, G, size=(n_boot, G))
    W = np.zeros((n_boot, G))
    np.add.at(W, (np.repeat(np.arange(n_boot), G), draws.ravel()), 1.0)
    return inv, W


def bootstrap_ci(kind, y_true, y_pred, y_score, groups, classes, n_boot=1000, seed=0) -> dict[str, tuple[float, float]]:
    """95% percentile interval of every scalar metric over ``n_boot`` resamples of speakers.

    ``groups``: ``(n,)`` speaker per row. Resamples where a metric is undefined are ignored for it.
    """
    if n_boot <= 0:
        return {m: (float("nan"), float("nan")) for m in SCALAR_METRICS[kind]}
    inv, W = speaker_resamples(groups, n_boot, seed)
    values = resampled_metrics(kind, y_true, y_pred, y_score, inv, W)
    out = {}
    for name, v in values.items():
        v = v[np.isfinite(v)]
        out[name] = (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5))) if len(v) else (float("nan"), float("nan"))
    return out


def fold_metrics(kind, y_true, y_pred, y_score, folds) -> dict[str, np.ndarray]:
    """Every scalar metric of ``kind`` on each fold's test rows: ``{name: (F,)}`` for ``folds``
    ``[(train, test)]`` (test parts disjoint), NaN where a fold leaves a metric undefined.

    One call of the vectorised code, with the folds as the groups and one weight row per fold (its rows
    1, the rest 0): the same values as :func:`compute_metrics` on each fold's rows (tested), without
    scikit-learn's per-call overhead.
    """
    tests = [np.asarray(te) for _tr, te in folds]
    rows = np.concatenate(tests)
    fold = np.repeat(np.arange(len(tests)), [len(te) for te in tests])
    y_true, y_pred, y_score = np.asarray(y_true)[rows], np.asarray(y_pred)[rows], np.asarray(y_score)[rows]
    return resampled_metrics(kind, y_true, y_pred, y_score, fold, np.eye(len(tests)))


def resampled_point(kind, y_true, y_pred, y_score, groups, classes) -> dict[str, float]:
    """Every scalar metric of ``kind`` from the vectorised code at unit weights (the data as given):
    ``{name: value}``, equal to :func:`compute_metrics`' scalars (tested) at a fraction of the cost.

    ``groups``: ``(n,)`` any labels (one group is fine); inputs otherwise as in :func:`compute_metrics`.
    """
    uniq, inv = np.unique(np.asarray(groups).astype(str), return_inverse=True)
    W = np.ones((1, len(uniq)))
    return {k: float(v[0]) for k, v in resampled_metrics(kind, y_true, y_pred, y_score, inv, W).items()}

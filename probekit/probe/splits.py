"""Speaker-independent evaluation folds.

Every protocol returns ``[(train_idx, test_idx), ...]`` (sorted int arrays of row positions) in
which no speaker (group) is on both sides; :func:`check_disjoint` enforces it.
"""

from __future__ import annotations

import numpy as np
from sklearn.model_selection import GroupKFold, LeaveOneGroupOut, StratifiedGroupKFold

from probekit.choices import Protocol
from probekit.probe.tasks import ProbeInputError


def check_disjoint(folds, groups) -> None:
    """Raise :class:`ProbeInputError` if any fold has a speaker in both train and test."""
    groups = np.asarray(groups)
    for i, (train, test) in enumerate(folds):
        shared = set(groups[train]) & set(groups[test])
        if shared:
            raise ProbeInputError(f"fold {i}: speaker(s) {', '.join(sorted(map(str, shared))[:10])} in both train and test")


def _iterative_group_folds(groups: np.ndarray, y: np.ndarray, n_folds: int, seed: int) -> np.ndarray:
    """Fold number per unique group for an ``(n, k)`` indicator ``y``.

    Iterative stratification lifted to groups: the groups holding the rarest labels are placed
    first, each into the fold that still lacks most of that label (ties: fewest rows, then random),
    so every fold gets its share of rare labels while a speaker stays whole.
    """
    rng = np.random.default_rng(seed)
    uniq, inv = np.unique(groups, return_inverse=True)
    n_groups, k = len(uniq), y.shape[1]
    per_group = np.zeros((n_groups, k))
    np.add.at(per_group, inv, y)
    sizes = np.bincount(inv, minlength=n_groups).astype(float)
    totals = per_group.sum(0)
    want = np.tile(totals / n_folds, (n_folds, 1))
    want_rows = np.full(n_folds, sizes.sum() / n_folds)
    have = np.zeros((n_folds, k))
    have_rows = np.zeros(n_folds)
    rarity = np.where(per_group > 0, totals[None, :], np.inf).min(1)
    order = np.lexsort((rng.random(n_groups), -sizes, rarity))
    fold_of = np.empty(n_groups, dtype=int)
    for g in order:
        labels = np.flatnonzero(per_group[g] > 0)
        if len(labels):
            rare = labels[np.argmin(totals[labels])]
            demand = want[:, rare] - have[:, rare]
        else:
            demand = want_rows - have_rows
        cand = np.flatnonzero(demand == demand.max())
        room = (want_rows - have_rows)[cand]
        cand = cand[room == room.max()]
        f = int(rng.choice(cand))
        fold_of[g] = f
        have[f] += per_group[g]
        have_rows[f] += sizes[g]
    # A fold can end up empty when few groups carry all labels; move the smallest group of the largest fold.
    for f in range(n_folds):
        while not np.any(fold_of == f):
            counts = np.bincount(fold_of, minlength=n_folds)
            donor = int(np.argmax(counts))
            members = np.flatnonzero(fold_of == donor)
            fold_of[members[np.argmin(sizes[members])]] = f
    return fold_of[inv]


def make_folds(
    cv: str,
    groups: np.ndarray,
    y: np.ndarray,
    n_folds: int = 5,
    seed: int = 0,
    split: np.ndarray | None = None,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Folds for protocol ``cv`` over ``n`` rows.

    ``groups``: ``(n,)`` speaker per row; ``y``: ``(n,)`` classes or ``(n, k)`` indicator (stratification);
    ``split``: ``(n,)`` ``train``/``test`` per row for ``cv="split"`` (other values are left out).
    """
    groups = np.asarray(groups).astype(str)
    y = np.asarray(y)
    n_groups = len(np.unique(groups))
    idx = np.arange(len(groups))
    if cv == "speaker-kfold":
        if n_folds < 2:
            raise ProbeInputError(f"--folds must be at least 2, not {n_folds}")
        if n_groups < n_folds:
            raise ProbeInputError(f"only {n_groups} speaker(s) for {n_folds} speaker-grouped folds: lower --folds or use --cv loso")
        if y.ndim == 2:
            fold = _iterative_group_folds(groups, y, n_folds, seed)
            folds = [(idx[fold != f], idx[fold == f]) for f in range(n_folds)]
        else:
            # When no class has a row for every fold there is nothing to stratify (scikit-learn
            # refuses outright): plain speaker-grouped folds.
            stratify = np.unique(y, return_counts=True)[1].max() >= n_folds
            splitter = (StratifiedGroupKFold if stratify else GroupKFold)(n_splits=n_folds, shuffle=True, random_state=seed)
            folds = [(np.sort(a), np.sort(b)) for a, b in splitter.split(np.zeros(len(y)), y, groups)]
    elif cv == "loso":
        if n_groups < 2:
            raise ProbeInputError(f"leave-one-speaker-out needs at least 2 speakers, found {n_groups}")
        folds = [(np.sort(a), np.sort(b)) for a, b in LeaveOneGroupOut().split(idx, groups=groups)]
    elif cv == "split":
        if split is None:
            raise ProbeInputError("--cv split needs a 'split' column (train/test) in the cache metadata or --manifest")
        split = np.asarray(split).astype(str)
        train, test = idx[split == "train"], idx[split == "test"]
        if not len(train) or not len(test):
            raise ProbeInputError(f"--cv split needs rows with split 'train' and 'test'; found {len(train)} train and {len(test)} test rows")
        shared = sorted(set(groups[train]) & set(groups[test]))
        if shared:
            raise ProbeInputError(
                f"the split column puts speaker(s) {', '.join(shared[:10])} in both train and test; fix the split or use --cv speaker-kfold"
            )
        folds = [(train, test)]
    else:
        raise ProbeInputError(f"unknown --cv '{cv}': use one of {', '.join(Protocol.names())}")
    check_disjoint(folds, groups)
    return folds

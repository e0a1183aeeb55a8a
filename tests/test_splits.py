import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from probekit.probe.splits import check_disjoint, make_folds
from probekit.probe.tasks import ProbeInputError


@st.composite
def layouts(draw):
    n_groups = draw(st.integers(2, 9))
    sizes = draw(st.lists(st.integers(1, 6), min_size=n_groups, max_size=n_groups))
    groups = np.repeat([f"g{i}" for i in range(n_groups)], sizes)
    perm = draw(st.permutations(range(len(groups))))
    groups = groups[list(perm)]
    n_classes = draw(st.integers(2, 4))
    y = np.array(draw(st.lists(st.integers(0, n_classes - 1), min_size=len(groups), max_size=len(groups))))
    k = draw(st.integers(1, 4))
    y_multi = np.array(draw(st.lists(st.lists(st.integers(0, 1), min_size=k, max_size=k), min_size=len(groups), max_size=len(groups))))
    return groups, y, y_multi


def _assert_partition(folds, groups, n):
    for train, test in folds:
        assert not set(groups[train]) & set(groups[test])
        assert len(test) > 0
        assert not set(train) & set(test)
    check_disjoint(folds, groups)


@settings(max_examples=60, deadline=None)
@given(layouts(), st.integers(2, 5), st.integers(0, 3))
def test_no_protocol_puts_a_speaker_on_both_sides(layout, k, seed):
    groups, y, y_multi = layout
    n_groups = len(set(groups))
    # LOSO: every speaker is a test fold exactly once.
    folds = make_folds("loso", groups, y)
    _assert_partition(folds, groups, len(groups))
    assert sorted(np.concatenate([t for _, t in folds]).tolist()) == list(range(len(groups)))
    for target in (y, y_multi):
        if n_groups >= k:
            folds = make_folds("speaker-kfold", groups, target, n_folds=k, seed=seed)
            assert len(folds) == k
            _assert_partition(folds, groups, len(groups))
            assert sorted(np.concatenate([t for _, t in folds]).tolist()) == list(range(len(groups)))
        else:
            with pytest.raises(ProbeInputError, match="speaker"):
                make_folds("speaker-kfold", groups, target, n_folds=k, seed=seed)
    # A split column drawn per row either keeps speakers apart or is refused.
    split = np.where(np.arange(len(groups)) % 2 == 0, "train", "test")
    try:
        folds = make_folds("split", groups, y, split=split)
    except ProbeInputError as exc:
        assert "both train and test" in str(exc) or "needs rows" in str(exc)
    else:
        _assert_partition(folds, groups, len(groups))
    # A split column drawn per speaker is always accepted.
    uniq = sorted(set(groups))
    per_speaker = {g: ("test" if i == 0 else "train") for i, g in enumerate(uniq)}
    folds = make_folds("split", groups, y, split=np.array([per_speaker[g] for g in groups]))
    _assert_partition(folds, groups, len(groups))


def test_iterative_stratification_spreads_a_rare_label():
    groups = np.repeat([f"s{i}" for i in range(10)], 5)
    y = np.zeros((50, 2), dtype=int)
    y[:, 0] = 1
    rare_speakers = [0, 3, 6, 9, 1]
    for s in rare_speakers:
        y[s * 5, 1] = 1
    folds = make_folds("speaker-kfold", groups, y, n_folds=5, seed=0)
    assert all(y[test, 1].sum() == 1 for _, test in folds)


def test_split_refuses_shared_speaker_with_its_name():
    groups = np.array(["a", "a", "b", "b"])
    with pytest.raises(ProbeInputError, match="speaker\\(s\\) a in both train and test"):
        make_folds("split", groups, np.array([0, 1, 0, 1]), split=np.array(["train", "test", "train", "train"]))


def test_split_without_column_and_unknown_protocol():
    with pytest.raises(ProbeInputError, match="split"):
        make_folds("split", np.array(["a", "b"]), np.array([0, 1]))
    with pytest.raises(ProbeInputError, match="unknown --cv"):
        make_folds("holdout", np.array(["a", "b"]), np.array([0, 1]))


def test_check_disjoint_detects_leak():
    groups = np.array(["a", "b", "a"])
    with pytest.raises(ProbeInputError, match="fold 0"):
        check_disjoint([(np.array([0, 1]), np.array([2]))], groups)


def test_speaker_kfold_is_seeded():
    groups = np.repeat(np.arange(12).astype(str), 4)
    y = np.arange(48) % 3
    a = make_folds("speaker-kfold", groups, y, n_folds=4, seed=1)
    b = make_folds("speaker-kfold", groups, y, n_folds=4, seed=1)
    assert all((x[1] == z[1]).all() for x, z in zip(a, b))


def test_speaker_kfold_with_every_class_rarer_than_the_folds_still_splits_by_speaker():
    # Three speakers, one row each, three classes: scikit-learn's stratified splitter refuses this
    # (no class can reach every fold); the folds fall back to plain speaker grouping.
    groups = np.array(["a", "b", "c"])
    folds = make_folds("speaker-kfold", groups, np.array([0, 1, 2]), n_folds=2, seed=0)
    assert len(folds) == 2
    assert sorted(np.concatenate([te for _, te in folds]).tolist()) == [0, 1, 2]
    for tr, te in folds:
        assert not set(groups[tr]) & set(groups[te])

import numpy as np
import pytest

from probekit.probe.tasks import ProbeInputError, TaskSpec, build_targets

META = {
    "speaker": np.array(["a", "a", "b", "b", "c"], dtype=object),
    "label": np.array(["anger", "neutral", "anger", "sadness", ""], dtype=object),
    "labels": np.array(["anger;negative", "neutral", "anger;negative;high_arousal", "sadness;negative", "neutral"], dtype=object),
}


def test_binary_positive_is_membership_in_label_set():
    t = build_targets(TaskSpec("binary", "labels", positive="negative"), META)
    assert t.y.tolist() == [1, 0, 1, 1, 0]
    assert t.classes == ("not negative", "negative")
    assert t.mask.all()


def test_binary_on_single_label_column_masks_empty_rows():
    t = build_targets(TaskSpec("binary", "label", positive="anger"), META)
    assert t.mask.tolist() == [True, True, True, True, False]
    assert t.y.tolist() == [1, 0, 1, 0]


def test_multiclass_sorted_classes_and_subset():
    t = build_targets(TaskSpec("multiclass", "label"), META)
    assert t.classes == ("anger", "neutral", "sadness")
    assert t.y.tolist() == [0, 1, 0, 2]
    sub = build_targets(TaskSpec("multiclass", "label", labels=("anger", "sadness")), META)
    assert sub.mask.tolist() == [True, False, True, True, False]
    assert sub.y.tolist() == [0, 0, 1]


def test_multiclass_min_support_drops_rare_classes():
    t = build_targets(TaskSpec("multiclass", "label", min_support=2, labels=None), {**META, "label": np.array(["x", "x", "y", "y", "z"], dtype=object)})
    assert t.classes == ("x", "y")
    assert t.mask.tolist() == [True, True, True, True, False]


def test_multilabel_indicator_with_min_support():
    t = build_targets(TaskSpec("multilabel", "labels", min_support=2), META)
    assert t.classes == ("anger", "negative", "neutral")
    assert t.y.tolist() == [[1, 1, 0], [0, 0, 1], [1, 1, 0], [0, 1, 0], [0, 0, 1]]


@pytest.mark.parametrize(
    "spec, needle",
    [
        (TaskSpec("multiclass", "emotion"), "target column 'emotion' not found"),
        (TaskSpec("binary", "labels", positive="joy"), "unknown label(s) 'joy'"),
        (TaskSpec("multilabel", "labels", labels=("anger", "bliss")), "'bliss'"),
        (TaskSpec("multiclass", "labels"), "label sets"),
        (TaskSpec("binary", "labels"), "--positive"),
        (TaskSpec("regression", "label"), "unknown task"),
    ],
)
def test_clear_errors(spec, needle):
    with pytest.raises(ProbeInputError) as exc:
        build_targets(spec, META)
    assert needle in str(exc.value)

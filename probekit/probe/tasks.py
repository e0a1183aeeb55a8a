"""Turn metadata columns into probe targets: binary, multi-class or multi-label.

A target column holds one label per row, or a ``;``-separated label set (see
:func:`probekit.manifest.split_labels`).
"""

from __future__ import annotations

from probekit.errors import ProbekitError

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from probekit.choices import TaskKind
from probekit.manifest import split_labels


class ProbeInputError(ProbekitError, ValueError):
    """The user's input cannot be probed as asked; the message names what to fix."""


@dataclass(frozen=True)
class TaskSpec:
    """What to predict.

    ``kind``: ``"binary"`` | ``"multiclass"`` | ``"multilabel"``; ``target``: metadata column;
    ``positive``: for binary, the label whose presence (in the label or label set) makes a row positive;
    ``labels``: optional subset of labels (multiclass: rows outside it are dropped; multilabel: columns kept);
    ``min_support``: labels/classes with fewer rows are dropped.
    """

    kind: str
    target: str
    positive: str | None = None
    labels: tuple[str, ...] | None = None
    min_support: int = 1


@dataclass(frozen=True)
class Targets:
    """``y``: ``(n,)`` int class index (binary: 1 = positive) or ``(n, k)`` {0,1} for multilabel,
    for the rows where ``mask`` ``(n_all,)`` is True; ``classes``: names of the indices / columns."""

    y: np.ndarray
    classes: tuple[str, ...]
    kind: str
    mask: np.ndarray


def class_columns(proba: np.ndarray, present, n_classes: int) -> np.ndarray:
    """Probabilities ``(n, len(present))`` over the class indices ``present`` in a training part, spread
    over every class index: ``(n, n_classes)`` float64, 0 for a class the part lacked."""
    full = np.zeros((len(proba), n_classes))
    full[:, np.asarray(present, dtype=int)] = proba
    return full


def _check_known(wanted, seen: set[str], column: str) -> None:
    unknown = [w for w in wanted if w not in seen]
    if unknown:
        raise ProbeInputError(
            f"unknown label(s) {', '.join(repr(u) for u in unknown)} in column '{column}'; labels present: {', '.join(sorted(seen))}"
        )


def build_targets(spec: TaskSpec, metadata: Mapping[str, np.ndarray]) -> Targets:
    """Build targets for ``spec`` from row-aligned metadata columns (``column -> (n,) str``).

    Rows with an empty target are masked out. Raises :class:`ProbeInputError` naming a missing
    column, an unknown label, or a task left with fewer than two classes.
    """
    if spec.kind not in TaskKind.names():
        raise ProbeInputError(f"unknown task '{spec.kind}': use one of {', '.join(TaskKind.names())}")
    if spec.target not in metadata:
        have = ", ".join(sorted(k for k in metadata if k not in ("id",))) or "none"
        raise ProbeInputError(f"target column '{spec.target}' not found; available columns: {have}")
    col = np.asarray(metadata[spec.target], dtype=object)
    sets = [split_labels(v) for v in col]
    present = np.array([len(s) > 0 for s in sets])
    seen = {lab for s in sets for lab in s}
    if spec.kind == "binary":
        if not spec.positive:
            raise ProbeInputError("a binary task needs --positive VALUE (the label that makes a row positive)")
        _check_known([spec.positive], seen, spec.target)
        mask = present
        y = np.array([int(spec.positive in s) for s, m in zip(sets, mask) if m], dtype=np.int64)
        classes: tuple[str, ...] = (f"not {spec.positive}", spec.positive)
        if len(np.unique(y)) < 2:
            raise ProbeInputError(f"every row of '{spec.target}' contains '{spec.positive}': a binary task needs negatives too")
    elif spec.kind == "multiclass":
        if any(len(s) > 1 for s in sets):
            bad = next(v for v, s in zip(col, sets) if len(s) > 1)
            raise ProbeInputError(f"column '{spec.target}' holds label sets (e.g. {bad!r}): use --task multilabel or a single-label column")
        single = np.array([s[0] if s else "" for s in sets], dtype=object)
        _check_known(spec.labels or (), seen, spec.target)
        keep = set(spec.labels or seen)
        counts = Counter(v for v in single if v in keep)
        keep = {c for c in keep if counts.get(c, 0) >= spec.min_support}
        classes = tuple(sorted(keep))
        if len(classes) < 2:
            raise ProbeInputError(f"column '{spec.target}' leaves {len(classes)} class(es) after --labels/--min-support; need at least 2")
        mask = np.array([v in keep for v in single])
        index = {c: i for i, c in enumerate(classes)}
        y = np.array([index[v] for v in single[mask]], dtype=np.int64)
    else:
        _check_known(spec.labels or (), seen, spec.target)
        labels = list(spec.labels) if spec.labels else sorted(seen)
        counts = Counter(lab for s in sets for lab in s)
        classes = tuple(lab for lab in labels if counts.get(lab, 0) >= spec.min_support)
        if not classes:
            raise ProbeInputError(f"no label of column '{spec.target}' has --min-support {spec.min_support} rows")
        mask = present
        y = np.array([[int(c in s) for c in classes] for s, m in zip(sets, mask) if m], dtype=np.int64).reshape(-1, len(classes))
    return Targets(y=y, classes=classes, kind=spec.kind, mask=np.asarray(mask, dtype=bool))

"""Dataset analysis before probing: label and speaker counts, label co-occurrence, segment durations, fold support.

Input is a manifest (durations from ``start``/``end`` or the audio file's header) or a finished cache (its stored
durations). Output is a folder with ``stats.md``, ``stats.json``, ``cooccurrence.png`` and ``durations.png``.
"""

from __future__ import annotations

from probekit.errors import ProbekitError

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from probekit.choices import Protocol
from probekit.manifest import ManifestError, read_manifest, split_labels
from probekit.probe.splits import make_folds
from probekit.probe.tasks import ProbeInputError, TaskSpec, build_targets
from probekit.report.plots import plot_cooccurrence, plot_durations

class StatsError(ProbekitError, ValueError):
    """The input cannot be analysed as asked; the message names what to fix."""


@dataclass(frozen=True)
class Dataset:
    """Row-aligned view of a manifest or cache.

    ``columns``: label columns, each ``(n,)`` str; ``speakers``: ``(n,)`` str; ``durations``: ``(n,)`` seconds;
    ``split``: ``(n,)`` str or ``None``.
    """

    source: Path
    kind: str
    ids: np.ndarray
    speakers: np.ndarray
    columns: dict[str, np.ndarray]
    durations: np.ndarray
    split: np.ndarray | None = None


@dataclass(frozen=True)
class StatsConfig:
    """What to analyse. ``target``: label column (default: the first ``;``-set column, else the first label column)."""

    path: str
    target: str | None = None
    cv: str = "speaker-kfold"
    folds: int = 5
    seed: int = 0
    out: str | None = None


@dataclass
class StatsReport:
    """``summary``: the JSON-ready numbers; ``files``: name -> written path."""

    summary: dict
    files: dict[str, Path] = field(default_factory=dict)


def _manifest_durations(manifest) -> np.ndarray:
    import soundfile as sf

    lengths: dict[Path, float] = {}
    out = np.zeros(len(manifest.segments), dtype=np.float64)
    for i, seg in enumerate(manifest.segments):
        if seg.start is not None and seg.end is not None:
            out[i] = seg.end - seg.start
            continue
        if seg.path not in lengths:
            try:
                lengths[seg.path] = float(sf.info(str(seg.path)).duration)
            except RuntimeError as exc:
                raise StatsError(f"manifest line {seg.line}: cannot read {seg.path} ({exc})") from exc
        total = lengths[seg.path]
        out[i] = (seg.end if seg.end is not None else total) - (seg.start or 0.0)
    return out


def load_dataset(path: str | Path) -> Dataset:
    """Read a manifest (``.csv``/``.tsv``/``.jsonl``) or a cache (``.h5``) into a :class:`Dataset`."""
    path = Path(path)
    if not path.exists():
        raise StatsError(f"{path} does not exist: pass a manifest (.csv/.tsv/.jsonl) or a cache (.h5)")
    if path.suffix in (".h5", ".hdf5"):
        from probekit.cache import CacheError, EmbeddingCache

        try:
            cache = EmbeddingCache(path)
        except CacheError as exc:
            raise StatsError(str(exc)) from exc
        meta = cache.metadata
        if "speaker" not in meta:
            raise StatsError(f"{path}: the cache stores no speaker column")
        skip = {"speaker", "split", "id"}
        return Dataset(
            source=path,
            kind="cache",
            ids=np.asarray(cache.ids, dtype=str),
            speakers=np.asarray(meta["speaker"], dtype=str),
            columns={k: np.asarray(v, dtype=str) for k, v in meta.items() if k not in skip},
            durations=np.asarray(cache.durations, dtype=np.float64),
            split=np.asarray(meta["split"], dtype=str) if "split" in meta else None,
        )
    try:
        manifest = read_manifest(path)
    except ManifestError as exc:
        raise StatsError(str(exc)) from exc
    cols = manifest.columns()
    return Dataset(
        source=path,
        kind="manifest",
        ids=np.asarray(manifest.ids, dtype=str),
        speakers=np.asarray(cols["speaker"], dtype=str),
        columns={k: np.asarray(cols[k], dtype=str) for k in manifest.label_columns},
        durations=_manifest_durations(manifest),
        split=np.asarray(cols["split"], dtype=str) if "split" in cols else None,
    )


def choose_target(ds: Dataset, target: str | None) -> str:
    """The label column to analyse; an explicit ``target`` must exist."""
    if not ds.columns:
        raise StatsError(f"{ds.source} has no label columns")
    if target is not None:
        if target not in ds.columns:
            raise StatsError(f"--target '{target}' is not a label column of {ds.source}; it has: {', '.join(ds.columns)}")
        return target
    for name, values in ds.columns.items():
        if any(";" in v for v in values):
            return name
    return next(iter(ds.columns))


def label_order(sets: list[list[str]]) -> list[str]:
    """Labels by descending count, ties by name: the order of every table and axis."""
    counts = Counter(lab for s in sets for lab in s)
    return sorted(counts, key=lambda lab: (-counts[lab], lab))


def cooccurrence(y: np.ndarray) -> np.ndarray:
    """``(k, k)`` counts of segments carrying both labels; the diagonal is each label's count."""
    return (y.T @ y).astype(np.int64)


def fold_support(y: np.ndarray, labels: list[str], folds, groups: np.ndarray) -> list[dict]:
    """Per fold: sizes and the least-supported label in train and in test (rows carrying it)."""
    rows = []
    for f, (train, test) in enumerate(folds):
        tr, te = y[train].sum(axis=0), y[test].sum(axis=0)
        rows.append(
            {
                "fold": f,
                "train_segments": int(len(train)),
                "test_segments": int(len(test)),
                "test_speakers": int(len(np.unique(groups[test]))),
                "min_train_support": int(tr.min()),
                "min_train_label": labels[int(tr.argmin())],
                "min_test_support": int(te.min()),
                "min_test_label": labels[int(te.argmin())],
                "labels_absent_from_test": [labels[j] for j in np.flatnonzero(te == 0)],
            }
        )
    return rows


def _md_table(header: list[str], rows: list[list]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return lines


def _markdown(s: dict, labels: list[str], matrix: np.ndarray, files: dict[str, Path]) -> str:
    out = [
        f"# Dataset statistics: {s['source']}",
        "",
        f"{s['segments']} segments, {s['speakers']} speakers, {s['total_hours']:.2f} h of audio; "
        f"target column `{s['target']}` ({'multi-label' if s['multilabel'] else 'single-label'}, {len(labels)} labels).",
        "",
        "## Labels",
        "",
    ]
    out += _md_table(
        ["label", "segments", "share", "speakers", "mean duration (s)"],
        [[r["label"], r["segments"], f"{100 * r['share']:.1f}%", r["speakers"], f"{r['mean_duration']:.2f}"] for r in s["labels"]],
    )
    out += ["", "## Speakers", ""]
    show = labels[:12]
    out += _md_table(
        ["speaker", "segments", "duration (s)"] + show,
        [[r["speaker"], r["segments"], f"{r['duration']:.1f}"] + [r["labels"].get(lab, 0) for lab in show] for r in s["speakers_table"]],
    )
    out += ["", "## Label co-occurrence", "", f"![co-occurrence]({files['cooccurrence'].name})", ""]
    if len(labels) <= 15:
        out += _md_table([""] + labels, [[lab] + [int(v) for v in matrix[i]] for i, lab in enumerate(labels)])
    out += ["", "## Segment durations", "", f"![durations]({files['durations'].name})", ""]
    d = s["durations"]
    out += [f"min {d['min']:.2f} s, median {d['median']:.2f} s, mean {d['mean']:.2f} s, max {d['max']:.2f} s.", ""]
    folds = s["folds"]
    out += [f"## Label support per fold (`--cv {folds['cv']}`, {len(folds['rows'])} folds, seed {folds['seed']})", ""]
    if folds.get("error"):
        out += [f"Folds could not be made: {folds['error']}", ""]
    else:
        out += _md_table(
            ["fold", "train", "test", "test speakers", "min train support", "min test support", "labels absent from test"],
            [
                [r["fold"], r["train_segments"], r["test_segments"], r["test_speakers"],
                 f"{r['min_train_support']} ({r['min_train_label']})", f"{r['min_test_support']} ({r['min_test_label']})",
                 ", ".join(r["labels_absent_from_test"]) or "-"]
                for r in folds["rows"]
            ],
        )
    return "\n".join(out) + "\n"


def dataset_stats(config: StatsConfig) -> StatsReport:
    """Analyse ``config.path`` and write ``stats.md``, ``stats.json`` and two PNGs into ``config.out``.

    Default output folder: ``runs/stats/<input stem>``.
    """
    if config.cv not in Protocol.names():
        raise StatsError(f"unknown --cv '{config.cv}': use one of {', '.join(Protocol.names())}")
    ds = load_dataset(config.path)
    target = choose_target(ds, config.target)
    sets = [split_labels(v) for v in ds.columns[target]]
    present = np.array([len(s) > 0 for s in sets])
    if not present.any():
        raise StatsError(f"column '{target}' of {ds.source} is empty on every row")
    labels = label_order(sets)
    # The probe's own label matrix (rows without a label are all-zero here, so counts include them as none).
    targets = build_targets(TaskSpec("multilabel", target, labels=tuple(labels)), ds.columns)
    y = np.zeros((len(sets), len(labels)), dtype=np.int64)
    y[targets.mask] = targets.y
    matrix = cooccurrence(y)
    multilabel = bool((y.sum(axis=1) > 1).any())

    out = Path(config.out) if config.out else Path("runs") / "stats" / ds.source.stem
    out.mkdir(parents=True, exist_ok=True)
    files = {"cooccurrence": out / "cooccurrence.png", "durations": out / "durations.png"}

    label_rows = []
    for j, lab in enumerate(labels):
        has = y[:, j] == 1
        label_rows.append(
            {
                "label": lab,
                "segments": int(has.sum()),
                "share": float(has.mean()),
                "speakers": int(len(np.unique(ds.speakers[has]))),
                "mean_duration": float(ds.durations[has].mean()),
            }
        )
    speaker_rows = []
    for spk in sorted(np.unique(ds.speakers)):
        rows = ds.speakers == spk
        speaker_rows.append(
            {
                "speaker": str(spk),
                "segments": int(rows.sum()),
                "duration": float(ds.durations[rows].sum()),
                "labels": {lab: int(y[rows, j].sum()) for j, lab in enumerate(labels)},
            }
        )
    folds_info: dict = {"cv": config.cv, "seed": config.seed, "rows": []}
    stratify = y[present] if multilabel else y[present].argmax(axis=1)
    try:
        folds = make_folds(config.cv, ds.speakers[present], stratify, n_folds=config.folds, seed=config.seed,
                           split=ds.split[present] if ds.split is not None else None)
        folds_info["rows"] = fold_support(y[present], labels, folds, ds.speakers[present])
    except ProbeInputError as exc:
        folds_info["error"] = str(exc)

    d = ds.durations
    summary = {
        "source": str(ds.source),
        "kind": ds.kind,
        "target": target,
        "multilabel": multilabel,
        "segments": int(len(ds.ids)),
        "unlabelled_segments": int((~present).sum()),
        "speakers": int(len(np.unique(ds.speakers))),
        "total_hours": float(d.sum() / 3600.0),
        "durations": {"min": float(d.min()), "median": float(np.median(d)), "mean": float(d.mean()), "max": float(d.max())},
        "labels": label_rows,
        "speakers_table": speaker_rows,
        "cooccurrence": {"labels": labels, "matrix": matrix.tolist()},
        "folds": folds_info,
    }
    plot_cooccurrence(matrix, labels, f"Label co-occurrence in '{target}' ({len(ds.ids)} segments, {summary['speakers']} speakers)",
                       files["cooccurrence"])
    plot_durations(d, sets, labels, f"Segment durations per label of '{target}': {ds.source.name}", files["durations"])
    files["markdown"] = out / "stats.md"
    files["markdown"].write_text(_markdown(summary, labels, matrix, files))
    files["json"] = out / "stats.json"
    files["json"].write_text(json.dumps(summary, indent=2) + "\n")
    return StatsReport(summary=summary, files=files)

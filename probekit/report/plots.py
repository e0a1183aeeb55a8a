"""PNG plots of a results document (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _nan(x):
    return np.nan if x is None else x


def plot_layers(doc: dict, out: Path) -> dict[str, Path]:
    """``<metric>_by_layer.png``: headline metric vs layer, one line per (encoder, probe), 95% CI band."""
    head = doc["headline"]["metric"]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    series: dict[tuple[str, str], list[dict]] = {}
    for r in doc["rows"]:
        series.setdefault((r["encoder"], r["probe"]), []).append(r)
    best = {(b["encoder"], b["probe"]): b["layer"] for b in doc["best"]}
    for (enc, probe), rows in series.items():
        rows = sorted(rows, key=lambda r: r["layer"])
        x = np.array([r["layer"] for r in rows])
        v = np.array([_nan(r["metrics"][head]["value"]) for r in rows], dtype=float)
        lo = np.array([_nan(r["metrics"][head]["ci_low"]) for r in rows], dtype=float)
        hi = np.array([_nan(r["metrics"][head]["ci_high"]) for r in rows], dtype=float)
        (line,) = ax.plot(x, v, marker="o", label=f"{enc} / {probe}")
        ax.fill_between(x, lo, hi, color=line.get_color(), alpha=0.15, linewidth=0)
        b = best.get((enc, probe))
        if b is not None and b in x:
            ax.plot([b], [v[list(x).index(b)]], marker="*", markersize=16, color=line.get_color(), markeredgecolor="black")
    ax.set_xlabel("hidden state (layer)")
    ax.set_ylabel(f"{head} (pooled, 95% speaker-bootstrap CI)")
    ax.set_title(f"{doc['task']['kind']} '{doc['task']['target']}' — {doc['config']['cv']}")
    all_layers = sorted({r["layer"] for r in doc["rows"]})
    if len(all_layers) <= 30:
        ax.set_xticks(all_layers)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    path = out / f"{head}_by_layer.png"
    fig.savefig(path)
    plt.close(fig)
    return {path.name: path}


def _best_row(doc: dict, b: dict) -> dict:
    return next(r for r in doc["rows"] if (r["encoder"], r["probe"], r["layer"]) == (b["encoder"], b["probe"], b["layer"]))


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def plot_best_layer(doc: dict, out: Path) -> dict[str, Path]:
    """For each (encoder, probe) best layer: a normalised confusion matrix (multiclass) or per-label F1 bars (multilabel)."""
    kind = doc["task"]["kind"]
    classes = doc["task"]["classes"]
    files: dict[str, Path] = {}
    if kind not in ("multiclass", "multilabel"):
        return files
    for b in doc["best"]:
        row = _best_row(doc, b)
        tag = f"{_slug(b['encoder'])}_{b['probe']}_layer{b['layer']}"
        if kind == "multiclass":
            cm = np.array(row["confusion_matrix"], dtype=float)
            norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
            size = max(4.5, 0.6 * len(classes) + 2)
            fig, ax = plt.subplots(figsize=(size, size * 0.9), dpi=120)
            im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
            for i in range(len(classes)):
                for j in range(len(classes)):
                    ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=8, color="white" if norm[i, j] > 0.6 else "black")
            ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
            ax.set_yticks(range(len(classes)), classes)
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
            fig.colorbar(im, ax=ax, fraction=0.046, label="share of true class")
            ax.set_title(f"{b['encoder']} / {b['probe']}, layer {b['layer']}: {b['metric']} {b['value']:.3f}", fontsize=9)
            name = f"confusion_{tag}.png"
        else:
            f1 = [row["per_label"][c]["f1"] for c in classes]
            support = [row["per_label"][c]["support"] for c in classes]
            fig, ax = plt.subplots(figsize=(max(5, 0.7 * len(classes) + 2), 4), dpi=120)
            bars = ax.bar(range(len(classes)), f1, color="tab:blue")
            for bar, s in zip(bars, support):
                ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.01, f"n={s}", ha="center", fontsize=7)
            ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
            ax.set_ylim(0, 1.08)
            ax.set_ylabel("F1 (pooled)")
            ax.set_title(f"{b['encoder']} / {b['probe']}, layer {b['layer']}: {b['metric']} {b['value']:.3f}", fontsize=9)
            ax.grid(axis="y", alpha=0.3)
            name = f"per_label_f1_{tag}.png"
        fig.tight_layout()
        path = out / name
        fig.savefig(path)
        plt.close(fig)
        files[name] = path
    return files


def plot_sweep_curve(doc: dict, path: Path) -> Path:
    """``layer_curve.png``: headline mean over outer folds per layer, a ±std band, one line per (encoder, probe)."""
    h = doc["headline"]["metric"]
    fig, ax = plt.subplots(figsize=(7, 4))
    for enc, probe in dict.fromkeys((r["encoder"], r["probe"]) for r in doc["rows"]):
        rs = [r for r in doc["rows"] if (r["encoder"], r["probe"]) == (enc, probe)]
        x = np.array([r["layer"] for r in rs])
        y = np.array([r["metrics"][h]["mean"] for r in rs], dtype=float)  # None (undefined) -> NaN: a gap
        s = np.array([r["metrics"][h]["std"] for r in rs], dtype=float)
        # A local checkpoint's encoder id is its full path: its folder name reads better.
        name = Path(enc).name if Path(enc).is_absolute() else enc
        ax.plot(x, y, marker="o", label=f"{name} ({probe}, tuned)")
        ax.fill_between(x, y - s, y + s, alpha=0.2)
    ax.set_xlabel("hidden state (layer)")
    ax.set_ylabel(f"{h} (outer folds, nested CV, mean ± std)")
    layers = sorted({r["layer"] for r in doc["rows"]})
    if len(layers) <= 30:  # whole-number ticks: a hidden state 1.5 does not exist
        ax.set_xticks(layers)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def plot_cooccurrence(matrix: np.ndarray, labels: list[str], title: str, path: Path) -> None:
    """``cooccurrence.png``: a ``(k, k)`` heatmap of segments carrying both labels, counts written in for k <= 20."""
    k = len(labels)
    size = max(5.0, 0.55 * k + 2.5)
    fig, ax = plt.subplots(figsize=(size + 1.2, size))
    im = ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(k), labels, rotation=45, ha="right")
    ax.set_yticks(range(k), labels)
    threshold = matrix.max() / 2 if matrix.size else 0
    if k <= 20:
        for i in range(k):
            for j in range(k):
                ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=8 if k > 10 else 9,
                        color="white" if matrix[i, j] > threshold else "black")
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="segments carrying both labels")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_durations(durations: np.ndarray, sets: list[list[str]], labels: list[str], title: str, path: Path) -> None:
    """``durations.png``: a histogram of segment durations (seconds) and a box per label."""
    per_label = [durations[[lab in s for s in sets]] for lab in labels]
    height = max(4.0, 0.35 * len(labels) + 1.8)
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, height), gridspec_kw={"width_ratios": [1, 1.4]})
    left.hist(durations, bins=40, color="#4C72B0", edgecolor="white")
    left.set_xlabel("segment duration (s)")
    left.set_ylabel("segments")
    left.set_title(f"All segments (n={len(durations)}, median {np.median(durations):.2f} s)")
    # matplotlib 3.10 renamed vert=False to orientation="horizontal" (the old spelling warns from 3.11).
    new_api = tuple(int(x) for x in matplotlib.__version__.split(".")[:2]) >= (3, 10)
    horizontal = {"orientation": "horizontal"} if new_api else {"vert": False}
    right.boxplot(per_label, showfliers=True, flierprops={"markersize": 2, "alpha": 0.4}, **horizontal)
    right.set_yticks(range(1, len(labels) + 1), [f"{lab} (n={len(d)})" for lab, d in zip(labels, per_label)])
    right.invert_yaxis()
    right.set_xlabel("segment duration (s)")
    right.set_title("Per label")
    right.grid(axis="x", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)

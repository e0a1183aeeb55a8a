"""Every plot of a results document, as matplotlib ``Figure`` objects (no pyplot, no global backend).

``*_figure`` functions build a figure from one or more results documents; ``plot_*`` functions and
:func:`saved` write the PNGs of an output folder. The HTML report embeds the same figures as inline SVG.
Layer curves star the best layer, fill the markers of the layers tied with it and leave the others hollow
(docs/report.md).
"""

from __future__ import annotations

import io
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from probekit.oof import ALL_LAYERS
from probekit.report.render import layer_label, layer_name

# One colour per probe, the same in every figure and every report (tab10).
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")


def _nan(x):
    return np.nan if x is None else x


def probe_colours(docs: list[dict]) -> dict[str, str]:
    """A fixed colour per probe name, in order of first appearance across ``docs``."""
    names = dict.fromkeys(r["probe"] for d in docs for r in d["rows"])
    return {p: _PALETTE[i % len(_PALETTE)] for i, p in enumerate(names)}


def headline_stat(doc: dict) -> str:
    """The metric stat layers are ranked by: ``value`` (pooled, probe) or ``mean`` (over outer folds, sweep)."""
    return "mean" if doc["headline"].get("aggregate") == "mean" else "value"


def num_layers(doc: dict, encoder: str) -> int | None:
    """The encoder's number of hidden states, from the document's ``caches`` (``None`` if not listed)."""
    found = (c["num_layers"] for c in doc.get("caches", []) if c.get("encoder") == encoder and c.get("num_layers"))
    return next(map(int, found), None)


def _draw_curves(ax, doc: dict, encoder: str, colours: dict[str, str], relative: bool, label_prefix: str = "", linestyle="-") -> None:
    """One encoder's curves on ``ax``: per probe the headline with its 95% CI band, tied layers filled,
    the best starred; a layer-weighted row as a dashed line. ``relative``: x = layer / (L - 1)."""
    head, stat = doc["headline"]["metric"], headline_stat(doc)
    best = {(b["encoder"], b["probe"]): b for b in doc["best"]}
    L = num_layers(doc, encoder)
    for probe in dict.fromkeys(r["probe"] for r in doc["rows"] if r["encoder"] == encoder):
        rows = sorted((r for r in doc["rows"] if (r["encoder"], r["probe"]) == (encoder, probe)),
                      key=lambda r: r["layer"])
        colour = colours[probe]
        single = [r for r in rows if r["layer"] != ALL_LAYERS]
        whole = [r for r in rows if r["layer"] == ALL_LAYERS]
        if single:
            layers = np.array([r["layer"] for r in single], dtype=float)
            top = (L or int(layers.max()) + 1) - 1
            x = layers / max(top, 1) if relative else layers
            v = np.array([_nan(r["metrics"][head][stat]) for r in single], dtype=float)
            lo = np.array([_nan(r["metrics"][head]["ci_low"]) for r in single], dtype=float)
            hi = np.array([_nan(r["metrics"][head]["ci_high"]) for r in single], dtype=float)
            ax.plot(x, v, color=colour, linewidth=1.8, linestyle=linestyle, label=f"{label_prefix}{probe}")
            ax.fill_between(x, lo, hi, color=colour, alpha=0.15, linewidth=0)
            tied = np.array([bool(r.get("tied_with_best", False)) for r in single])
            ax.scatter(x[tied], v[tied], s=46, color=colour, edgecolors="black", linewidths=0.6, zorder=3)
            ax.scatter(x[~tied], v[~tied], s=30, facecolors="white", edgecolors=colour, linewidths=1.2, zorder=3)
            b = best.get((encoder, probe))
            if b is not None and b["layer"] != ALL_LAYERS and b["layer"] in layers:
                k = int(np.flatnonzero(layers == b["layer"])[0])
                ax.scatter([x[k]], [v[k]], marker="*", s=220, color=colour, edgecolors="black", linewidths=0.8, zorder=4)
        for r in whole:
            s = r["metrics"][head]
            xs = [0.0, 1.0] if relative else [0, (L or 1) - 1]
            ax.plot(xs, [_nan(s[stat])] * 2, color=colour, linestyle="--", linewidth=1.8, label=f"{label_prefix}{probe} (all layers)")
            if s.get("ci_low") is not None and s.get("ci_high") is not None:
                ax.fill_between(xs, [s["ci_low"]] * 2, [s["ci_high"]] * 2, color=colour, alpha=0.08, linewidth=0)
    if not relative and L and L <= 30:
        ax.set_xticks(range(L))  # whole-number ticks: a hidden state 1.5 does not exist
    ax.grid(alpha=0.3)


def _ylabel(doc: dict) -> str:
    head = doc["headline"]["metric"]
    return f"{head} (mean over outer folds)" if headline_stat(doc) == "mean" else f"{head} (pooled, 95% speaker-bootstrap CI)"


def layers_figure(doc: dict) -> Figure:
    """Headline metric vs hidden state, one line per (encoder, probe), 95% CI bands, tied layers filled, best starred."""
    fig = Figure(figsize=(7, 4.2), dpi=120)
    ax = fig.add_subplot()
    colours = probe_colours([doc])
    encoders = list(dict.fromkeys(r["encoder"] for r in doc["rows"]))
    styles = ("-", ":", "-.", (0, (5, 1)))
    for i, enc in enumerate(encoders):
        prefix = f"{enc} / " if len(encoders) > 1 else ""
        _draw_curves(ax, doc, enc, colours, relative=False, label_prefix=prefix, linestyle=styles[i % len(styles)])
    ax.set_xlabel("hidden state (layer)")
    ax.set_ylabel(_ylabel(doc))
    ax.set_title(f"{doc['task']['kind']} '{doc['task']['target']}' — {doc['config'].get('cv', '')}  (★ best, ● tied with best, ○ worse)", fontsize=9)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    return fig


def depth_curves_figure(runs: list[tuple[str, dict]]) -> Figure:
    """One panel per (run, encoder), side by side on a shared relative-depth axis (layer / (L - 1),
    0 = the embedding output, 1 = the last layer) and a shared metric axis, so encoders of different
    depth line up. ``runs``: ``(label, results document)`` pairs; the label prefixes panel titles when
    there are several runs."""
    panels = [(label, doc, enc) for label, doc in runs for enc in dict.fromkeys(r["encoder"] for r in doc["rows"])]
    n = max(len(panels), 1)
    cols = min(n, 3)
    rows = (n + cols - 1) // cols
    # One metric axis only when every run ranks by the same metric: UAR beside F1 on one scale invites a false comparison.
    same_metric = len({d["headline"]["metric"] for _l, d in runs}) <= 1
    fig = Figure(figsize=(4.2 * cols + 0.6, 3.4 * rows + 0.5), dpi=110)
    axes = fig.subplots(rows, cols, sharex=True, sharey=same_metric, squeeze=False).ravel()
    colours = probe_colours([d for _l, d in runs])
    for ax, (label, doc, enc) in zip(axes, panels):
        _draw_curves(ax, doc, enc, colours, relative=True)
        L = num_layers(doc, enc)
        ax.set_title((f"{label}: " if len(runs) > 1 else "") + enc + (f" ({L} hidden states)" if L else ""), fontsize=9)
        ax.set_xlim(-0.04, 1.04)
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    for ax in axes[(rows - 1) * cols :]:
        ax.set_xlabel("relative depth (layer / last layer)")
    for k, (ax, (_label, doc, _enc)) in enumerate(zip(axes, panels)):
        if not same_metric or k % cols == 0:
            ax.set_ylabel(_ylabel(doc), fontsize=8)
    legend: dict[str, object] = {}  # label -> the first handle drawn with it
    for ax in axes[: len(panels)]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            legend.setdefault(lab, h)
    if legend:
        fig.legend(list(legend.values()), list(legend), loc="lower center", ncol=min(len(legend), 5), fontsize=8,
                   frameon=False)
    fig.tight_layout(rect=(0, 0.07 if legend else 0, 1, 1))
    return fig


def layer_weights_figure(runs: list[tuple[str, dict]]) -> Figure | None:
    """Learned layer weights of every layer-weighted row (mean ± std over folds) on the relative-depth
    axis, one bar group per encoder; ``None`` when no row has ``layer_weights``."""
    entries = [(label, doc, r) for label, doc in runs for r in doc["rows"] if r.get("layer_weights")]
    if not entries:
        return None
    fig = Figure(figsize=(7, 3.6), dpi=110)
    ax = fig.add_subplot()
    width = 0.8 / len(entries)
    for i, (label, _doc, r) in enumerate(entries):
        w = np.asarray(r["layer_weights"], dtype=float)
        sd = np.asarray(r.get("layer_weights_std") or np.zeros_like(w), dtype=float)
        x = np.arange(len(w)) / max(len(w) - 1, 1)
        step = 1 / max(len(w) - 1, 1)
        name = (f"{label}: " if len(runs) > 1 else "") + f"{r['encoder']} / {r['probe']}"
        ax.bar(x + (i - (len(entries) - 1) / 2) * width * step, w, width=width * step, yerr=sd, capsize=2,
               color=_PALETTE[i % len(_PALETTE)], alpha=0.85, label=name)
    ax.axhline(0, color="black", linewidth=0.6)
    ax.set_xlabel("relative depth (layer / last layer)")
    ax.set_ylabel("softmax layer weight (mean ± std over folds)")
    ax.set_title("What the layer-weighted probe learned", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    # Below the axes: a weight near 1 would sit under a legend inside them.
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    fig.tight_layout()
    return fig


def reliability_figure(runs: list[tuple[str, dict]]) -> Figure | None:
    """Reliability diagram of every ``best`` entry with a ``calibration`` block: observed rate vs mean
    predicted probability per bin (marker area ~ count), the diagonal, ECE in the legend; ``None`` if none."""
    entries = [(label, b) for label, doc in runs for b in doc["best"] if b.get("calibration")]
    if not entries:
        return None
    fig = Figure(figsize=(5.2, 4.6), dpi=110)
    ax = fig.add_subplot()
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1, label="perfectly calibrated")
    for i, (label, b) in enumerate(entries):
        c = b["calibration"]
        bins = [x for x in c["bins"] if x["count"]]
        mp = np.array([x["mean_predicted"] for x in bins])
        ob = np.array([x["observed"] for x in bins])
        cnt = np.array([x["count"] for x in bins], dtype=float)
        name = (f"{label}: " if len(runs) > 1 else "") + f"{b['encoder']} / {b['probe']} L{b['layer']}: ECE {c['ece']:.3f}"
        colour = _PALETTE[i % len(_PALETTE)]
        ax.plot(mp, ob, color=colour, linewidth=1.4, label=name)
        ax.scatter(mp, ob, s=12 + 200 * cnt / cnt.max(), color=colour, alpha=0.7, edgecolors="black", linewidths=0.4)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("mean predicted probability (bin)")
    ax.set_ylabel("observed rate")
    ax.set_title("Reliability at the best layer (out-of-fold)", fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return fig


def best_row(doc: dict, b: dict) -> dict:
    """The row of ``best`` entry ``b``."""
    return next(r for r in doc["rows"] if (r["encoder"], r["probe"], r["layer"]) == (b["encoder"], b["probe"], b["layer"]))


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


def best_layer_figure(doc: dict, b: dict) -> Figure | None:
    """The ``best`` entry ``b``'s row: a row-normalised confusion matrix (multiclass) or per-label F1 bars
    (multilabel); ``None`` for binary tasks or rows without them (a sweep resumed from an old store)."""
    kind = doc["task"]["kind"]
    classes = doc["task"]["classes"]
    row = best_row(doc, b)
    title = f"{b['encoder']} / {b['probe']}, {layer_name(b['layer'])}: {b['metric']} {_nan(b['value']):.3f}"
    if kind == "multiclass" and row.get("confusion_matrix"):
        cm = np.array(row["confusion_matrix"], dtype=float)
        norm = cm / np.maximum(cm.sum(1, keepdims=True), 1)
        size = max(4.5, 0.6 * len(classes) + 2)
        fig = Figure(figsize=(size, size * 0.9), dpi=120)
        ax = fig.add_subplot()
        im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        for i in range(len(classes)):
            for j in range(len(classes)):
                ax.text(j, i, f"{int(cm[i, j])}", ha="center", va="center", fontsize=8, color="white" if norm[i, j] > 0.6 else "black")
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
        ax.set_yticks(range(len(classes)), classes)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        fig.colorbar(im, ax=ax, fraction=0.046, label="share of true class")
    elif kind == "multilabel" and row.get("per_label"):
        f1 = [_nan(row["per_label"][c]["f1"]) for c in classes]
        support = [row["per_label"][c]["support"] for c in classes]
        fig = Figure(figsize=(max(5, 0.7 * len(classes) + 2), 4), dpi=120)
        ax = fig.add_subplot()
        bars = ax.bar(range(len(classes)), f1, color=_PALETTE[0])
        for bar, s in zip(bars, support):
            ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.01, f"n={s}", ha="center", fontsize=7)
        ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
        ax.set_ylim(0, 1.08)
        ax.set_ylabel("F1 (pooled)")
        ax.grid(axis="y", alpha=0.3)
    else:
        return None
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def figure_svg(fig: Figure) -> str:
    """The figure as an inline ``<svg>`` element (text kept as text, no external references)."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", metadata={"Date": None})
    svg = buf.getvalue()
    return svg[svg.index("<svg") :]


def saved(fig: Figure | None, path: Path) -> dict[str, Path]:
    """``{name: path}`` after saving ``fig`` there; nothing when there is no figure to draw."""
    if fig is None:
        return {}
    fig.savefig(path)
    return {path.name: path}


def plot_best_layer(doc: dict, out: Path) -> dict[str, Path]:
    """For each (encoder, probe) best layer: ``confusion_<tag>.png`` (multiclass) or ``per_label_f1_<tag>.png`` (multilabel)."""
    files: dict[str, Path] = {}
    prefix = {"multiclass": "confusion", "multilabel": "per_label_f1"}.get(doc["task"]["kind"])
    if prefix is None:
        return files
    for b in doc["best"]:
        name = f"{prefix}_{_slug(b['encoder'])}_{b['probe']}_layer{layer_label(b['layer'])}.png"
        files.update(saved(best_layer_figure(doc, b), out / name))
    return files


def plot_sweep_curve(doc: dict, path: Path) -> Path:
    """``layer_curve.png``: headline mean over outer folds per layer, a ±std band, one line per (encoder, probe)."""
    h = doc["headline"]["metric"]
    fig = Figure(figsize=(7, 4))
    ax = fig.add_subplot()
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
    return path


def plot_cooccurrence(matrix: np.ndarray, labels: list[str], title: str, path: Path) -> None:
    """``cooccurrence.png``: a ``(k, k)`` heatmap of segments carrying both labels, counts written in for k <= 20."""
    k = len(labels)
    size = max(5.0, 0.55 * k + 2.5)
    fig = Figure(figsize=(size + 1.2, size))
    ax = fig.add_subplot()
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


def plot_durations(durations: np.ndarray, sets: list[list[str]], labels: list[str], title: str, path: Path) -> None:
    """``durations.png``: a histogram of segment durations (seconds) and a box per label."""
    per_label = [durations[[lab in s for s in sets]] for lab in labels]
    height = max(4.0, 0.35 * len(labels) + 1.8)
    fig = Figure(figsize=(12, height))
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.4]})
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

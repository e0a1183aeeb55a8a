"""``probekit report``: one self-contained HTML page for one or more results folders.

The page needs no network: figures are inline SVG (matplotlib), styles are inline CSS, there is
no script. docs/report.md lists its sections and the results fields each is drawn from.
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from pathlib import Path

from probekit.choices import SCALAR_METRICS
from probekit.errors import ProbekitError
from probekit.oof import ALL_LAYERS
from probekit.report.plots import (
    best_layer_figure,
    best_row,
    depth_curves_figure,
    figure_svg,
    headline_stat,
    layer_weights_figure,
    probe_colours,
    reliability_figure,
)
from probekit.report.render import fmt, fmt_p, layer_label, layer_name, protocol_facts, tie_mark, tie_method
from probekit.results import ResultsSchemaError, load_results, now_iso

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#1d1d1f;background:#fafafa}
main{max-width:1180px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:1.55em;margin:0 0 4px}h2{font-size:1.2em;margin:34px 0 10px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:1.02em;margin:20px 0 6px}.muted{color:#666;font-size:.9em}
table{border-collapse:collapse;font-size:.86em;margin:6px 0 12px;background:#fff}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:right;vertical-align:top}th{background:#f0f0f3}
td.l,th.l{text-align:left}tr.best td{font-weight:600;background:#e9f6ec}tr.tied td{background:#f3fbf5}
.fig{background:#fff;border:1px solid #e3e3e3;padding:6px;margin:8px 0;overflow-x:auto}.fig svg{max-width:100%;height:auto}
.row{display:flex;flex-wrap:wrap;gap:14px}.row>div{flex:1 1 420px}
dl.facts{display:grid;grid-template-columns:max-content 1fr;gap:3px 14px;font-size:.88em;margin:6px 0}
dl.facts dt{font-weight:600;color:#444}dl.facts dd{margin:0;word-break:break-all}
.swatch{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:4px;vertical-align:middle}
details{margin:8px 0}summary{cursor:pointer;color:#333}
"""


class ReportError(ProbekitError):
    """A run folder cannot be reported: no results.json, or an unreadable one; the message names the path."""


@dataclass(frozen=True)
class Run:
    """One results folder: ``label`` (its name), its results document, and ``stats`` (``stats.json`` content or ``None``)."""

    label: str
    path: Path
    doc: dict
    stats: dict | None = None


def _find_stats(folder: Path) -> Path | None:
    candidates = (folder / "stats.json", folder / "stats" / "stats.json", folder.parent / "stats" / "stats.json")
    return next((c for c in candidates if c.is_file()), None)


def load_run(path: str | Path, stats: str | Path | None = None) -> Run:
    """A run from a results folder (or its ``results.json``); ``stats``: a ``stats.json`` to use (default:
    ``stats.json`` in the folder, in its ``stats/`` subfolder, or in ``../stats/``)."""
    path = Path(path)
    results = path if path.suffix == ".json" else path / "results.json"
    if not results.is_file():
        raise ReportError(f"{path}: no results.json there; give the output folder of `probekit probe` or `probekit sweep`")
    try:
        doc = load_results(results)
    except ResultsSchemaError as exc:
        raise ReportError(f"{results}: {exc}") from None
    stats_path = Path(stats) if stats else _find_stats(results.parent)
    summary = None
    if stats_path is not None:
        try:
            summary = json.loads(stats_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ReportError(f"{stats_path}: not a readable stats.json ({exc}); rerun `probekit stats`") from None
    return Run(label=results.parent.name, path=results.parent, doc=doc, stats=summary)


def _e(x) -> str:
    return html.escape(str(x))


def _table(header: list[str], rows: list[list], classes: list[str] | None = None, left: int = 1) -> str:
    """An HTML table; the first ``left`` columns left-aligned; ``classes``: a CSS class per row."""
    th = "".join(f'<th class="l">{_e(h)}</th>' if i < left else f"<th>{_e(h)}</th>" for i, h in enumerate(header))
    body = []
    for k, row in enumerate(rows):
        cls = f' class="{classes[k]}"' if classes and classes[k] else ""
        tds = "".join(f'<td class="l">{_e(c)}</td>' if i < left else f"<td>{_e(c)}</td>" for i, c in enumerate(row))
        body.append(f"<tr{cls}>{tds}</tr>")
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _figure(fig) -> str:
    return f'<div class="fig">{figure_svg(fig)}</div>' if fig is not None else ""


def _dataset(run: Run) -> str:
    s = run.stats
    if s is None:
        rows = [[c["encoder"], c.get("n_rows_used", "–"), c.get("n_speakers", "–"), c.get("n_rows", "–")] for c in run.doc["caches"]]
        return (
            '<p class="muted">No stats.json found (run <code>probekit stats</code> on the manifest and pass <code>--stats</code>); '
            "what the results document says:</p>"
            + _table(["cache", "rows used", "speakers", "rows in cache"], rows)
            + f"<p>Classes: {_e(', '.join(run.doc['task']['classes']))}</p>"
        )
    d = s.get("durations", {})
    head = (
        f"<p>{s['segments']} segments, {s['speakers']} speakers, {s['total_hours']:.2f} h; target <code>{_e(s['target'])}</code>"
        + (f"; durations median {d['median']:.2f} s (min {d['min']:.2f}, max {d['max']:.2f})" if d else "")
        + f'. <span class="muted">From {_e(s.get("source", "stats.json"))}.</span></p>'
    )
    rows = [[r["label"], r["segments"], f"{100 * r['share']:.1f}%", r["speakers"], f"{r['mean_duration']:.2f}"] for r in s.get("labels", [])]
    return head + _table(["label", "segments", "share", "speakers", "mean duration (s)"], rows)


def _protocol(run: Run) -> str:
    items = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in protocol_facts(run.doc))
    return f'<dl class="facts">{items}</dl>'


def _tied_table(run: Run, colours: dict[str, str]) -> str:
    doc = run.doc
    head, stat = doc["headline"]["metric"], headline_stat(doc)
    rows = []
    for b in doc["best"]:
        row = best_row(doc, b)
        s = row["metrics"][head]
        if b["layer"] == ALL_LAYERS:
            tied = "– (one entry over all layers)"
        else:
            tied = ", ".join(layer_label(t) for t in b["tied"]) if "tied" in b else "not tested"
        rows.append([b["encoder"], b["probe"], layer_label(b["layer"]), fmt(s[stat]), f"[{fmt(s['ci_low'])}, {fmt(s['ci_high'])}]", tied])
    swatches = " ".join(f'<span class="swatch" style="background:{c}"></span>{_e(p)}' for p, c in colours.items())
    method = tie_method(doc)
    note = f'<p class="muted">{_e(method[0].upper() + method[1:])}.</p>' if method else '<p class="muted">No tied sets in this results.json (written before probekit computed them, or with --bootstrap 0).</p>'
    return f"<p>{swatches}</p>" + _table(["encoder", "probe", "best layer", head, "95% CI", "tied with best"], rows, left=2) + note


def _encoder_comparison(run: Run) -> str:
    parts = []
    for comp in run.doc.get("encoder_comparison", []):
        rows = [
            [e["encoder"], layer_label(e["layer"]), fmt(e["value"]), fmt(e["diff"]), f"[{fmt(e['diff_ci'][0])}, {fmt(e['diff_ci'][1])}]", fmt_p(e["p_adjusted"]), "yes" if e["tied"] else "no"]
            for e in comp["entries"]
        ]
        classes = ["best" if i == comp["best"] else "tied" if e["tied"] else "" for i, e in enumerate(comp["entries"])]
        parts.append(
            f"<h3>{_e(comp['entries'][0]['probe'])}: {comp['n_rows']} common rows, {comp['n_speakers']} speakers</h3>"
            + _table(["encoder", "layer", comp["metric"], "worse than best by", "95% CI", "p (Holm)", "tied"], rows, classes)
        )
    return "".join(parts)


def _weights_table(run: Run) -> str:
    parts = []
    for r in run.doc["rows"]:
        if not r.get("layer_weights"):
            continue
        sd = r.get("layer_weights_std") or [None] * len(r["layer_weights"])
        rows = [[i, fmt(w), fmt(e)] for i, (w, e) in enumerate(zip(r["layer_weights"], sd))]
        parts.append(f"<details><summary>{_e(r['encoder'])} / {_e(r['probe'])}: weights per layer</summary>" + _table(["layer", "weight", "std over folds"], rows) + "</details>")
    return "".join(parts)


def _best_layer(run: Run) -> str:
    doc = run.doc
    kind, classes = doc["task"]["kind"], doc["task"]["classes"]
    parts = []
    for b in doc["best"]:
        row = best_row(doc, b)
        title = f"<h3>{_e(b['encoder'])} / {_e(b['probe'])}, {_e(layer_name(b['layer']))}</h3>"
        if kind == "multilabel" and row.get("per_label"):
            rows = [[c, fmt(row["per_label"][c]["precision"]), fmt(row["per_label"][c]["recall"]), fmt(row["per_label"][c]["f1"]), row["per_label"][c]["support"]] for c in classes]
            parts.append(f"<div>{title}" + _table(["label", "precision", "recall", "F1", "support"], rows) + "</div>")
        elif kind == "multiclass":
            parts.append(f"<div>{title}{_figure(best_layer_figure(doc, b))}</div>")
        else:
            names = SCALAR_METRICS[kind]
            parts.append(f"<div>{title}" + _table(["metric", "pooled", "95% CI"], [[n, fmt(row["metrics"][n]["value"]), f"[{fmt(row['metrics'][n]['ci_low'])}, {fmt(row['metrics'][n]['ci_high'])}]"] for n in names]) + "</div>")
    return f'<div class="row">{"".join(parts)}</div>'


def _calibration(runs: list[Run]) -> str:
    pairs = [(r.label, r.doc) for r in runs]
    fig = reliability_figure(pairs)
    if fig is None:
        kinds = {r.doc["task"]["kind"] for r in runs}
        why = "multiclass tasks report no calibration" if kinds == {"multiclass"} else "no calibration block in results.json (written before probekit measured it)"
        return f'<p class="muted">Not shown: {why}.</p>'
    rows = []
    for run in runs:
        cfg = run.doc.get("config", {})
        for b in run.doc["best"]:
            c = b.get("calibration")
            if c:
                per = ", ".join(f"{k} {fmt(v)}" for k, v in (c.get("per_label") or {}).items())
                rows.append([run.label, b["encoder"], b["probe"], layer_label(b["layer"]), fmt(c["ece"]), c["n_bins"], cfg.get("calibrate") or "none", per])
    return (
        f'<div class="row"><div>{_figure(fig)}</div><div>'
        + _table(["run", "encoder", "probe", "layer", "ECE", "bins", "calibration", "ECE per label"], rows, left=3)
        + '<p class="muted">ECE: count-weighted mean gap between predicted probability and observed rate over equal-width bins, '
        "on the out-of-fold predictions of the best layer.</p></div></div>"
    )


def _all_metrics(run: Run) -> str:
    doc = run.doc
    kind, stat = doc["task"]["kind"], headline_stat(doc)
    names = SCALAR_METRICS[kind]
    rows, classes = [], []
    for r in doc["rows"]:
        rows.append([r["encoder"], r["probe"], layer_label(r["layer"])] + [fmt(r["metrics"][n][stat]) for n in names] + [fmt_p(r.get("p_vs_best"))])
        classes.append({"★": "best", "=": "tied"}.get(tie_mark(doc, r), ""))
    return "<details><summary>Every metric of every row</summary>" + _table(["encoder", "probe", "layer", *names, "p vs best"], rows, classes, left=2) + "</details>"


def html_report(runs: list[Run]) -> str:
    """The whole page for ``runs`` as one HTML string (inline SVG and CSS, no scripts, no external references)."""
    if not runs:
        raise ReportError("give at least one results folder")
    pairs = [(r.label, r.doc) for r in runs]
    colours = probe_colours([r.doc for r in runs])
    tasks = sorted({f"{r.doc['task']['kind']} '{r.doc['task']['target']}'" for r in runs})
    body = [
        f"<h1>probekit report: {_e(', '.join(tasks))}</h1>",
        f'<p class="muted">{len(runs)} run(s): {_e(", ".join(str(r.path) for r in runs))}. Generated {_e(now_iso())}.</p>',
        "<h2>Layer curves</h2>",
        '<p class="muted">Headline metric per hidden state on a relative depth axis (0 = embedding output, 1 = last layer), '
        "95% speaker-bootstrap CI bands. ★ best layer; ● filled: tied with the best; ○ hollow: worse than the best; "
        "dashed: a probe over all layers.</p>",
        _figure(depth_curves_figure(pairs)),
    ]
    weights = layer_weights_figure(pairs)
    for run in runs:
        prefix = f"{run.label}: " if len(runs) > 1 else ""
        body += [f"<h2>{_e(prefix)}Tied layers</h2>", _tied_table(run, colours), _encoder_comparison(run)]
    if weights is not None:
        body += ["<h2>Layer weights</h2>", _figure(weights)] + [_weights_table(r) for r in runs]
    for run in runs:
        prefix = f"{run.label}: " if len(runs) > 1 else ""
        body += [f"<h2>{_e(prefix)}Best layer</h2>", _best_layer(run)]
    body += ["<h2>Calibration</h2>", _calibration(runs)]
    for run in runs:
        prefix = f"{run.label}: " if len(runs) > 1 else ""
        body += [f"<h2>{_e(prefix)}Dataset</h2>", _dataset(run), f"<h2>{_e(prefix)}Protocol</h2>", _protocol(run), _all_metrics(run)]
    title = _e("probekit report: " + ", ".join(tasks))
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>{_CSS}</style></head><body><main>{''.join(body)}</main></body></html>\n"
    )


def write_html_report(run_dirs: list[str | Path], out: str | Path, stats: str | Path | None = None) -> Path:
    """Write the report of ``run_dirs`` (results folders) to ``out``; ``stats``: a ``stats.json`` for every run."""
    runs = [load_run(d, stats) for d in run_dirs]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html_report(runs), encoding="utf-8")
    return out


__all__ = ["ReportError", "Run", "html_report", "load_run", "write_html_report"]

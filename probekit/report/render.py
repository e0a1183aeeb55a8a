"""Human-readable views of a results document: ``report.md``, a rich table, and a rich progress bar."""

from __future__ import annotations

from pathlib import Path

from probekit.choices import SCALAR_METRICS


def _fmt(x) -> str:
    return "–" if x is None else f"{x:.3f}"


def _best_set(doc: dict) -> set[tuple[str, str, int]]:
    return {(b["encoder"], b["probe"], b["layer"]) for b in doc["best"]}


def report_markdown(doc: dict, plots: list[str] = ()) -> str:
    """Markdown: task, protocol, the headline table (best layer in bold, marked ★), all metrics, plots."""
    task, cfg = doc["task"], doc["config"]
    head = doc["headline"]["metric"]
    kind = task["kind"]
    best = _best_set(doc)
    lines = [
        f"# probekit probe: {kind} `{task['target']}`" + (f" (positive: `{task['positive']}`)" if task.get("positive") else ""),
        "",
        f"- protocol: `{cfg['cv']}`" + (f", {cfg['folds']} folds" if cfg["cv"] == "speaker-kfold" else "") + f", seed {cfg['seed']}",
        f"- classes: {', '.join(task['classes'])}",
        f"- headline: `{head}`, pooled over all out-of-fold predictions; mean ± std over folds; 95% CI resamples speakers ({cfg['bootstrap']} draws)",
        f"- created {doc['created']} with probekit {doc['versions']['probekit']}",
        "",
        "## Caches",
        "",
        "| encoder | path | layers | dim | rows used | speakers | missing from manifest |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in doc["caches"]:
        lines.append(
            f"| {c['encoder']} | `{c['path']}` | {c['num_layers']} | {c['dim']} | {c['n_rows_used']} | {c['n_speakers']} | {c['missing_from_manifest']['count']} |"
        )
    lines += ["", f"## {head} per layer (★ = best layer per encoder and probe)", "", f"| encoder | probe | layer | {head} | mean ± std over folds | 95% CI |", "|---|---|---|---|---|---|"]
    for r in doc["rows"]:
        s = r["metrics"][head]
        mark = (r["encoder"], r["probe"], r["layer"]) in best
        v = f"**{_fmt(s['value'])}** ★" if mark else _fmt(s["value"])
        lines.append(f"| {r['encoder']} | {r['probe']} | {r['layer']} | {v} | {_fmt(s['mean'])} ± {_fmt(s['std'])} | [{_fmt(s['ci_low'])}, {_fmt(s['ci_high'])}] |")
    names = SCALAR_METRICS[kind]
    lines += ["", "## All metrics (pooled)", "", "| encoder | probe | layer | " + " | ".join(names) + " |", "|---" * (3 + len(names)) + "|"]
    for r in doc["rows"]:
        lines.append(f"| {r['encoder']} | {r['probe']} | {r['layer']} | " + " | ".join(_fmt(r["metrics"][n]["value"]) for n in names) + " |")
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def write_report(doc: dict, path: Path, plots: list[str] = ()) -> Path:
    path.write_text(report_markdown(doc, plots), encoding="utf-8")
    return path


def rich_table(doc: dict):
    """A rich Table of the headline metric per (encoder, probe, layer), best layer highlighted."""
    from rich.table import Table

    head = doc["headline"]["metric"]
    best = _best_set(doc)
    t = Table(title=f"{doc['task']['kind']} '{doc['task']['target']}': {head} per layer (★ best)")
    for col in ("encoder", "probe", "layer", head, "mean ± std", "95% CI"):
        t.add_column(col, justify="right" if col not in ("encoder", "probe") else "left")
    for r in doc["rows"]:
        s = r["metrics"][head]
        mark = (r["encoder"], r["probe"], r["layer"]) in best
        t.add_row(
            r["encoder"], r["probe"], str(r["layer"]) + (" ★" if mark else ""), _fmt(s["value"]),
            f"{_fmt(s['mean'])} ± {_fmt(s['std'])}", f"[{_fmt(s['ci_low'])}, {_fmt(s['ci_high'])}]",
            style="bold green" if mark else None,
        )
    return t


def timing_line(doc: dict) -> str:
    """``time per probe: logreg 12.3 s, mlp 40.1 s`` from the document's timing block (fits and predictions)."""
    per = (doc.get("timing") or {}).get("seconds_per_probe") or {}
    return "time per probe: " + ", ".join(f"{k} {v:.1f} s" for k, v in per.items()) if per else ""

"""Human-readable views of a results document: ``report.md`` (for papers), a rich table, and the protocol facts the HTML report shares."""

from __future__ import annotations

import math

from probekit.choices import SCALAR_METRICS
from probekit.oof import ALL_LAYERS


def fmt(x) -> str:
    """Three decimals; "–" for an undefined number (None, or NaN in a document not yet written)."""
    return "–" if x is None or not math.isfinite(x) else f"{x:.3f}"


def fmt_p(x) -> str:
    return "–" if x is None else ("<0.001" if x < 0.001 else f"{x:.3f}")


def layer_label(layer: int) -> str:
    """A row's layer as shown in a table: the hidden-state index, or ``all`` for a layer-weighted probe (-1)."""
    return "all" if layer == ALL_LAYERS else str(layer)


def layer_name(layer: int) -> str:
    """A row's layer as named in a title: ``layer 3``, or ``all layers`` for a layer-weighted probe."""
    return "all layers" if layer == ALL_LAYERS else f"layer {layer}"


def tie_mark(doc: dict, row: dict) -> str:
    """``★`` best, ``=`` tied with the best (not distinguishable), ``""`` otherwise or when not tested."""
    if any((row["encoder"], row["probe"], row["layer"]) == (b["encoder"], b["probe"], b["layer"]) for b in doc["best"]):
        return "★"
    return "=" if row.get("tied_with_best") else ""


def tie_method(doc: dict) -> str | None:
    """How the tied sets were decided, in words, from the first ``best`` entry that has them."""
    for b in doc["best"]:
        c = b.get("comparison")
        if c:
            return (
                f"layers marked = are not distinguishable from the best (★) by a {c['method']} of the {doc['headline']['metric']} "
                f"difference on the same out-of-fold rows ({c['n_boot']} resamples), {c['correction'].capitalize()}-corrected "
                f"over the layers at family-wise level {c['level']}"
            )
    return None


def protocol_facts(doc: dict) -> list[tuple[str, str]]:
    """What a reader needs to reproduce or judge the numbers, as ``(name, value)`` pairs: task, folds,
    speakers, seeds, probes and their parameters, and per cache its model, Whisper mode, pooling,
    dtype and fingerprint. Missing fields (older documents) are left out."""
    task, cfg, seeds = doc["task"], doc.get("config", {}), doc.get("seeds", {})
    facts = [("task", f"{task['kind']} '{task['target']}'" + (f" (positive: '{task['positive']}')" if task.get("positive") else ""))]
    facts.append(("classes", ", ".join(task.get("classes", []))))
    cv = cfg.get("cv") or (doc.get("sweep") or {}).get("protocol", {}).get("cv")
    if cv:
        folds = {c.get("n_folds") for c in doc.get("caches", [])} - {None}
        facts.append(("protocol", f"{cv}" + (f", {', '.join(map(str, sorted(folds)))} folds" if folds else "")))
    speakers = [f"{c['encoder']}: {c['n_speakers']} speakers, {c['n_rows_used']} rows" for c in doc.get("caches", []) if "n_speakers" in c]
    if speakers:
        facts.append(("speakers and rows", "; ".join(speakers)))
    facts.append(("seeds", ", ".join(f"{k} {v}" for k, v in seeds.items() if v is not None)))
    head = doc["headline"]
    facts.append(("headline", f"{head['metric']}, " + ("mean over outer folds" if head.get("aggregate") == "mean" else "pooled over all out-of-fold predictions")))
    if cfg.get("bootstrap"):
        facts.append(("confidence intervals", f"95%, {cfg['bootstrap']} speaker resamples"))
    if cfg.get("probe_params"):
        facts.append(("probes", "; ".join(f"{p} " + ", ".join(f"{k}={v}" for k, v in sorted(ps.items())) for p, ps in cfg["probe_params"].items())))
    for flag in ("tune_thresholds", "class_weight", "calibrate"):
        if cfg.get(flag):
            facts.append((flag.replace("_", " "), str(cfg[flag])))
    method = tie_method(doc)
    if method:
        facts.append(("tied layers", method))
    for c in doc.get("caches", []):
        ident = c.get("identity") or {}
        parts = [f"model {c['model']}"] if c.get("model") else []
        parts += [f"{k.replace('_', ' ')} {ident[k]}" for k in ("whisper_mode", "pooling", "dtype", "revision") if ident.get(k)]
        if not ident.get("dtype") and c.get("dtype"):
            parts.append(f"dtype {c['dtype']}")
        parts.append(f"{c.get('num_layers')} hidden states x {c.get('dim')}")
        if c.get("fingerprint"):
            parts.append(f"fingerprint {c['fingerprint']}")
        facts.append((f"cache {c['encoder']}", ", ".join(parts)))
    versions = doc.get("versions") or {}
    if versions:
        facts.append(("software", ", ".join(f"{k} {v}" for k, v in versions.items())))
    facts.append(("created", str(doc.get("created", ""))))
    return facts


def report_markdown(doc: dict, plots: list[str] = ()) -> str:
    """Markdown: protocol facts, the headline table (best ★, tied =), tied sets, encoder comparison,
    calibration, all metrics, plots."""
    task = doc["task"]
    head = doc["headline"]["metric"]
    kind = task["kind"]
    lines = [
        f"# probekit probe: {kind} `{task['target']}`" + (f" (positive: `{task['positive']}`)" if task.get("positive") else ""),
        "",
        "## Protocol",
        "",
    ]
    lines += [f"- {name}: {value}" for name, value in protocol_facts(doc)]
    lines += [
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
    lines += [
        "",
        f"## {head} per layer (★ = best layer per encoder and probe, = tied with it)",
        "",
        f"| encoder | probe | layer | {head} | mean ± std over folds | 95% CI | p vs best (adj.) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in doc["rows"]:
        s = r["metrics"][head]
        mark = tie_mark(doc, r)
        v = f"**{fmt(s['value'])}** {mark}" if mark else fmt(s["value"])
        p = fmt_p(r["p_vs_best"]) if "p_vs_best" in r else "–"
        lines.append(
            f"| {r['encoder']} | {r['probe']} | {layer_label(r['layer'])} | {v} | {fmt(s['mean'])} ± {fmt(s['std'])} | "
            f"[{fmt(s['ci_low'])}, {fmt(s['ci_high'])}] | {p} |"
        )
    lines += ["", "## Best layers", "", "| encoder | probe | best | " + head + " | tied with best | ECE |", "|---|---|---|---|---|---|"]
    for b in doc["best"]:
        tied = ", ".join(layer_label(t) for t in b["tied"]) if "tied" in b else "not tested"
        ece = fmt(b["calibration"]["ece"]) if b.get("calibration") else "–"
        lines.append(f"| {b['encoder']} | {b['probe']} | {layer_label(b['layer'])} | {fmt(b['value'])} | {tied} | {ece} |")
    method = tie_method(doc)
    if method:
        lines += ["", method[0].upper() + method[1:] + "."]
    for comp in doc.get("encoder_comparison", []):
        lines += [
            "",
            f"## Encoders compared at their best layers ({comp['entries'][0]['probe']}, {comp['n_rows']} common rows, {comp['n_speakers']} speakers)",
            "",
            f"| encoder | layer | {comp['metric']} | worse than best by | 95% CI | p (Holm) | tied |",
            "|---|---|---|---|---|---|---|",
        ]
        for e in comp["entries"]:
            lines.append(
                f"| {e['encoder']} | {layer_label(e['layer'])} | {fmt(e['value'])} | {fmt(e['diff'])} | "
                f"[{fmt(e['diff_ci'][0])}, {fmt(e['diff_ci'][1])}] | {fmt_p(e['p_adjusted'])} | {'yes' if e['tied'] else 'no'} |"
            )
    names = SCALAR_METRICS[kind]
    lines += ["", "## All metrics (pooled)", "", "| encoder | probe | layer | " + " | ".join(names) + " |", "|---" * (3 + len(names)) + "|"]
    for r in doc["rows"]:
        lines.append(f"| {r['encoder']} | {r['probe']} | {layer_label(r['layer'])} | " + " | ".join(fmt(r["metrics"][n]["value"]) for n in names) + " |")
    weighted = [r for r in doc["rows"] if r.get("layer_weights")]
    if weighted:
        lines += ["", "## Learned layer weights (mean ± std over folds)", ""]
        for r in weighted:
            sd = r.get("layer_weights_std") or [None] * len(r["layer_weights"])
            lines.append(f"- {r['encoder']} / {r['probe']}: " + ", ".join(f"L{i} {fmt(w)} ± {fmt(e)}" for i, (w, e) in enumerate(zip(r["layer_weights"], sd))))
    if plots:
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def rich_table(doc: dict):
    """A rich Table of the headline metric per (encoder, probe, layer): best ★ in bold green, tied = in green."""
    from rich.table import Table

    head = doc["headline"]["metric"]
    t = Table(title=f"{doc['task']['kind']} '{doc['task']['target']}': {head} per layer (★ best, = tied with best)", caption=tie_method(doc))
    tested = any("p_vs_best" in r for r in doc["rows"])
    for col in ("encoder", "probe", "layer", head, "mean ± std", "95% CI") + (("p vs best",) if tested else ()):
        t.add_column(col, justify="right" if col not in ("encoder", "probe") else "left")
    for r in doc["rows"]:
        s = r["metrics"][head]
        mark = tie_mark(doc, r)
        cells = [
            r["encoder"], r["probe"], layer_label(r["layer"]) + (f" {mark}" if mark else ""), fmt(s["value"]),
            f"{fmt(s['mean'])} ± {fmt(s['std'])}", f"[{fmt(s['ci_low'])}, {fmt(s['ci_high'])}]",
        ]
        if tested:
            cells.append(fmt_p(r.get("p_vs_best")))
        t.add_row(*cells, style="bold green" if mark == "★" else "green" if mark == "=" else None)
    return t


def timing_line(doc: dict) -> str:
    """``time per probe: logreg 12.3 s, mlp 40.1 s`` from the document's timing block (fits and predictions)."""
    per = (doc.get("timing") or {}).get("seconds_per_probe") or {}
    return "time per probe: " + ", ".join(f"{k} {v:.1f} s" for k, v in per.items()) if per else ""

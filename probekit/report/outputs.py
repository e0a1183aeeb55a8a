"""An output folder of ``probe`` (and the shared part of ``sweep``'s): written whole, never mixed with an earlier run.

Every writer records the files it wrote in ``.probekit-outputs.json``; the next run into the same
folder first removes exactly those files, so a folder never shows a plot or table of an earlier run
as if it were new. Files a user put there are left alone.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

from probekit.oof import save_oof
from probekit.results import strict_json, write_csv, write_results

RECORD = ".probekit-outputs.json"
# Written by probekit versions that kept no record; removed when no record exists.
_LEGACY = ("results.json", "results.csv", "report.md", "report.html", "sweep_layers.csv", "*.png", "oof/*.npz")


def clear_outputs(out: Path) -> None:
    """Remove the files the previous probekit run wrote into ``out`` (all of them, and nothing else)."""
    record = out / RECORD
    if record.is_file():
        try:
            names = json.loads(record.read_text(encoding="utf-8")).get("files", [])
        except (OSError, ValueError):
            names = []
        targets = [out / n for n in names if isinstance(n, str) and ".." not in Path(n).parts]
    else:
        targets = [p for pattern in _LEGACY for p in out.glob(pattern)]
    for path in targets:
        if path.is_file():
            path.unlink()
    oof = out / "oof"
    if oof.is_dir() and not any(oof.iterdir()):
        shutil.rmtree(oof)
    record.unlink(missing_ok=True)


def record_outputs(out: Path, files: Mapping[str, Path]) -> None:
    """Write the record of this run's files (``files``: name -> path, a path below ``out``)."""
    names = sorted({str(Path(p).resolve().relative_to(out.resolve())) for p in files.values()})
    (out / RECORD).write_text(json.dumps({"files": names}, indent=1) + "\n", encoding="utf-8")


def write_outputs(doc: dict, out: Path, oof: Iterable = ()) -> dict[str, Path]:
    """Write results.json, results.csv, report.md, the PNG plots and ``oof/*.npz`` into ``out``,
    after removing the previous run's files."""
    from probekit.report.plots import layer_weights_figure, layers_figure, plot_best_layer, reliability_figure, saved
    from probekit.report.render import report_markdown

    out.mkdir(parents=True, exist_ok=True)
    clear_outputs(out)
    doc = strict_json(doc)
    files = {"results.json": write_results(doc, out / "results.json"), "results.csv": write_csv(doc, out / "results.csv")}
    files.update(saved(layers_figure(doc), out / f"{doc['headline']['metric']}_by_layer.png"))
    files.update(plot_best_layer(doc, out))
    files.update(saved(layer_weights_figure([("", doc)]), out / "layer_weights.png"))
    files.update(saved(reliability_figure([("", doc)]), out / "reliability.png"))
    pngs = [p.name for k, p in files.items() if k.endswith(".png")]
    files["report.md"] = out / "report.md"
    files["report.md"].write_text(report_markdown(doc, pngs), encoding="utf-8")
    for o in oof:
        path = save_oof(out / "oof", o)
        files[f"oof/{path.name}"] = path
    record_outputs(out, files)
    return files


def _num(x, digits: int = 4) -> str:
    return "" if x is None else f"{x:.{digits}f}"


def _write_layer_csv(doc: dict, path: Path) -> Path:
    """``sweep_layers.csv``: per row the headline mean and std over outer folds, the most often
    selected parameters and the inner score; an undefined number is an empty field."""
    import csv

    h = doc["headline"]["metric"]
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["encoder", "layer", "probe", h, f"{h}_std", "best_params", "inner_score"])
        for r in doc["rows"]:
            s = r["metrics"][h]
            w.writerow([r["encoder"], r["layer"], r["probe"], _num(s["mean"]), _num(s["std"]), json.dumps(r["best_params"], sort_keys=True, separators=(",", ":")), _num(r["inner_score"])])
    return path


def write_sweep_outputs(doc: dict, out: Path, oof: Iterable = ()) -> dict[str, Path]:
    """Write a sweep's ``results.json`` (validated), ``results.csv`` (``probe``'s one line per row with every
    metric's stats), ``sweep_layers.csv``, ``layer_curve.png`` and ``oof/*.npz`` into ``out``, after removing
    the previous run's files (the cell store ``results.jsonl`` is not one of them).

    ``probe``'s ``report.md`` and plots are not written: they describe ``probe``'s protocol (one fixed
    parameter set, layers ranked by the pooled value), not a nested sweep's.
    """
    from probekit.report.plots import plot_sweep_curve
    from probekit.results import load_results

    out.mkdir(parents=True, exist_ok=True)
    clear_outputs(out)
    files = {"results.json": write_results(strict_json(doc), out / "results.json")}
    # The other files are drawn from the file as written (NaN already null), so they show what it holds.
    doc = load_results(files["results.json"])
    files["results.csv"] = write_csv(doc, out / "results.csv")
    files["sweep_layers.csv"] = _write_layer_csv(doc, out / "sweep_layers.csv")
    files["layer_curve.png"] = plot_sweep_curve(doc, out / "layer_curve.png")
    for o in oof:
        path = save_oof(out / "oof", o)
        files[f"oof/{path.name}"] = path
    record_outputs(out, files)
    return files

"""Honest layer selection on EmoDB with whisper-tiny.en: the numbers the README quotes, from one run.

1. 7-class emotion, leave-one-speaker-out, ``logreg`` per layer and ``layer-weights`` over all layers:
   the layer-weighted probe's UAR next to the best single layer's, and the set of layers tied with the
   best (paired speaker bootstrap, Holm-corrected, level 0.05).
2. Binary ``negative`` vs rest, LOSO, ``logreg``: ECE at the best layer before and after calibration
   (temperature and isotonic), each calibrator fitted on 3 inner speaker folds of every outer training
   part only, through the same core as ``probekit probe --calibrate`` (``evaluate_layer``).
3. ``probekit stats`` of the manifest, ``probekit report`` of both runs, and a screenshot of it in headless Chromium (``--screenshot``).

Run: ``python benchmarks/emodb_layer_selection.py CACHE [--out DIR] [--screenshot PNG]``, CACHE a
float32 mean-pooled whisper-tiny.en cache of ``../shared/data/emodb`` (the test fixture builds one at
``cache/tests/emodb-whisper-tiny.en-float32.h5``). 20-55 s on 2 otherwise idle cores; about 5 minutes when other jobs share them.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
from pathlib import Path

import numpy as np

from probekit.choices import Protocol
from probekit.probe.calibration import expected_calibration_error
from probekit.probe.evaluate import EvalProtocol, evaluate_layer, prepare, read_X
from probekit.probe.metrics import compute_metrics
from probekit.probe.probes import make_probe
from probekit.probe.probing import ProbeConfig, run_probe
from probekit.probe.stats import StatsConfig, dataset_stats
from probekit.probe.tasks import TaskSpec
from probekit.report.html import write_html_report


def calibrated_oof(prepared, layer: int, method: str | None) -> np.ndarray:
    """Out-of-fold P(positive) ``(n,)`` of ``logreg`` on ``layer`` through the core ``probe`` uses
    (:func:`probekit.probe.evaluate.evaluate_layer`): raw with ``method=None``, else calibrated by a map
    fitted on inner speaker folds of each outer training part."""
    outcome = evaluate_layer(prepared, read_X(prepared, layer), make_probe("logreg", seed=prepared.protocol.seed), calibrate=method)
    return outcome.proba[:, 0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("cache", type=Path)
    ap.add_argument("--manifest", type=Path, default=Path(__file__).resolve().parents[1].parent / "shared" / "data" / "emodb" / "manifest.csv")
    ap.add_argument("--out", type=Path, default=Path("runs/emodb-layer-selection"))
    ap.add_argument("--screenshot", type=Path, default=None)
    args = ap.parse_args()
    loso = Protocol.loso.value

    mc = run_probe(ProbeConfig(caches=(str(args.cache),), task=TaskSpec("multiclass", "label"), probes=("logreg", "layer-weights"),
                               cv=loso, manifest=str(args.manifest), out=str(args.out / "emotion-7class")))
    best = {b["probe"]: b for b in mc.best}
    lw = next(r for r in mc.rows if r["probe"] == "layer-weights")
    print("7-class UAR (LOSO, 535 clips, 10 speakers):")
    for r in mc.rows:
        s = r["metrics"]["uar"]
        mark = "best" if r["probe"] == "logreg" and r["layer"] == best["logreg"]["layer"] else "tied" if r.get("tied_with_best") else ""
        print(f"  {r['probe']:<14} layer {'all' if r['layer'] == -1 else r['layer']:>3}  UAR {s['value']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]"
              + (f"  p vs best {r['p_vs_best']:.3f}" if "p_vs_best" in r else "") + f"  {mark}")
    print(f"  tied with the best logreg layer: {best['logreg']['tied']} ({best['logreg']['comparison']})")
    print(f"  layer-weights: UAR {lw['metrics']['uar']['value']:.3f}, weights " + ", ".join(f"{w:.3f}" for w in lw["layer_weights"]))

    bn = run_probe(ProbeConfig(caches=(str(args.cache),), task=TaskSpec("binary", "labels", positive="negative"), probes=("logreg",),
                               cv=loso, manifest=str(args.manifest), out=str(args.out / "negative-vs-rest")))
    b = bn.best[0]
    print(f"\nbinary negative vs rest (LOSO), best layer {b['layer']} by F1 {b['value']:.3f}; tied {b.get('tied')}")
    prepared = prepare(args.cache, TaskSpec("binary", "labels", positive="negative"), EvalProtocol(cv=loso), manifest=args.manifest)
    y = prepared.targets.y
    print(f"  ECE (10 bins) from results.json: {b['calibration']['ece']:.4f}")
    raw = calibrated_oof(prepared, b["layer"], None)
    for method in ("temperature", "isotonic"):
        cal = calibrated_oof(prepared, b["layer"], method)
        m_raw = compute_metrics("binary", y, (raw >= 0.5).astype(int), raw, ("rest", "negative"))
        m_cal = compute_metrics("binary", y, (cal >= 0.5).astype(int), cal, ("rest", "negative"))
        print(f"  {method:<11}: ECE {expected_calibration_error(y, raw):.4f} -> {expected_calibration_error(y, cal):.4f}; "
              f"ROC-AUC {m_raw['roc_auc']:.4f} -> {m_cal['roc_auc']:.4f}; F1 at 0.5 {m_raw['f1']:.3f} -> {m_cal['f1']:.3f}")

    # The report finds <out>/stats/stats.json beside the run folders and shows the dataset summary from it.
    dataset_stats(StatsConfig(path=str(args.manifest), target="label", cv=loso, out=str(args.out / "stats")))
    page = write_html_report([args.out / "emotion-7class", args.out / "negative-vs-rest"], args.out / "report.html")
    print(f"\nwrote {page}")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if args.screenshot and browser:
        args.screenshot.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--proxy-server=127.0.0.1:9",
                        "--window-size=1280,1500", f"--screenshot={args.screenshot.resolve()}", page.resolve().as_uri()],
                       check=True, capture_output=True)
        print(f"wrote {args.screenshot}")


if __name__ == "__main__":
    main()

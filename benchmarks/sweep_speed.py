"""probekit's nested C sweep (``logreg-fast``) against the plain scikit-learn loop, side by side.

Builds hotline-scale synthetic caches with a planted signal (1024 dims, float16) in a folder
outside the repository (``--dir``), then for each size and task measures, in this one run, one
layer of a nested sweep: 5 outer speaker-grouped folds, 3 inner folds in each, 4 C values.

* **probekit**: the layer's job exactly as ``probekit sweep`` runs it
  (:func:`probekit.probe.sweep.run_layer_job`): one batched solve of the 60 inner cells and, for
  ``logreg-fast``, the 20 outer cells of every candidate (a cell = one (fold, C); for the 11-label
  task it holds all 11 one-vs-rest problems). The time covers reading the layer from HDF5, the
  solve and the metrics of all 80 cells; it runs in a fresh child process whose peak resident
  memory is reported.
* **the plain loop**: per cell ``StandardScaler`` + ``LogisticRegression(C, max_iter=1000)``
  (otherwise scikit-learn's defaults: lbfgs, tol 1e-4, float64; one fit per label). A plain nested sweep of a layer needs the
  60 inner cells and the 5 outer cells at the chosen C; timing all 65 would take hours at 80k on
  2 cores, so the cells of outer fold 0 and of its first inner fold are timed (8 cells) and the
  layer's time is ``5 x outer + 60 x inner`` (mean seconds per cell of each kind).
* **F1**: the headline metric (binary F1, 11-label weighted F1) of probekit and of the loop on
  those 8 shared cells, with the largest and the mean absolute difference in points. For sizes up
  to ``--reference-max-n`` the outer cells are also fitted to the exact optimum (scikit-learn at
  tol 1e-10, untimed), and each solver's largest F1 distance from it is shown: where the two
  disagree, this says which one is off.

Then a whole nested sweep (``run_sweep``) over the 20,630 x 25 x 1024 float16 cache in a child
process: time and peak resident memory.

Both sides use one thread unless ``OMP_NUM_THREADS`` is set (the same for both).
Run: ``python benchmarks/sweep_speed.py`` (about 9 minutes on 2 idle cores).
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy/torch load their thread pools

import argparse  # noqa: E402
import multiprocessing as mp  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

CS = (0.01, 0.1, 1.0, 10.0)
LABELS = tuple(f"emo{j:02d}" for j in range(11))
TASKS = {
    "binary": {"task": "binary", "target": "negative", "positive": "negative"},
    "11-label": {"task": "multilabel", "target": "labels", "labels": LABELS},
}
LOOP_FOLDS = ("o0", "o0/i0")  # the cells the plain loop computes: weighted 1:3 (outer:inner)


def peak_rss_mb() -> float:
    """This process's own peak resident memory (VmHWM), in MB. ``ru_maxrss`` is not used: on Linux
    a spawned child inherits its parent's resident size at fork time into it."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def target_model(rng: np.random.Generator, n_labels: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(U (8, n_labels), thresholds (n_labels,), u (8,))``: how 8 signal factors make the labels (prevalence
    4-30 %) and the binary target, drawn from ``rng`` in this order."""
    U = rng.normal(size=(8, n_labels)).astype(np.float32)
    thr = np.quantile(rng.normal(size=100_000) * 1.06, 1 - np.linspace(0.04, 0.30, n_labels))
    ub = rng.normal(size=8).astype(np.float32)
    return U, thr, ub


def draw_targets(signal: np.ndarray, model: tuple, rng: np.random.Generator) -> tuple[list[str], list[str]]:
    """The ``labels`` (``emo00;emo03`` or ``none``) and ``negative`` / ``other`` values of rows with signal
    factors ``signal`` ``(r, 8)`` under :func:`target_model`'s ``model``, with noise drawn from ``rng``."""
    U, thr, ub = model
    L = signal @ U + rng.normal(size=(len(signal), U.shape[1])).astype(np.float32)
    has = L / np.sqrt(8) > thr
    labels = [";".join(f"emo{j:02d}" for j in np.flatnonzero(h)) or "none" for h in has]
    binary = list(np.where(signal @ ub / np.sqrt(8) + 0.6 * rng.normal(size=len(signal)) > 0.5, "negative", "other"))
    return labels, binary


def make_cache(path: Path, n: int, layers: int, dim: int = 1024, n_labels: int = 11, seed: int = 0) -> Path:
    """Synthetic cache ``(layers, n, dim)`` float16: 32 latent factors mixed into every layer; 8 of
    them (the signal) are strongest in the middle layer and drive the binary target and 11 labels
    of 1-36 % prevalence. About 40 segments per speaker."""
    from probekit.cache import CacheWriter

    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(layers, 32, dim)).astype(np.float32) / np.sqrt(32)
    strength = np.exp(-0.5 * ((np.arange(layers) - layers // 2) / max(1, layers / 4)) ** 2).astype(np.float32)
    targets = target_model(rng, n_labels)
    ids = [f"seg{i:06d}" for i in range(n)]
    w = CacheWriter(path, ids, layers, dim, dtype="float16")
    labels, binary = [], []
    step = 4096
    for lo in range(0, n, step):
        r = min(n, lo + step) - lo
        Z = rng.normal(size=(r, 32)).astype(np.float32)
        block = np.empty((r, layers, dim), dtype=np.float16)
        for la in range(layers):
            Zs = Z.copy()
            Zs[:, :8] *= 0.35 + strength[la]
            block[:, la] = Zs @ A[la] + rng.normal(size=(r, dim)).astype(np.float32)
        block_labels, block_binary = draw_targets(Z[:, :8], targets, rng)
        labels += block_labels
        binary += block_binary
        w.write_rows(np.arange(lo, lo + r), block, np.zeros(r, dtype=np.float32))
    meta = {"speaker": [f"spk{i % max(10, n // 40):05d}" for i in range(n)], "labels": labels, "negative": binary}
    return w.finalize(meta, {"encoder": f"synthetic-{n}"})


def _setup(path: str, task: str):
    """The rows, targets and nested fold table of ``task`` on the cache at ``path``, built by the
    function ``run_sweep`` builds them with, so both sides of the comparison see the sweep's folds."""
    from probekit.cache import EmbeddingCache
    from probekit.probe.sweep import SweepSpec, _cache_work

    cache = EmbeddingCache(path)
    spec = SweepSpec(**TASKS[task], grid=(("C", CS),), outer_folds=5, inner_folds=3)
    work = _cache_work(cache, Path(path).stem, spec)
    table = work.table
    folds = [f"o{k}" for k in range(table.shape[0])] + [f"o{k}/i{j}" for k in range(table.shape[0]) for j in range(int(table[k].max()) + 1)]
    return cache, spec, work.prepared, work.y, table, folds


def probekit_layer(path: str, task: str, layer: int) -> dict:
    """Child process: all 80 cells of one layer through the sweep's worker; time, scores, peak RSS."""
    from probekit.probe.sweep import LayerJob, run_layer_job

    cache, spec, prepared, y, table, folds = _setup(path, task)
    cells = tuple(({"C": C}, f) for f in folds for C in CS)
    job = LayerJob(path, layer, spec.task, "logreg-fast", prepared.rows, y, prepared.targets.classes, table, cells, prepared.groups)
    t0 = time.perf_counter()
    out = run_layer_job(job)
    seconds = time.perf_counter() - t0
    scores = {(f, p["C"]): s[spec.headline()] for p, f, s, *_ in out}
    return {"seconds": seconds, "cells": len(cells), "scores": scores, "rss_mb": peak_rss_mb()}


def loop_cells(path: str, task: str, layer: int, reference: bool = False) -> dict:
    """Child process: the plain scikit-learn loop on the cells of ``LOOP_FOLDS`` x ``CS``.

    reference: also fit the outer-fold cells to the exact optimum (tol 1e-10, up to 20,000
    iterations; untimed), to tell which solver a disagreement comes from."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from probekit.probe.sweep import fold_rows, indicator

    cache, spec, prepared, y, table, _ = _setup(path, task)
    targets = prepared.targets
    X = cache.read_layer(layer, dtype=np.float64)[prepared.rows]  # the plain approach: one float64 copy
    Y = indicator(targets)
    per_cell, scores, exact = {}, {}, {}
    for fold in LOOP_FOLDS:
        tr, te = fold_rows(table, fold)
        t0 = time.perf_counter()
        scaler = StandardScaler().fit(X[tr])
        Xtr, Xte = scaler.transform(X[tr]), scaler.transform(X[te])
        t_scale = time.perf_counter() - t0
        for C in CS:
            t0 = time.perf_counter()
            S = np.column_stack([LogisticRegression(C=C, max_iter=1000).fit(Xtr, Y[tr, j]).decision_function(Xte) for j in range(Y.shape[1])])
            per_cell[(fold, C)] = time.perf_counter() - t0 + t_scale / len(CS)
            scores[(fold, C)] = _headline(spec, y[te], S, targets.classes)
            if reference and "/" not in fold:
                S = np.column_stack([LogisticRegression(C=C, tol=1e-10, max_iter=20000).fit(Xtr, Y[tr, j]).decision_function(Xte) for j in range(Y.shape[1])])
                exact[(fold, C)] = _headline(spec, y[te], S, targets.classes)
    outer = np.mean([per_cell[("o0", C)] for C in CS])
    inner = np.mean([per_cell[("o0/i0", C)] for C in CS])
    return {"per_layer": 5 * outer + 60 * inner, "outer": outer, "inner": inner, "scores": scores, "exact": exact, "rss_mb": peak_rss_mb()}


def _headline(spec, y_true: np.ndarray, S: np.ndarray, classes) -> float:
    """The sweep's headline metric of decision values ``S`` ``(n, k)`` thresholded at 0."""
    from probekit.probe.sweep import cell_metrics

    if spec.task == "binary":
        return cell_metrics("binary", y_true, (S[:, 0] > 0).astype(np.int64), S[:, 0], classes)[spec.headline()]
    return cell_metrics("multilabel", y_true, (S > 0).astype(np.int64), S, classes)[spec.headline()]


def whole_sweep(path: str, task: str, out: str) -> dict:
    """Child process: a whole nested sweep (4 C, 5 outer x 3 inner folds) over every layer."""
    from probekit.probe.sweep import SweepSpec, run_sweep

    spec = SweepSpec(**TASKS[task], grid=(("C", CS),), outer_folds=5, inner_folds=3)
    t0 = time.perf_counter()
    res = run_sweep([path], spec, out)
    mean = {r["layer"]: r["metrics"][res.headline]["mean"] for r in res.rows}  # outer-fold mean per layer
    best = max(res.rows, key=lambda r: mean[r["layer"]])
    return {"seconds": time.perf_counter() - t0, "cells": res.computed, "layers": len(res.rows), "rss_mb": peak_rss_mb(),
            "best_layer": best["layer"], "best": mean[best["layer"]], "best_params": best["best_params"]}


def in_child(fn, *args):
    """Run ``fn(*args)`` in a fresh spawned process, so its peak memory is its own."""
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the comparison; returns the per-(size, task) rows of the printed table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "probekit_bench"), help="where the synthetic caches go (reused)")
    ap.add_argument("--sizes", default="5000,20630,80000")
    ap.add_argument("--tasks", default="binary,11-label")
    ap.add_argument("--reference-max-n", type=int, default=5000, help="sizes up to this also get the exact-optimum reference")
    ap.add_argument("--sweep-task", default="binary", help="task of the whole 25-layer sweep ('none' to skip)")
    args = ap.parse_args(argv)
    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    print(f"# sweep_speed: threads OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}, {os.cpu_count()} cpus; C grid {list(CS)}", flush=True)
    rows = []
    for n in [int(s) for s in args.sizes.split(",")]:
        n_layers = 25 if n == 20630 else 4  # the hotline-scale size gets every hidden state
        t = time.perf_counter()
        path = make_cache(root / f"synthetic_{n}x{n_layers}.h5", n, n_layers)
        print(f"# cache {path}: {n} x {n_layers} x 1024 float16, ready in {time.perf_counter() - t:.0f} s", flush=True)
        layer = n_layers // 2
        for task in args.tasks.split(","):
            pk = in_child(probekit_layer, str(path), task, layer)
            sk = in_child(loop_cells, str(path), task, layer, n <= args.reference_max_n)
            diffs = np.array([100 * abs(pk["scores"][c] - sk["scores"][c]) for c in sk["scores"]])
            r = {
                "n": n, "task": task, "pk_s": pk["seconds"], "sk_s": sk["per_layer"],
                "f1_pk": np.mean([pk["scores"][c] for c in sk["scores"]]), "f1_sk": np.mean(list(sk["scores"].values())),
                "dmax": diffs.max(), "dmean": diffs.mean(), "pk_rss": pk["rss_mb"], "sk_rss": sk["rss_mb"],
            }
            r["speedup"] = r["sk_s"] / r["pk_s"]
            if sk["exact"]:  # distance of each solver from the exact optimum's F1, outer cells
                r["ref"] = (max(100 * abs(pk["scores"][c] - v) for c, v in sk["exact"].items()), max(100 * abs(sk["scores"][c] - v) for c, v in sk["exact"].items()))
            rows.append(r)
            print(f"  n={n} {task}: probekit {r['pk_s']:.1f} s per layer (80 cells); loop {r['sk_s']:.1f} s per layer "
                  f"(outer {sk['outer']:.2f} s/cell, inner {sk['inner']:.2f} s/cell); x{r['speedup']:.1f}; |dF1| max {r['dmax']:.2f} mean {r['dmean']:.2f} pt"
                  + (f"; vs exact optimum: probekit {r['ref'][0]:.2f}, loop {r['ref'][1]:.2f} pt" if "ref" in r else ""), flush=True)
    if rows:
        print()
        print("| segments | task | probekit s per layer | plain loop s per layer | speed-up | F1 probekit | F1 plain loop | abs dF1 max / mean (points) | max abs dF1 from exact optimum: probekit / loop | peak RSS probekit | peak RSS plain loop |")
        print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['n']} | {r['task']} | {r['pk_s']:.1f} | {r['sk_s']:.1f} | **{r['speedup']:.1f}x** | {r['f1_pk']:.4f} | {r['f1_sk']:.4f} | "
                  f"{r['dmax']:.2f} / {r['dmean']:.2f} | " + (f"{r['ref'][0]:.2f} / {r['ref'][1]:.2f}" if "ref" in r else "not run") + f" | {r['pk_rss']:.0f} MB | {r['sk_rss']:.0f} MB |")
    if args.sweep_task != "none":
        path = make_cache(root / "synthetic_20630x25.h5", 20630, 25)
        out = tempfile.mkdtemp(prefix="sweep_", dir=root)
        res = in_child(whole_sweep, str(path), args.sweep_task, out)
        print()
        print(f"Whole nested sweep, {args.sweep_task}, C in {list(CS)}, 5 outer x 3 inner speaker folds, over the 20,630 x 25 x 1024 float16 cache: "
              f"{res['cells']} cells over {res['layers']} layers in {res['seconds']:.0f} s, peak RSS {res['rss_mb']:.0f} MB (child process); "
              f"best layer {res['best_layer']} at {res['best']:.4f} with {res['best_params']}.")
    sys.stdout.flush()
    return rows


if __name__ == "__main__":
    main()

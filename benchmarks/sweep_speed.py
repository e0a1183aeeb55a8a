"""probekit's batched logistic regression against the plain scikit-learn loop, side by side.

Builds hotline-scale synthetic caches with a planted signal (1024 dims, float16) in a temporary
folder outside the repository, then for each size and task measures in this one run:

* probekit: ``fit_batched`` on ``--layers`` layers x 5 speaker-grouped folds x 4 C values (a cell =
  one (layer, fold, C); for the 11-label task a cell holds all 11 one-vs-rest problems), in a
  child process whose peak RSS is reported; time includes reading the layer from HDF5;
* the plain loop: ``StandardScaler`` + ``LogisticRegression(C)`` (float64, lbfgs, one fit per label),
  on a stated SUBSET of the same cells (the full loop at 80k would take hours on 2 cores): per-cell
  time ratios, and the largest |F1 difference| over the cells both computed;
* peak RSS of a full nested sweep (``run_sweep``, 5 outer x 3 inner folds, 4 C) over the
  20,630 x 25 x 1024 cache, in a subprocess (``--sweep-layers`` of the 25 layers; one layer is in
  memory at a time, so peak memory does not grow with the number of layers).

Run: ``OMP_NUM_THREADS=1 python benchmarks/sweep_speed.py`` (single thread for both paths).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CS = (0.01, 0.1, 1.0, 10.0)
N_FOLDS = 5


def peak_rss_mb() -> float:
    """This process's own peak resident memory (VmHWM). ``ru_maxrss`` is not used: on Linux a
    spawned child inherits its parent's resident size at fork time into it."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_cache(path: Path, n: int, layers: int, dim: int = 1024, n_labels: int = 11, seed: int = 0) -> Path:
    """Synthetic cache: 32 latent factors mixed into every layer; 8 of them (the signal) are
    strongest in the middle layer and drive the binary target and 11 labels of 4-30 % prevalence."""
    from probekit.cache import CacheWriter

    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    A = rng.normal(size=(layers, 32, dim)).astype(np.float32) / np.sqrt(32)
    strength = np.exp(-0.5 * ((np.arange(layers) - layers // 2) / max(1, layers / 4)) ** 2).astype(np.float32)
    U = rng.normal(size=(8, n_labels)).astype(np.float32)
    thr = np.quantile(rng.normal(size=100_000) * 1.06, 1 - np.linspace(0.04, 0.30, n_labels))
    ub = rng.normal(size=8).astype(np.float32)
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
        L = Z[:, :8] @ U + rng.normal(size=(r, n_labels)).astype(np.float32) * 1.0
        has = L / np.sqrt(8) > thr
        labels += [";".join(f"emo{j:02d}" for j in np.flatnonzero(h)) or "none" for h in has]
        binary += list(np.where(Z[:, :8] @ ub / np.sqrt(8) + 0.6 * rng.normal(size=r) > 0.5, "negative", "other"))
        w.write_rows(np.arange(lo, lo + r), block, np.zeros(r, dtype=np.float32))
    meta = {"speaker": [f"spk{i % max(10, n // 40):05d}" for i in range(n)], "labels": labels, "negative": binary}
    return w.finalize(meta, {"encoder": f"synthetic-{n}"})


def targets(cache, task: str) -> np.ndarray:
    if task == "binary":
        return (cache.metadata["negative"] == "negative").astype(np.uint8)[:, None]
    names = [f"emo{j:02d}" for j in range(11)]
    sets = [set(s.split(";")) for s in cache.metadata["labels"]]
    return np.array([[nm in s for nm in names] for s in sets], dtype=np.uint8)


def folds(cache) -> list[tuple[np.ndarray, np.ndarray]]:
    from sklearn.model_selection import GroupKFold

    return list(GroupKFold(n_splits=N_FOLDS).split(np.zeros(len(cache.ids)), groups=cache.metadata["speaker"]))


def f1_of(kind: str, Y: np.ndarray, S: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    if kind == "binary":
        return float(f1_score(Y[:, 0], S[:, 0] > 0, zero_division=0))
    return float(f1_score(Y, (S > 0).astype(int), average="weighted", zero_division=0))


def probekit_cells(path: str, task: str, layers: list[int], n_folds: int = N_FOLDS) -> dict:
    """Child process: batched solve of layers x the first ``n_folds`` folds x C; time, F1 per cell, peak RSS."""
    from probekit.cache import EmbeddingCache
    from probekit.fastlogreg import decision_batched, fit_batched

    cache = EmbeddingCache(path)
    Y = targets(cache, task)
    fl = folds(cache)
    masks = np.zeros((len(Y), n_folds), dtype=bool)
    for f, (tr, _) in enumerate(fl[:n_folds]):
        masks[tr, f] = True
    gf = np.repeat(np.arange(n_folds), len(CS))
    gc = np.tile(CS, n_folds)
    t0 = time.perf_counter()
    f1 = {}
    for la in layers:
        X = cache.read_layer(la, dtype=None)  # float16, no float64 copy
        fit = fit_batched(X, Y, masks, gf, gc)
        for g, (f, C) in enumerate(zip(gf, gc)):
            te = fl[f][1]
            f1[(la, int(f), float(C))] = f1_of(task, Y[te], decision_batched(X[te], fit, [g])[:, 0, :])
        del X, fit
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "cells": len(layers) * len(gf), "f1": f1, "maxrss_mb": peak_rss_mb()}


def sklearn_cells(path: str, task: str, layer: int, fold: int, cs, label_subset: int | None) -> dict:
    """The plain loop on a subset: one layer, one fold, ``cs``; multilabel fits ``label_subset`` labels
    (all 11 when None) and scales its per-cell time to 11 labels."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from probekit.cache import EmbeddingCache

    cache = EmbeddingCache(path)
    Y = targets(cache, task)
    tr, te = folds(cache)[fold]
    X = cache.read_layer(layer, dtype=np.float64)
    t0 = time.perf_counter()
    sc = StandardScaler().fit(X[tr])
    Xtr, Xte = sc.transform(X[tr]), sc.transform(X[te])
    t_scale = time.perf_counter() - t0
    k = Y.shape[1]
    labs = list(range(k)) if label_subset is None else list(range(min(k, label_subset)))
    out = {}
    fit_time = 0.0
    for C in cs:
        S = np.zeros((len(te), k), dtype=np.float32)
        for j in labs:
            t = time.perf_counter()
            m = LogisticRegression(C=C, max_iter=1000).fit(Xtr, Y[tr, j])
            fit_time += time.perf_counter() - t
            S[:, j] = m.decision_function(Xte)
        out[float(C)] = S
    per_cell = (t_scale + fit_time * k / len(labs)) / len(cs)
    f1 = {}
    for C, S in out.items():
        if len(labs) == k:
            f1[float(C)] = f1_of(task, Y[te], S)
        else:  # compare only the fitted labels (weighted F1 over them)
            f1[float(C)] = f1_of(task, Y[te][:, labs], S[:, labs])
    return {"per_cell": per_cell, "f1": f1, "labels": labs, "Y_te": None}


def sweep_memory(path: str, layers: list[int], out: str) -> dict:
    """Child process: a full nested sweep (binary, 4 C, 5x3 folds) on ``layers``; peak RSS."""
    from probekit.sweep import SweepSpec, run_sweep

    t0 = time.perf_counter()
    spec = SweepSpec(task="binary", target="negative", positive="negative", grid=(("C", CS),), layers=tuple(layers), outer_folds=5, inner_folds=3)
    res = run_sweep([path], spec, out)
    return {"seconds": time.perf_counter() - t0, "cells": res.computed, "maxrss_mb": peak_rss_mb(), "rows": [(r["layer"], round(r["f1"], 4), r["best_params"]) for r in res.rows]}


def in_child(fn, *args):
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "probekit_bench"))
    ap.add_argument("--sizes", default="5000,20630,80000")
    ap.add_argument("--layers", type=int, default=2, help="layers the probekit path runs per size")
    ap.add_argument("--sweep-layers", default="12")
    ap.add_argument("--skip-sweep", action="store_true")
    ap.add_argument("--memory-only", action="store_true", help="only peak memory: probekit cells per size and the nested sweep")
    args = ap.parse_args()
    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    print(f"# probekit sweep_speed  threads: OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}  cpus={os.cpu_count()}")
    rows = []
    if args.memory_only:
        for n in sizes:
            n_layers = 25 if n == 20630 else 4
            path = make_cache(root / f"synthetic_{n}x{n_layers}.h5", n, n_layers)
            for task in ("binary", "multilabel"):
                pk = in_child(probekit_cells, str(path), task, [n_layers // 2], 1)
                print(f"| {n} | {task} | 1 layer x 1 fold x 4 C | {pk['seconds']:.1f} s | {pk['maxrss_mb']:.0f} MB |", flush=True)
        sizes = []
    for n in sizes:
        n_layers = 25 if n == 20630 else 4
        t = time.perf_counter()
        path = make_cache(root / f"synthetic_{n}x{n_layers}.h5", n, n_layers)
        print(f"# cache {path} ({n} x {n_layers} x 1024 float16) ready in {time.perf_counter() - t:.0f}s", flush=True)
        mid = n_layers // 2
        for task in ("binary", "multilabel"):
            # Subsets keep the whole run near 15 minutes on 2 shared cores (stated in the table).
            if n >= 50000:
                pk_layers, pk_folds = [mid], 1
                cs, lab = (0.1, 1.0), (None if task == "binary" else 3)
            elif n >= 20000:
                pk_layers, pk_folds = [mid], (N_FOLDS if task == "binary" else 2)
                cs, lab = (CS, None) if task == "binary" else ((0.1, 1.0), 4)
            else:
                pk_layers, pk_folds = [mid, 0][: args.layers], N_FOLDS
                cs, lab = (CS, None) if task == "binary" else (CS, 6)
            pk = in_child(probekit_cells, str(path), task, pk_layers, pk_folds)
            sk = sklearn_cells(str(path), task, mid, 0, cs, lab)
            if lab is None:
                diffs = [abs(pk["f1"][(mid, 0, C)] - sk["f1"][C]) for C in cs]
            else:  # re-score probekit on the same label subset
                from probekit.cache import EmbeddingCache
                from probekit.fastlogreg import decision_batched, fit_batched

                cache = EmbeddingCache(path)
                Y = targets(cache, task)
                tr, te = folds(cache)[0]
                X = cache.read_layer(mid, dtype=None)
                m = np.zeros((len(Y), 1), dtype=bool)
                m[tr, 0] = True
                fit = fit_batched(X, Y, m, [0] * len(cs), list(cs))
                S = decision_batched(X[te], fit)
                diffs = [abs(f1_of(task, Y[te][:, sk["labels"]], S[:, g, sk["labels"]]) - sk["f1"][C]) for g, C in enumerate(cs)]
                del X
            pk_cell = pk["seconds"] / pk["cells"]
            mean_pk = np.mean([pk["f1"][(mid, 0, C)] for C in cs])
            rows.append({
                "n": n, "task": "binary" if task == "binary" else "11-label", "pk_cells": f"{len(pk_layers)}L x {pk_folds}F x 4C", "pk_s": pk["seconds"], "pk_cell": pk_cell,
                "sk_cells": f"1L x 1F x {len(cs)}C" + ("" if lab is None else f" x {lab}/11 labels"), "sk_cell": sk["per_cell"],
                "speedup": sk["per_cell"] / pk_cell, "f1_pk": mean_pk, "dF1": 100 * max(diffs), "rss": pk["maxrss_mb"],
            })
            r = rows[-1]
            print(f"  n={n:>6} {r['task']:>8}: probekit {r['pk_s']:.1f}s on {r['pk_cells']} = {r['pk_cell']:.2f}s/cell; sklearn {r['sk_cell']:.2f}s/cell ({r['sk_cells']}); x{r['speedup']:.1f}; max|dF1| {r['dF1']:.2f} pt; peak RSS {r['rss']:.0f} MB", flush=True)
    if rows:
        print()
        print("| segments | task | probekit cells timed | probekit s/cell | sklearn loop cells timed | sklearn s/cell | speed-up | F1 probekit (mid layer, fold 0) | max abs dF1 (points) | probekit peak RSS |")
        print("|---:|---|---:|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['n']} | {r['task']} | {r['pk_cells']} | {r['pk_cell']:.2f} | {r['sk_cells']} | {r['sk_cell']:.2f} | {r['speedup']:.1f}x | {r['f1_pk']:.3f} | {r['dF1']:.2f} | {r['rss']:.0f} MB |")
    if not args.skip_sweep:
        path = root / "synthetic_20630x25.h5"
        if path.exists():
            layers = [int(x) for x in args.sweep_layers.split(",")]
            out = tempfile.mkdtemp(prefix="sweep_", dir=root)
            res = in_child(sweep_memory, str(path), layers, out)
            print()
            print(f"Nested sweep (binary, C in {list(CS)}, 5 outer x 3 inner speaker folds) over the 20,630 x 25 x 1024 float16 cache, layers {layers}: "
                  f"{res['cells']} cells in {res['seconds']:.0f}s, peak RSS {res['maxrss_mb']:.0f} MB (subprocess). Layer results: {res['rows']}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

"""probekit's fast probes against the plain scikit-learn / LightGBM estimators, side by side in one run.

The workload of the hotline study: per layer of a 25 x 1024 float16 cache, all three probes
(``logreg``, ``mlp``, ``lgbm``), a binary and an 11-label task, speaker-grouped 5-fold. For each
cache size (``--sizes``) and generator (``--generators``) one layer (the middle one) is measured:

* **fast**: the probe's ``fold_proba`` over all 5 folds (the batched path ``probekit probe`` takes),
  float16 rows straight from the cache; run in a spawned child whose peak resident memory is shown.
* **plain**: ``make_probe(name, exact=True)``: scikit-learn ``LogisticRegression`` / ``MLPClassifier``
  and ``LGBMClassifier`` with probekit's default hyperparameters on float64 standardised rows, one
  fit per fold (per label where the probe goes one-vs-rest). Only the first ``--plain-folds`` folds
  are fitted (all 5 at up to 5,000 segments); its per-layer time is the mean per fold x 5.
* **F1**: the headline (binary F1; 11-label weighted F1), pooled over the test rows of the folds
  both sides ran, and its difference in points (positive = fast lower).
* **25 layers**: per-layer times x 25, an extrapolation (marked ``~``), for one core and, divided
  by two, for ``--jobs 2`` on two cores (assuming the two workers do not slow each other).

Times are CPU seconds of the process (``time.process_time``, one thread for numpy, torch and
LightGBM), so a machine shared with other jobs inflates them less than wall time; wall seconds are
printed too. All ratios come from this one run.

Generators: ``planted`` is ``benchmarks/sweep_speed.py``'s cache (8 latent factors carry the
signal and dominate the middle layer: a kind case for PCA). ``hard``: a heavy-tailed spectrum
(power-law variances), per-speaker offsets along the leading axes (speakers, not labels, own the
top principal components) and a weak low-rank signal in random directions, part of it in the tail.

``--emodb CACHE``: per hidden state of a real EmoDB cache, the figures the README quotes (7-class
LOSO UAR, negative-vs-rest LOSO F1, 9-label speaker 5-fold weighted F1) for the default probes,
for the fast paths forced at any size (``fast_min_rows=0``) and for the exact reference.

``--probes lgbm`` measures one probe's rows alone. Every plain run's test probabilities and times
are stored under ``--dir``; ``--reuse-plain`` takes them from there, so a change to a fast path is
re-measured against the same plain fits without paying for them again (the plain times then come from
the earlier run, and the output says so).

``--workload``: the issue's workload measured whole, not extrapolated: ``probekit probe`` run as a user
runs it (a subprocess, the caller's environment), on the planted 20,630 x 25 x 1024 float16 cache,
``--probe logreg --probe mlp --probe lgbm``, speaker 5-fold, ``--jobs`` workers (``--workload-jobs``,
default 2), once for the binary task and once for the 11-label one, each under ``/usr/bin/time -v``.
Printed per run and in total: wall seconds, the largest single process's peak RSS (``time -v``), and
the peak of the whole process tree's memory (the sum of its processes' PSS, sampled every second), with
``uptime`` before and after. Run it alone: ``flock -x /work/notes/cpu.lock python benchmarks/probe_speed.py --workload``.

Run: ``python benchmarks/probe_speed.py --emodb cache/emodb/whisper-tiny.en.h5``
"""

from __future__ import annotations

import os

USER_ENV = dict(os.environ)  # the --workload CLI runs get the caller's environment, not this script's thread limits
for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")  # before numpy/torch load their thread pools

import argparse  # noqa: E402
import multiprocessing as mp  # noqa: E402
import re  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from sweep_speed import LABELS, draw_targets, make_cache, peak_rss_mb, target_model  # noqa: E402

PROBES = ("logreg", "mlp", "lgbm")
LAYERS = 25


def make_hard_cache(path: Path, n: int, layers: int, dim: int = 1024, n_labels: int = 11, seed: int = 1) -> Path:
    """Synthetic cache ``(layers, n, dim)`` float16, unkind to shortcuts: variances fall as ``j^-0.7``
    over a random rotation; each speaker (about 40 segments) adds an offset along the 32 leading axes
    as large as them; 8 latent factors, strongest in the middle layer, enter along random directions
    at a third of the leading axes' scale and drive the binary target and 11 labels of 4-30 % prevalence."""
    from probekit.cache import CacheWriter

    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    n_spk = max(10, n // 40)
    spectrum = (np.arange(dim) + 1.0) ** -0.35  # standard deviations: variances fall as j^-0.7
    R = [np.linalg.qr(rng.normal(size=(dim, dim)))[0].astype(np.float32) for _ in range(layers)]
    offsets = rng.normal(size=(layers, n_spk, 32)).astype(np.float32) * spectrum[:32]
    signal_dirs = rng.normal(size=(layers, 8, dim)).astype(np.float32) / np.sqrt(dim)
    strength = np.exp(-0.5 * ((np.arange(layers) - layers // 2) / max(1, layers / 4)) ** 2).astype(np.float32)
    targets = target_model(rng, n_labels)
    speaker = np.arange(n) % n_spk
    ids = [f"seg{i:06d}" for i in range(n)]
    w = CacheWriter(path, ids, layers, dim, dtype="float16")
    labels, binary = [], []
    step = 4096
    for lo in range(0, n, step):
        r = min(n, lo + step) - lo
        Z = rng.normal(size=(r, 8)).astype(np.float32)
        spk = speaker[lo : lo + r]
        block = np.empty((r, layers, dim), dtype=np.float16)
        for la in range(layers):
            base = rng.normal(size=(r, dim)).astype(np.float32) * spectrum
            base[:, :32] += offsets[la, spk]
            sig = (Z * (0.15 + strength[la])) @ signal_dirs[la] * (spectrum[0] / 3) * np.sqrt(dim)
            block[:, la] = base @ R[la] + sig
        block_labels, block_binary = draw_targets(Z, targets, rng)
        labels += block_labels
        binary += block_binary
        w.write_rows(np.arange(lo, lo + r), block, np.zeros(r, dtype=np.float32))
    meta = {"speaker": [f"spk{s:05d}" for s in speaker], "labels": labels, "negative": binary}
    return w.finalize(meta, {"encoder": f"synthetic-hard-{n}"})


def _task(kind: str):
    from probekit.probe.tasks import TaskSpec

    if kind == "binary":
        return TaskSpec("binary", "negative", positive="negative")
    return TaskSpec("multilabel", "labels", labels=LABELS)


def _setup(path: str, kind: str, layer: int, n_folds: int = 5):
    """Layer rows (float16, as stored), targets, speakers and speaker-grouped folds, as ``probe`` builds them."""
    from probekit.cache import EmbeddingCache
    from probekit.probe.splits import make_folds
    from probekit.probe.tasks import build_targets

    cache = EmbeddingCache(path)
    meta = {k: np.asarray(v, dtype=object) for k, v in cache.metadata.items()}
    targets = build_targets(_task(kind), meta)
    rows = np.flatnonzero(targets.mask)
    groups = meta["speaker"][rows].astype(str)
    folds = make_folds("speaker-kfold", groups, targets.y, n_folds=n_folds, seed=0)
    return cache.read_layer(layer, dtype=None, rows=rows), targets.y, groups, folds


def headline(y: np.ndarray, proba_by_fold, folds) -> float:
    """Binary F1 / multi-label weighted F1 / multi-class UAR over the folds' pooled test rows."""
    from sklearn.metrics import balanced_accuracy_score, f1_score

    te = np.concatenate([t for _, t in folds])
    P = np.concatenate(proba_by_fold)
    if y.ndim == 2:
        return float(f1_score(y[te], (P >= 0.5).astype(int), average="weighted", zero_division=0))
    pred = P.argmax(1)
    if P.shape[1] == 2:
        return float(f1_score(y[te], pred, zero_division=0))
    return float(balanced_accuracy_score(y[te], pred))


def fast_child(path: str, layer: int, kinds: tuple[str, ...], probes: tuple[str, ...] = PROBES) -> dict:
    """Child process: every probe's ``fold_proba`` on all folds of one layer, per task."""
    from probekit.probe.probes import make_probe

    out = {}
    for kind in kinds:
        X, y, groups, folds = _setup(path, kind, layer)
        for name in probes:
            est = make_probe(name)
            c0, w0 = time.process_time(), time.perf_counter()
            P = est.fold_proba(X, y, folds, groups=groups)
            out[(kind, name)] = {"cpu": time.process_time() - c0, "wall": time.perf_counter() - w0, "P": P,
                                 "report": est.fold_reports_[0]}
    out["rss_mb"] = peak_rss_mb()
    return out


def plain_child(path: str, layer: int, kind: str, name: str, n_folds: int) -> dict:
    """Child process: the exact reference estimator fitted per fold on the first ``n_folds`` folds."""
    from sklearn.base import clone

    from probekit.probe.probes import make_probe

    X, y, groups, folds = _setup(path, kind, layer)
    est = make_probe(name, exact=True)
    P, cpu, wall = [], 0.0, 0.0
    for tr, te in folds[:n_folds]:
        c0, w0 = time.process_time(), time.perf_counter()
        fitted = clone(est).fit(X[tr], y[tr])
        p = fitted.predict_proba(X[te])
        cpu, wall = cpu + time.process_time() - c0, wall + time.perf_counter() - w0
        if y.ndim == 1:
            full = np.zeros((len(te), int(y.max()) + 1))
            full[:, fitted.classes_] = p
            p = full
        P.append(p)
    return {"cpu_per_fold": cpu / n_folds, "wall_per_fold": wall / n_folds, "P": P, "rss_mb": peak_rss_mb()}


def _plain_file(root: Path, path: Path, layer: int, kind: str, probe: str, n_folds: int) -> Path:
    return root / "plain" / f"{path.stem}_L{layer}_{kind}_{probe}_{n_folds}folds.npz"


def store_plain(root: Path, path: Path, layer: int, kind: str, probe: str, n_folds: int, p: dict) -> None:
    """Keep a plain run's test probabilities and times, so ``--reuse-plain`` can rerun the fast side alone."""
    f = _plain_file(root, path, layer, kind, probe, n_folds)
    f.parent.mkdir(exist_ok=True)
    np.savez(f, cpu_per_fold=p["cpu_per_fold"], wall_per_fold=p["wall_per_fold"], **{f"P{i}": q for i, q in enumerate(p["P"])})


def plain_stored(root: Path, path: Path, layer: int, kind: str, probe: str, n_folds: int) -> dict | None:
    """A stored plain run (see :func:`store_plain`), or None. Only valid while the cache and the exact probe are unchanged."""
    f = _plain_file(root, path, layer, kind, probe, n_folds)
    if not f.exists():
        return None
    with np.load(f, allow_pickle=False) as z:
        return {"cpu_per_fold": float(z["cpu_per_fold"]), "wall_per_fold": float(z["wall_per_fold"]),
                "P": [z[f"P{i}"] for i in range(n_folds)], "stored": True}


def in_child(fn, *args):
    """Run ``fn(*args)`` in a fresh spawned process, so its time and peak memory are its own."""
    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args)


def emodb_table(cache_path: str, probes: tuple[str, ...] = PROBES) -> None:
    """The README's EmoDB figures per hidden state: default probes, fast paths forced, exact reference."""
    from sklearn.base import clone

    from probekit.cache import EmbeddingCache
    from probekit.probe.probes import make_probe
    from probekit.probe.splits import make_folds
    from probekit.probe.tasks import TaskSpec, build_targets

    cache = EmbeddingCache(cache_path)
    meta = {k: np.asarray(v, dtype=object) for k, v in cache.metadata.items()}
    setups = [
        ("7-class UAR, LOSO", TaskSpec("multiclass", "label"), "loso", ("logreg", "mlp", "lgbm")),
        ("negative F1, LOSO", TaskSpec("binary", "labels", positive="negative"), "loso", ("logreg", "mlp", "lgbm")),
        ("9-label weighted F1, 5-fold", TaskSpec("multilabel", "labels"), "speaker-kfold", ("logreg", "mlp", "lgbm")),
    ]
    print(f"\n## EmoDB ({cache_path}): {len(cache)} clips x {cache.num_layers} hidden states x {cache.dim}\n")
    print("| task | probe | hidden state | exact reference | default | forced fast path | default - exact (pt) | forced fast - exact (pt) |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    worst = {"default": 0.0, "fast": 0.0}
    for title, spec, cv, names in setups:
        targets = build_targets(spec, meta)
        rows = np.flatnonzero(targets.mask)
        groups = meta["speaker"][rows].astype(str)
        y = targets.y
        folds = make_folds(cv, groups, y, n_folds=5, seed=0)
        for name in (n for n in names if n in probes):
            for layer in range(cache.num_layers):
                X = cache.read_layer(layer, dtype=None, rows=rows)
                exact = []
                for tr, te in folds:
                    fitted = clone(make_probe(name, exact=True)).fit(X[tr], y[tr])
                    p = fitted.predict_proba(X[te])
                    if y.ndim == 1:
                        full = np.zeros((len(te), int(y.max()) + 1))
                        full[:, fitted.classes_] = p
                        p = full
                    exact.append(p)
                ref = headline(y, exact, folds)
                default = headline(y, make_probe(name).fold_proba(X, y, folds, groups=groups), folds)
                forced = make_probe(name, **({} if name == "logreg" else {"fast_min_rows": 0}))
                fast = headline(y, forced.fold_proba(X, y, folds, groups=groups), folds)
                worst["default"] = max(worst["default"], abs(default - ref) * 100)
                worst["fast"] = max(worst["fast"], abs(fast - ref) * 100)
                print(f"| {title} | {name} | {layer} | {ref:.4f} | {default:.4f} | {fast:.4f} | "
                      f"{100 * (default - ref):+.2f} | {100 * (fast - ref):+.2f} |", flush=True)
    print(f"\nLargest |default - exact|: {worst['default']:.2f} points; largest |forced fast - exact|: {worst['fast']:.2f} points.")


def _tree_pss_mb(root_pid: int) -> float:
    """The summed proportional set size (MB) of process ``root_pid`` and every descendant (Linux /proc):
    shared pages counted once overall, so the sum is the memory the process tree holds."""
    tree, frontier = [], [root_pid]
    while frontier:  # descendants through /proc/PID/task/TID/children: no scan of every process
        pid = frontier.pop()
        tree.append(pid)
        try:
            for task in Path(f"/proc/{pid}/task").iterdir():
                frontier += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    total = 0
    for pid in tree:
        try:
            for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    total += int(line.split()[1])
        except OSError:
            continue
    return total / 1024


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def workload(root: Path, jobs: int, layers: str | None = None, extra: tuple[str, ...] = ()) -> None:
    """The issue's workload through the CLI, measured whole (see the module docstring); ``layers``
    (e.g. ``10-13``) runs a subset, ``extra`` are further ``probekit probe`` arguments."""
    path = make_cache(root / f"synthetic_20630x{LAYERS}.h5", 20630, LAYERS)
    probes = [a for name in PROBES for a in ("--probe", name)]
    runs = {
        "binary": ["--task", "binary", "--target", "negative", "--positive", "negative"],
        "11-label": ["--task", "multilabel", "--target", "labels", "--labels", ",".join(LABELS)],
    }
    env = dict(USER_ENV)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(__file__).resolve().parents[1])] + [p for p in [env.get("PYTHONPATH")] if p])
    print(f"# workload: probekit probe {path} (20,630 x {LAYERS} x 1024 float16), {' '.join(probes)}, speaker-kfold 5, --jobs {jobs}; "
          f"{os.cpu_count()} cpus; layers {layers or 'all'}{'; ' + ' '.join(extra) if extra else ''}; "
          f"the caller's OMP_NUM_THREADS={env.get('OMP_NUM_THREADS', 'unset')}", flush=True)
    totals = {"wall": 0.0, "rss": 0.0, "pss": 0.0}
    for kind, task_args in runs.items():
        tag = f"workload_{kind}_jobs{jobs}" + (f"_layers{layers}" if layers else "") + ("_extra" if extra else "")
        out, log = root / tag, root / f"{tag}.log"
        cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "probekit", "probe", str(path), *task_args, *probes,
               "--cv", "speaker-kfold", "--folds", "5", "--seed", "0", "--jobs", str(jobs), "--out", str(out),
               *(["--layers", layers] if layers else []), *extra]
        before = _uptime()
        peak_pss = 0.0
        with open(log, "w") as fh:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env)
            while proc.poll() is None:
                peak_pss = max(peak_pss, _tree_pss_mb(proc.pid))
                time.sleep(1.0)
        after = _uptime()
        text = log.read_text()
        if proc.returncode != 0:
            raise SystemExit(f"{kind}: probekit probe exited {proc.returncode}; see {log}")
        wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", text).group(1)
        secs = sum(float(x) * 60**i for i, x in enumerate(reversed(wall.split(":"))))
        rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1)) / 1024
        cpu = sum(float(re.search(rf"{k} time \(seconds\): (\S+)", text).group(1)) for k in ("User", "System"))
        per_probe = re.search(r"time per probe: (.*)", text)
        print(f"  {kind}: wall {secs:.1f} s ({secs / 60:.2f} min), CPU {cpu:.0f} s (user+sys, children included), "
              f"peak RSS of the largest process {rss:.0f} MB, peak PSS of the process tree {peak_pss:.0f} MB; "
              f"{per_probe.group(1) if per_probe else ''}\n    uptime before: {before}\n    uptime after:  {after}\n    log: {log}", flush=True)
        totals["wall"] += secs
        totals["rss"] = max(totals["rss"], rss)
        totals["pss"] = max(totals["pss"], peak_pss)
    print(f"workload total (binary + 11-label, measured): wall {totals['wall']:.1f} s = {totals['wall'] / 60:.2f} min; "
          f"peak RSS {totals['rss']:.0f} MB (largest process), peak PSS {totals['pss']:.0f} MB (whole process tree)", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "probekit_bench"), help="where the synthetic caches go (reused)")
    ap.add_argument("--sizes", default="5000,20630,80000")
    ap.add_argument("--generators", default="planted,hard")
    ap.add_argument("--tasks", default="binary,11-label")
    ap.add_argument("--probes", default=",".join(PROBES), help="probes measured (comma-separated), e.g. lgbm to rerun its rows alone")
    ap.add_argument("--plain-folds", type=int, default=1, help="folds the plain estimators are fitted on above 5,000 segments")
    ap.add_argument("--plain-max-n", type=int, default=20630, help="larger sizes time the fast path only")
    ap.add_argument("--plain-skip", default="", help="TASK:PROBE pairs (comma-separated) whose plain fits are skipped above 5,000 segments, "
                    "e.g. 11-label:lgbm (about 11 CPU minutes per fold at 20,630)")
    ap.add_argument("--reuse-plain", action="store_true", help="take the plain estimators' probabilities and times from an earlier run's "
                    "store under --dir (written by every run); the exact probes and caches must be unchanged since")
    ap.add_argument("--emodb", default=None, help="an EmoDB cache (probekit extract, whisper-tiny.en) for the real-data table")
    ap.add_argument("--workload", action="store_true", help="run the issue's whole workload through the CLI (measured, not extrapolated) and stop")
    ap.add_argument("--workload-jobs", type=int, default=2, help="--jobs of the --workload runs")
    ap.add_argument("--workload-layers", default=None, help="--layers of the --workload runs (default: all 25)")
    ap.add_argument("--workload-args", default="", help="further probekit probe arguments of the --workload runs, space-separated "
                    "(e.g. '--param lgbm.n_jobs=2' with --workload-jobs 1 to compare threads with worker processes)")
    args = ap.parse_args()
    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    if args.workload:
        workload(root, args.workload_jobs, args.workload_layers, tuple(args.workload_args.split()))
        return
    kinds = tuple(args.tasks.split(","))
    probes = tuple(args.probes.split(","))
    if set(probes) - set(PROBES):
        ap.error(f"--probes: unknown {sorted(set(probes) - set(PROBES))}; use some of {', '.join(PROBES)}")
    print(f"# probe_speed: one thread per process (OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}), {os.cpu_count()} cpus, "
          f"machine shared with other jobs; times are CPU seconds of the measuring process", flush=True)
    table = []
    for gen in [g for g in args.generators.split(",") if g]:  # --generators "" with --emodb: the EmoDB table alone
        for n in [int(s) for s in args.sizes.split(",") if s]:
            # The planted hotline-size cache is sweep_speed.py's 25-layer one; the others need only the measured layer's
            # neighbours, so they get 4 layers (the middle one measured is the signal's peak either way).
            n_layers = LAYERS if n == 20630 and gen == "planted" else 4
            maker = make_cache if gen == "planted" else make_hard_cache
            name = "synthetic" if gen == "planted" else "hard"
            path = maker(root / f"{name}_{n}x{n_layers}.h5", n, n_layers)
            layer = n_layers // 2
            fast = in_child(fast_child, str(path), layer, kinds, probes)
            for kind in kinds:
                X, y, _groups, folds = _setup(str(path), kind, layer)
                del X
                for probe in probes:
                    f = fast[(kind, probe)]
                    row = {"gen": gen, "n": n, "task": kind, "probe": probe, "fast_cpu": f["cpu"], "fast_wall": f["wall"],
                           "fast_f1_all": headline(y, f["P"], folds), "rss": fast["rss_mb"], "report": f["report"]}
                    if n <= args.plain_max_n and (n <= 5000 or f"{kind}:{probe}" not in args.plain_skip.split(",")):
                        k = 5 if n <= 5000 else args.plain_folds
                        p = plain_stored(root, path, layer, kind, probe, k) if args.reuse_plain else None
                        if p is None:
                            p = in_child(plain_child, str(path), layer, kind, probe, k)
                            store_plain(root, path, layer, kind, probe, k, p)
                        row.update(plain_cpu=5 * p["cpu_per_fold"], plain_wall=5 * p["wall_per_fold"], folds=k,
                                   fast_f1=headline(y, f["P"][:k], folds[:k]), plain_f1=headline(y, p["P"], folds[:k]))
                    table.append(row)
                    print(f"  {gen} n={n} {kind} {probe}: fast {row['fast_cpu']:.1f} s CPU / layer (wall {row['fast_wall']:.1f})"
                          + (f"; plain {row['plain_cpu']:.1f} s CPU / layer from {row['folds']} fold(s) (wall {row['plain_wall']:.1f}"
                             f"{', stored from an earlier run' if p.get('stored') else ''}); "
                             f"F1 fast {row['fast_f1']:.4f} plain {row['plain_f1']:.4f}" if "plain_cpu" in row else "")
                          + f"; {row['report'].get('solver')}", flush=True)
    if not table:  # --generators "": the EmoDB table alone
        if args.emodb:
            emodb_table(args.emodb, probes)
        return
    print("\n| generator | segments | task | probe | fast s/layer | plain s/layer | speed-up | F1 fast | F1 plain | fast - plain (pt) | plain folds | fast: 25 layers, 1 core | plain: 25 layers, 1 core |")
    print("|---|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in table:
        if "plain_cpu" in r:
            print(f"| {r['gen']} | {r['n']} | {r['task']} | {r['probe']} | {r['fast_cpu']:.1f} | {r['plain_cpu']:.1f} | **{r['plain_cpu'] / r['fast_cpu']:.1f}x** | "
                  f"{r['fast_f1']:.4f} | {r['plain_f1']:.4f} | {100 * (r['fast_f1'] - r['plain_f1']):+.2f} | {r['folds']} | "
                  f"~{LAYERS * r['fast_cpu'] / 60:.1f} min | ~{LAYERS * r['plain_cpu'] / 60:.1f} min |")
        else:
            print(f"| {r['gen']} | {r['n']} | {r['task']} | {r['probe']} | {r['fast_cpu']:.1f} | not run | | {r['fast_f1_all']:.4f} (5 folds) | | | | "
                  f"~{LAYERS * r['fast_cpu'] / 60:.1f} min | |")
    for gen in sorted({r["gen"] for r in table}):
        for n in sorted({r["n"] for r in table if r["gen"] == gen}):
            rows = [r for r in table if r["gen"] == gen and r["n"] == n]
            fast_total = LAYERS * sum(r["fast_cpu"] for r in rows)
            line = (f"{gen}, {n} segments, {len(probes)} probe(s) x {len(kinds)} tasks x {LAYERS} layers x 5 folds: fast ~{fast_total / 60:.1f} min CPU "
                    f"(~{fast_total / 120:.1f} min on 2 cores with --jobs 2), peak RSS of the fast child {rows[0]['rss']:.0f} MB")
            if all("plain_cpu" in r for r in rows):
                plain_total = LAYERS * sum(r["plain_cpu"] for r in rows)
                line += f"; plain ~{plain_total / 3600:.1f} h CPU; x{plain_total / fast_total:.1f}"
            print(line + " (extrapolated from one layer)")
    if args.emodb:
        emodb_table(args.emodb, probes)


if __name__ == "__main__":
    main()

"""LightGBM at hotline scale, one fold: the library's fast path (``lgbm`` probe) against plain LightGBM.

The fast path lives in :class:`probekit.probe.probes.FastLGBMProbe`: PCA fitted on the training part
(``--dims``), ``max_bin=63``, early stopping on a speaker-grouped 10 % split of the training part,
one binned dataset per fold for every label. The plain side is ``make_probe("lgbm", exact=True)``
(``LGBMClassifier`` on all 1024 standardised dims, 255 bins, 100 rounds). Middle layer of the
20,630 x 25 x 1024 synthetic cache (built by ``sweep_speed.py`` if missing), speaker-grouped fold 0
of 5: one fold, a stated subset. ``benchmarks/probe_speed.py`` measures every probe and task.

Run: ``python benchmarks/lgbm_fast_path.py [--task 11-label] [--dims 32]``
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from probe_speed import _setup, headline  # noqa: E402
from sweep_speed import make_cache  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "probekit_bench"))
    ap.add_argument("--task", default="binary", choices=("binary", "11-label"))
    ap.add_argument("--dims", type=int, default=64)
    args = ap.parse_args()
    from sklearn.base import clone

    from probekit.probe.probes import make_probe

    path = make_cache(Path(args.dir) / "synthetic_20630x25.h5", 20630, 25)
    X, y, groups, folds = _setup(str(path), args.task, 12)
    tr, te = folds[0]
    t0 = time.process_time()
    plain = clone(make_probe("lgbm", exact=True)).fit(X[tr], y[tr])
    p_plain = plain.predict_proba(X[te])
    t_plain = time.process_time() - t0
    fast = make_probe("lgbm", pca_dims=args.dims)
    t0 = time.process_time()
    p_fast = fast.fold_proba(X, y, [(tr, te)], groups=groups)[0]
    t_fast = time.process_time() - t0
    f_plain, f_fast = headline(y, [p_plain], [(tr, te)]), headline(y, [p_fast], [(tr, te)])
    rep = fast.fold_reports_[0]
    print(f"# lgbm_fast_path: 20630 segments x 1024 dims, layer 12, {args.task}, fold 0 of 5 (speaker-grouped); CPU seconds, one thread")
    print("| path | features | max_bin | rounds | fit + predict (s) | F1 |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| plain LightGBM (exact probe) | 1024 | 255 | 100 | {t_plain:.1f} | {f_plain:.4f} |")
    print(f"| fast path | {rep['pca_dims']} | {rep['max_bin']} | {rep['rounds']} | {t_fast:.1f} | {f_fast:.4f} |")
    print(f"speed-up x{t_plain / t_fast:.1f}; F1 {100 * (f_fast - f_plain):+.2f} points (fast - plain)")


if __name__ == "__main__":
    main()

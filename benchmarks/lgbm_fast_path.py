"""LightGBM at hotline scale: plain (all 1024 dims, 255 bins, fixed rounds) against the fast path.

Fast path, all fitted on the training fold only:
1. PCA to ``--dims`` components (randomised SVD, float32),
2. ``max_bin=63`` histograms,
3. early stopping on a speaker-grouped 10 % validation split of the training fold (no test rows).

Uses the synthetic 20,630 x 25 x 1024 cache that ``sweep_speed.py`` builds (or builds it), the
middle layer, binary task, speaker-grouped fold 0 (one fold: a stated subset, to stay short on
2 shared cores). Prints time and F1 for both, measured side by side in this run.

Run: ``OMP_NUM_THREADS=1 python benchmarks/lgbm_fast_path.py``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from sweep_speed import f1_of, folds, make_cache, targets  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", default=os.path.join(tempfile.gettempdir(), "probekit_bench"))
    ap.add_argument("--n", type=int, default=20630)
    ap.add_argument("--dims", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=300)
    args = ap.parse_args()
    import lightgbm as lgb
    from sklearn.decomposition import PCA
    from sklearn.model_selection import GroupShuffleSplit

    from probekit.cache import EmbeddingCache

    layers = 25 if args.n == 20630 else 4
    path = make_cache(Path(args.dir) / f"synthetic_{args.n}x{layers}.h5", args.n, layers)
    cache = EmbeddingCache(path)
    Y = targets(cache, "binary")[:, 0]
    tr, te = folds(cache)[0]
    X = cache.read_layer(layers // 2, dtype=np.float32)
    threads = int(os.environ.get("OMP_NUM_THREADS", "1"))
    common = dict(learning_rate=0.05, num_leaves=31, n_jobs=threads, verbose=-1, random_state=0)

    t0 = time.perf_counter()
    plain = lgb.LGBMClassifier(n_estimators=args.rounds, **common).fit(X[tr], Y[tr])
    t_plain = time.perf_counter() - t0
    f1_plain = f1_of("binary", Y[te][:, None], (plain.predict_proba(X[te])[:, 1] - 0.5)[:, None])

    t0 = time.perf_counter()
    fit_rows, val_rows = next(GroupShuffleSplit(n_splits=1, test_size=0.1, random_state=0).split(tr, groups=cache.metadata["speaker"][tr]))
    pca = PCA(n_components=args.dims, svd_solver="randomized", random_state=0).fit(X[tr])
    Ztr, Zte = pca.transform(X[tr]).astype(np.float32), pca.transform(X[te]).astype(np.float32)
    fast = lgb.LGBMClassifier(n_estimators=args.rounds, max_bin=63, **common)
    fast.fit(Ztr[fit_rows], Y[tr][fit_rows], eval_set=[(Ztr[val_rows], Y[tr][val_rows])], callbacks=[lgb.early_stopping(20, verbose=False)])
    t_fast = time.perf_counter() - t0
    f1_fast = f1_of("binary", Y[te][:, None], (fast.predict_proba(Zte)[:, 1] - 0.5)[:, None])

    print(f"# lgbm_fast_path: {args.n} segments x 1024 dims, layer {layers // 2}, binary, fold 0 of 5 (speaker-grouped), threads={threads}")
    print("| path | features | max_bin | rounds | fit time (s) | F1 |")
    print("|---|---:|---:|---:|---:|---:|")
    print(f"| plain LightGBM | 1024 | 255 | {args.rounds} | {t_plain:.1f} | {f1_plain:.3f} |")
    print(f"| fast path (PCA + bins + early stop) | {args.dims} | 63 | {fast.best_iteration_ or args.rounds} | {t_fast:.1f} | {f1_fast:.3f} |")
    print(f"speed-up x{t_plain / t_fast:.1f}; F1 cost {100 * (f1_plain - f1_fast):+.2f} points (positive = fast path lower)")


if __name__ == "__main__":
    main()

"""What a sweep's out-of-fold refit costs: one sweep on a synthetic cache, its time split in one process.

    PYTHONPATH=$PWD python benchmarks/sweep_oof_cost.py --probe logreg-fast --rows 2000 --layers 7 --dim 256

Prints the seconds spent on the nested-CV cells, on the refit's fits (``evaluate_layer``; for probes
other than ``logreg-fast`` these are the outer cells, which a sweep fits anyway, so they count as
"before"), on its pooled metrics and 1000-resample speaker bootstrap (``layer_row``)
and on the tied sets and calibration (``sweep_document``), and the ratio after/before. One run on
whatever machine it is: read the ratio, not the seconds.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import probekit.probe.sweep as sw
from probekit.cache import write_cache


def _cache(path: Path, n: int, layers: int, dim: int) -> Path:
    rng = np.random.default_rng(0)
    y = rng.random(n) < 0.4
    emb = rng.normal(size=(n, layers, dim)).astype(np.float32)
    emb[:, layers // 2, :4] += 0.8 * y[:, None]
    meta = {"speaker": [f"s{i % 40:02d}" for i in range(n)], "tag": ["yes" if v else "no" for v in y]}
    write_cache(path, [f"id{i:05d}" for i in range(n)], emb.astype(np.float16), meta, attrs={"encoder": "bench"})
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--probe", default="logreg-fast")
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--layers", type=int, default=7)
    ap.add_argument("--dim", type=int, default=256)
    args = ap.parse_args()
    spent = {"evaluate_layer": 0.0, "layer_row": 0.0}
    for name in spent:  # time the refit's two steps where the sweep calls them
        real = getattr(sw, name)

        def timed(*a, _real=real, _name=name, **k):
            t = time.perf_counter()
            out = _real(*a, **k)
            spent[_name] += time.perf_counter() - t
            return out

        setattr(sw, name, timed)
    with tempfile.TemporaryDirectory() as tmp:
        cache = _cache(Path(tmp) / "c.h5", args.rows, args.layers, args.dim)
        spec = sw.SweepSpec(task="binary", target="tag", positive="yes", probe=args.probe,
                            grid=(("C", (0.01, 0.1, 1.0, 10.0)),), outer_folds=5, inner_folds=3)
        t0 = time.perf_counter()
        res = sw.run_sweep([cache], spec, Path(tmp) / "out")
        total = time.perf_counter() - t0
        t0 = time.perf_counter()
        sw.sweep_document(res)
        annotate = time.perf_counter() - t0
    cells = total - spent["evaluate_layer"] - spent["layer_row"]
    # Without the refit a sweep would still fit every outer cell. logreg-fast solves those with the inner
    # cells (inside `cells`); for other probes the refit's fits ARE the outer cells, so they count as before.
    before = cells if args.probe == "logreg-fast" else cells + spent["evaluate_layer"]
    print(f"{args.probe} n={args.rows} layers={args.layers} dim={args.dim}: cells {cells:.1f} s, refit fits {spent['evaluate_layer']:.1f} s"
          f"{'' if args.probe == 'logreg-fast' else ' (the outer cells themselves)'}, "
          f"pooled metrics + bootstrap {spent['layer_row']:.1f} s, tied sets + calibration {annotate:.1f} s; "
          f"after/before = {(total + annotate) / before:.2f}")


if __name__ == "__main__":
    main()

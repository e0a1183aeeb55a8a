"""Synthetic caches for the sweep tests: only one layer carries a planted signal."""

from __future__ import annotations

import numpy as np

from probekit.cache import write_cache


def planted_cache(path, n=240, layers=3, dim=12, signal_layer=1, speakers=12, seed=0, labels=3, row_feature=False):
    """A cache whose layer ``signal_layer`` predicts the ``binary`` tag, the three-class ``class3``
    column and the ``labels`` set column.

    With ``row_feature`` the last feature of every layer is the row index (exact in float16 below 2048),
    so an instrumented probe can tell which rows it was fitted on.
    """
    rng = np.random.default_rng(seed)
    emb = rng.normal(size=(n, layers, dim)).astype(np.float32)
    names = [f"e{j}" for j in range(labels)]
    Z = rng.normal(size=(n, labels))
    has = Z > 0.3
    emb[:, signal_layer, :labels] += 1.5 * has
    if row_feature:
        emb[:, :, -1] = np.arange(n)[:, None]
    sets = [";".join(nm for nm, h in zip(names, row) if h) or "none" for row in has]
    meta = {
        "speaker": [f"s{i % speakers:02d}" for i in range(n)],
        "labels": sets,
        "binary": ["neg" if h[0] else "pos" for h in has],
        "class3": ["a" if h[0] else "b" if h[1] else "c" for h in has],
    }
    write_cache(path, [f"id{i:05d}" for i in range(n)], emb, meta, attrs={"encoder": f"synthetic-{seed}"})
    return path

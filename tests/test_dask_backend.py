"""The same sweep on a loopback dask.distributed cluster, and on local processes, equals --jobs 1."""

from __future__ import annotations

import pytest

from probekit.probe.sweep import SweepSpec, run_sweep

from _sweep_data import planted_cache

distributed = pytest.importorskip("distributed")


def _key(res):
    return [(r["layer"], round(r["metrics"]["f1"]["mean"], 12), r["fold_params"]) for r in res.rows]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("dask")
    cache = planted_cache(root / "a.h5", n=180, layers=3, signal_layer=2)
    spec = SweepSpec(task="binary", target="binary", positive="neg", grid=(("C", (0.01, 1.0)),), outer_folds=3, inner_folds=2)
    ref = run_sweep([cache], spec, root / "jobs1")
    return root, cache, spec, ref


def test_dask_local_cluster_matches_jobs_1(setup):
    root, cache, spec, ref = setup
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False, protocol="tcp://", host="127.0.0.1", dashboard_address=None) as cluster:
        res = run_sweep([cache], spec, root / "dask", backend="dask", scheduler=cluster.scheduler_address)
    assert res.computed == ref.computed
    assert _key(res) == _key(ref)


def test_local_processes_match_jobs_1(setup):
    root, cache, spec, ref = setup
    res = run_sweep([cache], spec, root / "jobs2", n_jobs=2)
    assert _key(res) == _key(ref)


def test_unreachable_scheduler_is_a_clear_error(setup):
    root, cache, spec, _ = setup
    from probekit.probe.distributed import BackendError

    with pytest.raises(BackendError, match="scheduler"):
        run_sweep([cache], spec, root / "none", backend="dask", scheduler="tcp://127.0.0.1:1")

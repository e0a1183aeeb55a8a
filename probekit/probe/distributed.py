"""Where a sweep's layer jobs run: in this process, in local worker processes, or on a dask cluster.

A job is small plain data (a cache path, a layer index, fold assignments, labels and the cells to
compute); the worker reads its layer from the HDF5 file itself, so no feature matrix ever travels
through a pipe or a scheduler, and a worker holds about one layer's matrix at a time.
"""

from __future__ import annotations

from probekit.errors import ProbekitError

import multiprocessing as mp
import os
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed

__all__ = ["BackendError", "run_jobs"]


class BackendError(ProbekitError, RuntimeError):
    """A backend is unknown, misconfigured or unreachable."""


def _init_worker() -> None:
    # Several worker processes on one machine: one BLAS/torch thread each, or they fight for cores.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)


def run_jobs(
    fn: Callable,
    jobs: Sequence,
    *,
    backend: str = "local",
    n_jobs: int = 1,
    scheduler: str | None = None,
) -> Iterator[tuple[int, object]]:
    """Run ``fn(job)`` for every job; yield ``(job_index, result)`` as each finishes.

    backend ``"local"``: ``n_jobs == 1`` runs in this process (no start-up cost, easiest to debug);
    ``n_jobs > 1`` uses that many spawned processes. backend ``"dask"``: submits to the existing
    ``dask.distributed`` scheduler at ``scheduler`` (e.g. ``tcp://10.0.0.5:8786``); the workers
    must be able to read the cache path and import probekit.
    """
    if backend == "local":
        if n_jobs < 1:
            raise BackendError(f"--jobs must be at least 1, not {n_jobs}")
        if n_jobs == 1 or len(jobs) <= 1:
            for i, job in enumerate(jobs):
                yield i, fn(job)
            return
        ctx = mp.get_context("spawn")
        with ProcessPoolExecutor(max_workers=min(n_jobs, len(jobs)), mp_context=ctx, initializer=_init_worker) as pool:
            futures = {pool.submit(fn, job): i for i, job in enumerate(jobs)}
            for fut in as_completed(futures):
                yield futures[fut], fut.result()
        return
    if backend == "dask":
        if not scheduler:
            raise BackendError("--backend dask needs --scheduler ADDRESS (e.g. tcp://127.0.0.1:8786)")
        try:
            from dask.distributed import Client
            from dask.distributed import as_completed as dask_completed
        except ImportError as exc:
            raise BackendError("the dask backend needs dask[distributed]: pip install 'probekit[dask]'") from exc
        try:
            client = Client(scheduler, timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise BackendError(f"cannot reach the dask scheduler at {scheduler}: {exc}") from exc
        try:
            futures = [client.submit(fn, job, pure=False) for job in jobs]
            index = {f.key: i for i, f in enumerate(futures)}
            for fut in dask_completed(futures):
                yield index[fut.key], fut.result()
        finally:
            client.close()
        return
    raise BackendError(f"unknown backend {backend!r}: use 'local' or 'dask'")

"""``probekit sweep``: nested-CV hyperparameter search over every layer, resumable."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Optional

import typer

from probekit.cli._app import app


@app.command()
def sweep(
    caches: Annotated[Optional[list[Path]], typer.Argument(help="Cache files (one per encoder). May come from --file instead.")] = None,
    file: Annotated[Optional[Path], typer.Option("--file", "-f", help="A TOML sweep file (recipes/sweeps/*.toml); command-line options override it.")] = None,
    task: Annotated[Optional[str], typer.Option(help="binary, multiclass or multilabel.")] = None,
    target: Annotated[Optional[str], typer.Option(help="Metadata column with the labels.")] = None,
    positive: Annotated[Optional[str], typer.Option(help="Binary task: the label that marks the positive class.")] = None,
    probe: Annotated[Optional[str], typer.Option(help="logreg-fast (batched, default), logreg, mlp or lgbm.")] = None,
    grid: Annotated[Optional[list[str]], typer.Option(help="NAME=V1,V2,... ; repeatable. E.g. C=0.01,0.1,1,10")] = None,
    range_: Annotated[Optional[list[str]], typer.Option("--range", help="NAME=LOW:HIGH[:log|lin|int] for random search; repeatable.")] = None,
    trials: Annotated[Optional[int], typer.Option(help="Random search: number of draws from --range.")] = None,
    layers: Annotated[Optional[str], typer.Option(help="Hidden states, e.g. 0-12 or 2,4,6 (default all).")] = None,
    cv: Annotated[Optional[str], typer.Option(help="Outer protocol: speaker-kfold, loso or split.")] = None,
    folds: Annotated[Optional[int], typer.Option(help="Outer speaker-grouped folds.")] = None,
    inner_folds: Annotated[Optional[int], typer.Option(help="Inner speaker-grouped folds for selection.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for folds and random search.")] = None,
    jobs: Annotated[int, typer.Option(help="Local worker processes.")] = 1,
    backend: Annotated[str, typer.Option(help="local or dask.")] = "local",
    scheduler: Annotated[Optional[str], typer.Option(help="dask scheduler address, e.g. tcp://10.0.0.5:8786.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Output folder (results.jsonl store, results.json, results.csv, sweep_layers.csv, layer_curve.png).")] = None,
) -> None:
    """Tune probe hyperparameters per layer with nested speaker-grouped CV; rerun to resume or widen the grid."""
    from rich.console import Console
    from rich.table import Table

    from probekit.cache import CacheError
    from probekit.probe.distributed import BackendError
    from probekit.probe.store import StoreError
    from probekit.probe.sweep import SweepError, SweepSpec, parse_grid, parse_range, run_sweep, write_outputs

    console = Console()
    try:
        kw: dict = {}
        if file is not None:
            from probekit.probe.sweep import load_sweep_file

            kw = load_sweep_file(file)
        files = [str(c) for c in caches] if caches else [str(c) for c in kw.pop("caches", [])]
        out_dir = out or Path(kw.pop("out", "sweep_out"))
        jobs = kw.pop("jobs", jobs) if jobs == 1 else jobs
        backend = kw.pop("backend", backend) if backend == "local" else backend
        scheduler = scheduler or kw.pop("scheduler", None)
        for k in ("caches", "out", "jobs", "backend", "scheduler"):
            kw.pop(k, None)
        given = {"task": task, "target": target, "positive": positive, "probe": probe, "trials": trials, "cv": cv, "outer_folds": folds, "inner_folds": inner_folds, "seed": seed}
        kw.update({k: v for k, v in given.items() if v is not None})
        if grid:
            kw["grid"] = parse_grid(grid)
        if range_:
            kw["ranges"] = parse_range(range_)
        if layers:
            sel: list[int] = []
            for part in layers.split(","):
                a, _, b = part.partition("-")
                sel += list(range(int(a), int(b) + 1)) if b else [int(a)]
            kw["layers"] = tuple(sel)
        if not files:
            raise SweepError("give at least one cache file (or `caches = [...]` in the sweep file)")
        if "task" not in kw or "target" not in kw:
            raise SweepError("--task and --target are required (or set them in the sweep file)")
        spec = SweepSpec(**kw)
        with console.status("sweeping...") as status:
            result = run_sweep(files, spec, out_dir, backend=backend, n_jobs=jobs, scheduler=scheduler, progress=lambda m: status.update(m))
        paths = write_outputs(result, out_dir)
    except (SweepError, StoreError, CacheError, BackendError, ValueError, TypeError) as exc:
        console.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc
    h = result.headline
    best = {(b["encoder"], b["probe"], b["layer"]) for b in result.best}
    table = Table(title=f"{spec.probe}: {h} on outer folds at the selected parameters (★ best mean)")
    for col in ("encoder", "layer", f"{h} mean ± std", "pooled", "best params", "inner"):
        table.add_column(col)
    for r in result.rows:
        s = r["metrics"][h]
        mark = (r["encoder"], r["probe"], r["layer"]) in best
        table.add_row(
            r["encoder"], str(r["layer"]) + (" ★" if mark else ""), f"{_fmt(s['mean'])} ± {_fmt(s['std'])}", _fmt(s["value"]),
            str(r["best_params"]), _fmt(r["inner_score"]), style="bold green" if mark else None,
        )
    console.print(table)
    console.print(f"cells computed {result.computed}, reused {result.reused}; wrote {', '.join(str(p) for p in paths.values())}")


def _fmt(x) -> str:
    """Three decimals; "–" for an undefined number (None, or NaN before the document is written)."""
    return "–" if x is None or not math.isfinite(x) else f"{x:.3f}"

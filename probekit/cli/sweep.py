"""``probekit sweep``: nested-CV hyperparameter search over every layer, resumable."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Annotated, Optional

import typer

from probekit.choices import Protocol, TaskKind
from probekit.cli._app import app, user_errors
from probekit.progress import make_console


@app.command()
def sweep(
    caches: Annotated[Optional[list[Path]], typer.Argument(help="Cache files (one per encoder). May come from --file instead.")] = None,
    file: Annotated[Optional[Path], typer.Option("--file", "-f", help="A TOML sweep file (recipes/sweeps/*.toml); options given here override it.")] = None,
    task: Annotated[Optional[TaskKind], typer.Option(help="What to predict.")] = None,
    target: Annotated[Optional[str], typer.Option(help="Label column.")] = None,
    positive: Annotated[Optional[str], typer.Option(help="Binary task: the label that marks the positive class.")] = None,
    probe: Annotated[Optional[str], typer.Option(help="logreg-fast (batched, default), logreg, mlp or lgbm.")] = None,
    param: Annotated[Optional[list[str]], typer.Option("--param", help="NAME=V1,V2,... : the grid, e.g. C=0.01,0.1,1,10. Repeatable.")] = None,
    range_: Annotated[Optional[list[str]], typer.Option("--range", help="NAME=LOW:HIGH[:log|lin|int] for random search; repeatable.")] = None,
    trials: Annotated[Optional[int], typer.Option(help="Random search: number of draws from --range.")] = None,
    layers: Annotated[Optional[str], typer.Option(help="Hidden states, e.g. 0-12 or 2,4,6 (default all).")] = None,
    cv: Annotated[Optional[Protocol], typer.Option(help="Outer protocol.")] = None,
    folds: Annotated[Optional[int], typer.Option(help="Outer speaker-grouped folds.")] = None,
    inner_folds: Annotated[Optional[int], typer.Option(help="Inner speaker-grouped folds for selection.")] = None,
    seed: Annotated[Optional[int], typer.Option(help="Seed for folds, random search and the bootstrap.")] = None,
    bootstrap: Annotated[Optional[int], typer.Option(help="Speaker resamples for the 95% intervals and the tied-layer tests (0 = none; default 1000).")] = None,
    manifest: Annotated[Optional[Path], typer.Option(help="Labelling manifest joined by id (default: the one the cache was extracted from).")] = None,
    jobs: Annotated[Optional[int], typer.Option(help="Local worker processes (default 1).")] = None,
    backend: Annotated[Optional[str], typer.Option(help="local or dask (default local).")] = None,
    scheduler: Annotated[Optional[str], typer.Option(help="dask scheduler address, e.g. tcp://10.0.0.5:8786.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Output folder (results.jsonl store, results.json, results.csv, sweep_layers.csv, layer_curve.png).")] = None,
) -> None:
    """Tune probe hyperparameters per layer with nested speaker-grouped CV; rerun to resume or widen the grid."""
    from rich.table import Table

    from probekit.probe.params import parse_grid
    from probekit.probe.probing import parse_layers
    from probekit.probe.sweep import SweepError, SweepSpec, parse_range, run_sweep, write_outputs
    from probekit.progress import WorkProgress
    from probekit.recipes.sweepfile import SweepFile, load_sweep_file
    from probekit.report.render import fmt

    screen = make_console()
    with user_errors("every finished cell is kept in the store (results.jsonl); rerun the same command to resume"):
        loaded = load_sweep_file(file) if file is not None else None
        given = {"task": task.value if task else None, "target": target, "positive": positive, "probe": probe, "trials": trials,
                 "cv": cv.value if cv else None, "outer_folds": folds, "inner_folds": inner_folds, "seed": seed, "bootstrap": bootstrap,
                 "manifest": str(manifest) if manifest else None, "layers": parse_layers(layers) if layers else None,
                 "grid": parse_grid(param) if param else None, "ranges": parse_range(range_) if range_ else None}
        given = {k: v for k, v in given.items() if v is not None}
        if loaded is not None:
            spec = replace(loaded.spec, **given)
        else:
            if "task" not in given or "target" not in given:
                raise SweepError("--task and --target are required (or give a sweep file with --file)")
            spec = SweepSpec(**given)  # run_sweep checks it (spec.problems()) before any work
        run = loaded or SweepFile(spec)
        files = [str(c) for c in caches] if caches else list(run.caches)
        if not files:
            raise SweepError("give at least one cache file (or `caches = [...]` in the sweep file)")
        out_dir = out or Path(run.out or "sweep_out")
        with WorkProgress("sweeping") as bar:
            result = run_sweep(files, spec, out_dir, backend=backend or run.backend or "local", n_jobs=jobs or run.jobs or 1,
                               scheduler=scheduler or run.scheduler, progress=bar)
        paths = write_outputs(result, out_dir)
    h = result.headline
    best = {(b["encoder"], b["probe"], b["layer"]) for b in result.best}
    table = Table(title=f"{spec.probe}: {h} on outer folds at the selected parameters (★ best mean)")
    for col in ("encoder", "layer", f"{h} mean ± std", "pooled", "best params", "inner"):
        table.add_column(col)
    for r in result.rows:
        s = r["metrics"][h]
        mark = (r["encoder"], r["probe"], r["layer"]) in best
        table.add_row(
            r["encoder"], str(r["layer"]) + (" ★" if mark else ""), f"{fmt(s['mean'])} ± {fmt(s['std'])}", fmt(s["value"]),
            str(r["best_params"]), fmt(r["inner_score"]), style="bold green" if mark else None,
        )
    screen.print(table)
    screen.print(f"cells computed {result.computed}, reused {result.reused}; wrote {', '.join(str(p) for p in paths.values())}")


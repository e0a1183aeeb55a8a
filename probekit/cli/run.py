"""``probekit run``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from probekit.cli._app import app, user_errors
from probekit.progress import make_console


@app.command()
def run(
    recipe: Annotated[Path, typer.Argument(help="A recipe TOML file, e.g. recipes/emodb/emodb.toml.")],
    data: Annotated[Optional[Path], typer.Option(help="Data folder (or a manifest file) for ${PROBEKIT_DATA}; default: $PROBEKIT_DATA, then the recipe's default_data.")] = None,
    model: Annotated[Optional[str], typer.Option(help="Run this encoder (hub id or folder) instead of the recipe's [[encoders]].")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Output folder (default runs/<recipe name>).")] = None,
    check: Annotated[bool, typer.Option("--check", help="Validate the recipe (names, grid parameters, manifest columns) and stop.")] = False,
) -> None:
    """Run a recipe's extract -> probe -> sweep steps, skipping the steps that are already finished."""
    from probekit.recipes._recipes import run_recipe, validate_recipe

    with user_errors("finished steps and the extraction journal are kept; rerun the same command to resume"):
        if check:
            r = validate_recipe(recipe, data)
            typer.echo(f"{recipe}: valid ({len(r.encoders)} encoder(s), {len(r.probes)} probe step(s), {len(r.sweeps)} sweep step(s))")
            return
        report = run_recipe(recipe, data=data, out=out, model=model, echo=typer.echo)
    for step in report.steps:
        typer.echo(f"{step.kind:<8} {step.name:<28} {step.status:<8} {step.path}")
        if step.skipped_rows:
            typer.echo(f"         {step.skipped_rows} unreadable or too-short row(s) left out; the cache lists them")
    for step in report.steps:
        if step.kind != "probe":
            continue
        _print_layer_table(step.name, step.path)


def _print_layer_table(name: str, folder: Path) -> None:
    """The probe step's layer table and the plots this run wrote (from the folder's record, never older files)."""
    import json

    from probekit.report.outputs import RECORD
    from probekit.report.render import rich_table

    results = folder / "results.json"
    if not results.is_file():
        return
    typer.echo(f"\n== {name}")
    make_console().print(rich_table(json.loads(results.read_text())))
    record = folder / RECORD
    written = json.loads(record.read_text())["files"] if record.is_file() else []
    for png in sorted(n for n in written if n.endswith(".png")):
        typer.echo(f"plot: {folder / png}")

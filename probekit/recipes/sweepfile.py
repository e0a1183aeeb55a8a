"""Sweep files (``recipes/sweeps/*.toml``): a :class:`~probekit.probe.sweep.SweepSpec` written down as TOML.

Keys: the fields of ``SweepSpec`` (task, target, positive, labels, probe, cv, outer_folds, ...), the run
options ``caches``, ``out``, ``jobs``, ``backend``, ``scheduler``, a ``[grid]`` table (``NAME = [values]``,
the same grid ``--param NAME=V1,V2`` gives) and a ``[range]`` table (``NAME = "LOW:HIGH[:log]"``). The
first lines are comments giving the command that runs the file. Unknown keys and bad values are all
reported at once, before any work.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from pathlib import Path

from probekit.probe.sweep import SweepError, SweepSpec, parse_range
from probekit.recipes._typed import typed_fields

__all__ = ["SweepFile", "load_sweep_file", "sweep_spec_from_table"]

RUN_KEYS = ("caches", "out", "jobs", "backend", "scheduler")


@dataclass(frozen=True)
class SweepFile:
    """A loaded sweep file: the spec and the run options it sets (``None``: not set in the file)."""

    spec: SweepSpec
    caches: tuple[str, ...] = ()
    out: str | None = None
    jobs: int | None = None
    backend: str | None = None
    scheduler: str | None = None


def sweep_spec_from_table(table: dict, where: str, problems: list[str], extra: tuple[str, ...] = ()) -> SweepSpec | None:
    """A :class:`SweepSpec` from a TOML table (a sweep file, or a recipe's ``[[sweeps]]`` step);
    problems are appended, ``None`` returned when there are any."""
    before = len(problems)
    fields = typed_fields(SweepSpec, table, where, problems, skip=("grid", "ranges"), extra=("range", *extra))
    grid = table.get("grid", {})
    ranges = table.get("range", {})
    if not isinstance(grid, dict) or any(not isinstance(v, list) or not v for v in grid.values()):
        problems.append(f"{where}: grid must be a table NAME = [values], each list non-empty")
        grid = {}
    if not isinstance(ranges, dict) or any(not isinstance(v, str) for v in ranges.values()):
        problems.append(f"{where}: range must be a table NAME = \"LOW:HIGH[:log|lin|int]\"")
        ranges = {}
    if not grid and not ranges:
        problems.append(f"{where}: a sweep needs a [grid] or [range] table")
    try:
        fields["ranges"] = parse_range([f"{k}={v}" for k, v in ranges.items()])
    except SweepError as exc:
        problems.append(f"{where}: {exc}")
    fields["grid"] = tuple((str(k), tuple(v)) for k, v in grid.items())
    if len(problems) > before:
        return None
    spec = SweepSpec(**fields)
    problems.extend(f"{where}: {p}" for p in spec.problems())
    return spec if len(problems) == before else None


def load_sweep_file(path: str | Path) -> SweepFile:
    """Read and check a sweep file; :class:`SweepError` lists every problem."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise SweepError(f"{path}: cannot read sweep file ({exc})") from exc
    problems: list[str] = []
    spec = sweep_spec_from_table({k: v for k, v in data.items() if k not in RUN_KEYS}, str(path), problems)
    run = typed_fields(SweepFile, {k: v for k, v in data.items() if k in RUN_KEYS}, str(path), problems, skip=("spec",))
    if problems or spec is None:
        raise SweepError(f"{path}:\n  - " + "\n  - ".join(problems))
    return SweepFile(spec=spec, **run)

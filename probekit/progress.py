"""Progress bars: the one protocol long work reports through, and its rich implementations.

A library function takes any object with ``start(total)`` and ``advance(n, description)``
(:class:`Progress`); the CLI passes a rich bar, tests and the Python API pass nothing. Extraction counts
seconds of audio (:class:`AudioProgress`, with audio-s/s); probing and sweeps count units of work
(:class:`WorkProgress`: layers x probes x folds), both with an ETA.
"""

from __future__ import annotations

import os
from typing import Protocol

from rich.console import Console
from rich.progress import BarColumn, ProgressColumn, Task, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import MofNCompleteColumn, Progress as RichProgress
from rich.text import Text


# Width when the output is a file, a pipe or a CI log: rich would assume 80 columns and cut encoder
# names to "whisper-ti…" and wrap the rate under the bar; a log has no screen edge to respect.
LOG_WIDTH = 160


def make_console(stderr: bool = False) -> Console:
    """The console commands print tables and bars on: the terminal's width on a terminal,
    :data:`LOG_WIDTH` columns otherwise (``$COLUMNS`` still wins where set)."""
    out = Console(stderr=stderr)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out = Console(stderr=stderr, width=LOG_WIDTH)
    return out


class AudioRateColumn(ProgressColumn):
    """Seconds of audio encoded per wall-clock second."""

    def render(self, task: Task) -> Text:
        speed = task.speed
        return Text("  -- audio-s/s" if speed is None else f"{speed:7.1f} audio-s/s", style="progress.data.speed")


class _RichBar:
    """A rich progress display shown while the ``with`` block runs (rich makes every call a no-op when disabled)."""

    def __enter__(self):
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()


class AudioProgress(_RichBar):
    """Progress over ``total_seconds`` of audio; ``advance(seconds)`` after each batch.

    ``enabled=False`` makes every call a no-op, for libraries and tests. Messages (bad rows)
    go through :meth:`log` so they print above the bar instead of breaking it.
    """

    def __init__(self, description: str, total_seconds: float, enabled: bool = True):
        self.enabled = enabled
        self._progress = RichProgress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.completed:8.1f}/{task.total:.1f} s"),
            AudioRateColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            TimeElapsedColumn(),
            console=make_console(stderr=True),
            disable=not enabled,
            # Rate over the last minute, so resumed (instant) batches do not inflate it for long.
            speed_estimate_period=60.0,
        )
        self._task = self._progress.add_task(description, total=max(total_seconds, 1e-9))

    def skip(self, seconds: float) -> None:
        """Account for audio done earlier (resumed from the journal) without counting it as speed."""
        self._progress.tasks[0].completed += seconds

    def advance(self, seconds: float) -> None:
        self._progress.advance(self._task, seconds)

    def log(self, message: str) -> None:
        if self.enabled:
            self._progress.console.print(message, markup=False, highlight=False)


class Progress(Protocol):
    """What long work reports to: ``start(total)`` once, then ``advance(n, description)`` as units finish."""

    def start(self, total: float) -> None: ...
    def advance(self, n: float = 1, description: str = "") -> None: ...


class NoProgress:
    """Reports nowhere: the default of every library function (tests, the Python API)."""

    def start(self, total: float) -> None:
        pass

    def advance(self, n: float = 1, description: str = "") -> None:
        pass


class WorkProgress(_RichBar):
    """A rich bar over counted units of work (e.g. layers x probes x folds) with elapsed time and ETA."""

    def __init__(self, description: str):
        self._progress = RichProgress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("ETA"), TimeRemainingColumn(),
            TimeElapsedColumn(), console=make_console(stderr=True),
        )
        self._description = description
        self._task = None

    def start(self, total: float) -> None:
        self._task = self._progress.add_task(self._description, total=total)

    def advance(self, n: float = 1, description: str = "") -> None:
        self._progress.update(self._task, advance=n, description=description or self._description)

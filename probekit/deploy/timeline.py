"""Windowed scoring of long recordings (whole calls) in bounded memory, with CSV and PNG output.

The file is streamed in blocks with soundfile and resampled with a streaming soxr resampler, so memory
holds one block plus one batch of windows whatever the call's length; only the per-window scores
(``n_windows x n_labels`` floats, about 100 kB for an hour at a 1 s hop) are kept.
"""

from __future__ import annotations

from probekit.errors import ProbekitError

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

_BLOCK_SECONDS = 20.0


class AudioReadError(ProbekitError, RuntimeError):
    """An audio file cannot be opened or decoded; the message names the file."""


def _open(path: Path):
    import soundfile as sf

    try:
        return sf.SoundFile(str(path))
    except (RuntimeError, sf.LibsndfileError, OSError) as exc:
        raise AudioReadError(f"{path}: cannot decode audio ({exc})") from exc


def iter_blocks(path: str | Path, rate: int, start: float | None = None, end: float | None = None,
                block_seconds: float = _BLOCK_SECONDS) -> Iterator[np.ndarray]:
    """Yield mono float32 blocks of ``path`` resampled to ``rate`` Hz, from ``start`` to ``end`` seconds.

    Reads only the frames needed, one block (``block_seconds`` of source audio) at a time.
    """
    import soxr

    path = Path(path)
    with _open(path) as f:
        sr = f.samplerate
        first = int(round((start or 0.0) * sr))
        last = f.frames if end is None else min(f.frames, int(round(end * sr)))
        if first > 0:
            f.seek(first)
        stream = soxr.ResampleStream(sr, rate, 1, dtype="float32") if sr != rate else None
        remaining = max(0, last - first)
        step = max(1, int(block_seconds * sr))
        while remaining > 0:
            try:
                block = f.read(min(step, remaining), dtype="float32", always_2d=True)
            except RuntimeError as exc:
                raise AudioReadError(f"{path}: decoding failed ({exc})") from exc
            if len(block) == 0:
                break
            remaining -= len(block)
            mono = block.mean(axis=1, dtype=np.float32) if block.shape[1] > 1 else block[:, 0]
            if stream is not None:
                mono = stream.resample_chunk(mono, last=remaining <= 0)
            if len(mono):
                yield np.ascontiguousarray(mono, dtype=np.float32)
        if stream is not None and remaining > 0:  # the file ended early: flush the resampler
            tail = stream.resample_chunk(np.zeros(0, np.float32), last=True)
            if len(tail):
                yield tail


def read_span(path: str | Path, rate: int, start: float | None = None, end: float | None = None) -> np.ndarray:
    """A whole file or ``[start, end)`` seconds of it, mono float32 at ``rate`` Hz ``(n_samples,)``."""
    blocks = list(iter_blocks(path, rate, start, end))
    wave = np.concatenate(blocks) if blocks else np.zeros(0, np.float32)
    if len(wave) == 0:
        raise AudioReadError(f"{path}: no audio in the requested span")
    return wave


def audio_seconds(path: str | Path) -> float:
    """Duration of ``path`` in seconds, from its header."""
    with _open(Path(path)) as f:
        return f.frames / f.samplerate


@dataclass(frozen=True)
class Timeline:
    """Per-window scores of one recording. ``start``/``end``: ``(n_windows,)`` seconds;
    ``probabilities``/``decisions``: ``(n_windows, n_labels)``."""

    path: str
    labels: tuple[str, ...]
    start: np.ndarray
    end: np.ndarray
    probabilities: np.ndarray
    decisions: np.ndarray
    duration: float


def _windows(blocks: Iterator[np.ndarray], win: int, hop: int, min_len: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start_sample, window)`` over a stream of blocks, keeping at most one window plus one block."""
    buf = np.zeros(0, np.float32)
    buf_start = 0  # sample index of buf[0]
    nxt = 0
    total = 0
    for block in blocks:
        total += len(block)
        buf = np.concatenate([buf, block])
        while nxt + win <= buf_start + len(buf):
            yield nxt, buf[nxt - buf_start: nxt - buf_start + win].copy()
            nxt += hop
        cut = min(nxt - buf_start, len(buf))
        if cut > 0:
            buf, buf_start = buf[cut:], buf_start + cut
    # A trailing window shorter than `win` covers the end of the call unless a full window already did.
    if nxt < total and (nxt == 0 or nxt - hop + win < total):
        tail = buf[nxt - buf_start:]
        if len(tail) >= min_len:
            yield nxt, tail.copy()


def score_timeline(scorer, path: str | Path, window: float, hop: float, csv_path: str | Path | None = None,
                   png_path: str | Path | None = None, batch_size: int = 16, progress: bool = False) -> Timeline:
    """Score ``path`` in windows of ``window`` seconds every ``hop`` seconds, streaming the file.

    Writes the CSV (``start_s, end_s, p_<label>..., <label>...``) row by row as windows are scored,
    and the PNG (each label's probability across the call) at the end, when paths are given.
    """
    if window <= 0 or hop <= 0:
        raise ValueError("--window and --hop must be positive seconds")
    path = Path(path)
    rate = scorer.sample_rate
    duration = audio_seconds(path)
    win, hp = int(round(window * rate)), int(round(hop * rate))
    min_len = max(int(getattr(scorer.encoder, "min_samples", 1)), min(win, int(0.25 * rate)))
    starts, ends, probs, decs = [], [], [], []
    writer = fh = None
    if csv_path is not None:
        Path(csv_path).parent.mkdir(parents=True, exist_ok=True)
        fh = open(csv_path, "w", newline="", encoding="utf-8")
        writer = csv.writer(fh)
        writer.writerow(["start_s", "end_s", *(f"p_{l}" for l in scorer.labels), *scorer.labels])

    bar = _progress(progress, path.name, duration)
    try:
        pending: list[tuple[int, np.ndarray]] = []

        def flush() -> None:
            p, d = scorer.score_embeddings(scorer.embed([w for _, w in pending]))
            for (s, w), pi, di in zip(pending, p, d):
                t0, t1 = s / rate, (s + len(w)) / rate
                starts.append(t0), ends.append(t1), probs.append(pi.astype(np.float32)), decs.append(di)
                if writer is not None:
                    writer.writerow([f"{t0:.3f}", f"{t1:.3f}", *(f"{v:.6f}" for v in pi), *(int(v) for v in di)])
            if bar is not None:
                bar[0].update(bar[1], completed=min(duration, (pending[-1][0] + len(pending[-1][1])) / rate))
            pending.clear()

        for item in _windows(iter_blocks(path, rate), win, hp, min_len):
            pending.append(item)
            if len(pending) >= batch_size:
                flush()
        if pending:
            flush()
    finally:
        if fh is not None:
            fh.close()
        if bar is not None:
            bar[0].update(bar[1], completed=duration)
            bar[0].stop()
    n = len(scorer.labels)
    result = Timeline(str(path), tuple(scorer.labels), np.asarray(starts, float), np.asarray(ends, float),
                      np.asarray(probs, np.float32).reshape(-1, n), np.asarray(decs, bool).reshape(-1, n), duration)
    if png_path is not None:
        plot_timeline(result, png_path)
    return result


def _progress(enabled: bool, name: str, total: float):
    if not enabled:
        return None
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    bar = Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                   TextColumn("{task.completed:.0f}/{task.total:.0f} s of audio"), TimeElapsedColumn(), TimeRemainingColumn())
    bar.start()
    return bar, bar.add_task(name, total=total)


def plot_timeline(tl: Timeline, png_path: str | Path) -> Path:
    """One panel per label, stacked on a shared time axis (minutes, or seconds for short files):
    the label's probability (0..1) per window, filled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    unit = 60 if tl.duration >= 120 else 1
    n = max(1, len(tl.labels))
    fig, axes = plt.subplots(n, 1, sharex=True, squeeze=False, figsize=(min(40, 8 + tl.duration / 240), 0.9 * n + 1.2))
    colours = plt.get_cmap("tab10")
    for j, (ax, label) in enumerate(zip(axes[:, 0], tl.labels)):
        # Steps over each window's hop span show exactly which stretch of the call a score belongs to.
        ax.fill_between(tl.start / unit, tl.probabilities[:, j], step="post", color=colours(j % 10), alpha=0.8, linewidth=0)
        ax.set_ylim(0, 1)
        ax.set_yticks([0, 1])
        ax.set_ylabel(label, rotation=0, ha="right", va="center")
        ax.spines[["top", "right"]].set_visible(False)
    axes[-1, 0].set_xlim(0, tl.duration / unit)
    axes[-1, 0].set_xlabel("time (min)" if unit == 60 else "time (s)")
    axes[0, 0].set_title(f"{Path(tl.path).name}: probability per label")
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    plt.close(fig)
    return png_path

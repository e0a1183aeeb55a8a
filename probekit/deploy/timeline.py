"""Windowed scoring of long recordings (whole calls) in bounded memory, with CSV and PNG output.

Memory holds one streamed block plus one batch of windows whatever the call's length; windows the VAD
finds no speech in are written and plotted as such and never scored (docs/predict.md, "Whole calls").
"""

from __future__ import annotations

from probekit.errors import ProbekitError

import csv
from collections.abc import Iterator, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from probekit.deploy.vad import StreamingVad, VadSpec

_BLOCK_SECONDS = 20.0


class AudioReadError(ProbekitError, RuntimeError):
    """An audio file cannot be opened or decoded; the message names the file."""


class TimelineError(ProbekitError, ValueError):
    """A timeline option is out of range (window, hop); the message names the option."""


def _open(path: Path):
    import soundfile as sf

    try:
        return sf.SoundFile(str(path))
    except (RuntimeError, sf.LibsndfileError, OSError) as exc:
        raise AudioReadError(f"{path}: cannot decode audio ({exc})") from exc


def iter_blocks(path: str | Path, rate: int, start: float | None = None, end: float | None = None,
                block_seconds: float = _BLOCK_SECONDS, channel: int | None = None) -> Iterator[np.ndarray]:
    """Yield mono float32 blocks of ``path`` resampled to ``rate`` Hz, from ``start`` to ``end`` seconds.

    Reads only the frames needed, one block (``block_seconds`` of source audio) at a time. ``channel``
    (0-based) keeps one channel, as ``load_segment`` does; ``None`` averages them.
    """
    import soxr

    from probekit.extract.audio import pick_channel, probe_segment

    path = Path(path)
    # The header check extract uses (unreadable, empty, truncated, a channel the file lacks), and the frames to read.
    segment = probe_segment(path, start, end, channel)
    with _open(path) as f:
        sr = f.samplerate
        if segment.first_frame > 0:
            f.seek(segment.first_frame)
        stream = soxr.ResampleStream(sr, rate, 1, dtype="float32") if sr != rate else None
        remaining = segment.num_frames
        step = max(1, int(block_seconds * sr))
        while remaining > 0:
            try:
                block = f.read(min(step, remaining), dtype="float32", always_2d=True)
            except RuntimeError as exc:
                raise AudioReadError(f"{path}: decoding failed ({exc})") from exc
            if len(block) == 0:
                break
            remaining -= len(block)
            mono = pick_channel(block, channel)
            if stream is not None:
                mono = stream.resample_chunk(mono, last=remaining <= 0)
            if len(mono):
                yield np.ascontiguousarray(mono, dtype=np.float32)
        if stream is not None and remaining > 0:  # the file ended early: flush the resampler
            tail = stream.resample_chunk(np.zeros(0, np.float32), last=True)
            if len(tail):
                yield tail


def audio_seconds(path: str | Path) -> float:
    """Duration of ``path`` in seconds, from its header."""
    with _open(Path(path)) as f:
        return f.frames / f.samplerate


@dataclass(frozen=True)
class TruthSpan:
    """A ground-truth segment of the call: ``start``/``end`` seconds and the labels it carries."""

    start: float
    end: float
    labels: frozenset[str]


@dataclass(frozen=True)
class Timeline:
    """Per-window scores of one recording.

    ``start``/``end``: ``(n_windows,)`` seconds; ``speech``: ``(n_windows,)`` bool, or ``None`` when no VAD ran
    (every window scored); ``probabilities``: ``(n_windows, n_labels)``, NaN on non-speech windows;
    ``decisions``: ``(n_windows, n_labels)`` bool, all False on non-speech windows. ``thresholds``:
    ``(n_labels,)`` decision thresholds (binary and multi-label; multi-class decides by the most probable label).
    """

    path: str
    labels: tuple[str, ...]
    start: np.ndarray
    end: np.ndarray
    probabilities: np.ndarray
    decisions: np.ndarray
    duration: float
    speech: np.ndarray | None = None
    task: str = "multiclass"
    thresholds: np.ndarray | None = None
    channel: int | None = None
    truth: tuple[TruthSpan, ...] = field(default=())

    @property
    def scored(self) -> np.ndarray:
        """``(n_windows,)`` bool: the windows that were scored (speech, or all of them without a VAD)."""
        return np.ones(len(self.start), bool) if self.speech is None else self.speech.copy()


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


def truth_for(manifest: str | Path, call: str | Path) -> tuple[TruthSpan, ...]:
    """The rows of ``manifest`` cut from ``call`` (same file, ``start`` and ``end`` given), as :class:`TruthSpan`s.

    Every label column counts; a ``;``-joined set gives several labels. Raises ``ManifestError`` for a bad manifest.
    """
    from probekit.manifest import read_manifest, split_labels

    m = read_manifest(manifest, check_files=False, require_speaker=False)
    target = Path(call).resolve()
    spans = []
    for seg in m.segments:
        if seg.start is None or seg.end is None or Path(seg.path).resolve() != target:
            continue
        labels = frozenset(lab for value in seg.labels.values() for lab in split_labels(value))
        spans.append(TruthSpan(seg.start, seg.end, labels))
    return tuple(sorted(spans, key=lambda t: t.start))


def score_timeline(scorer, path: str | Path, window: float, hop: float, csv_path: str | Path | None = None,
                   png_path: str | Path | None = None, batch_size: int = 16, progress: bool = False,
                   channel: int | None = None, vad: VadSpec | None = VadSpec(), vad_model=None,
                   truth: Sequence[TruthSpan] = ()) -> Timeline:
    """Score ``path`` in windows of ``window`` seconds every ``hop`` seconds, streaming the file.

    ``channel`` keeps one channel (0-based; ``None`` averages them). With ``vad`` (the default), a window
    is scored only when the VAD finds speech in it; ``vad=None`` scores every window. Windows are scored
    ``batch_size`` at a time through :meth:`Scorer.embed_windows`.

    Writes the CSV row by row as windows are decided (``start_s, end_s, speech, p_<label>..., <label>...``;
    ``speech`` is 1 or 0, empty without a VAD; a non-speech row leaves the scores empty), and the PNG at
    the end, when paths are given. ``truth`` spans are drawn under the curves.
    """
    from probekit.progress import AudioProgress

    if window <= 0 or hop <= 0:
        raise TimelineError("--window and --hop must be positive seconds")
    path = Path(path)
    rate = scorer.sample_rate
    duration = audio_seconds(path)
    win, hp = int(round(window * rate)), int(round(hop * rate))
    min_len = max(int(getattr(scorer.encoder, "min_samples", 1)), min(win, int(0.25 * rate)))
    gate = StreamingVad(rate, vad, model=vad_model) if vad is not None else None
    n = len(scorer.labels)
    starts, ends, speech, probs, decs = [], [], [], [], []
    if csv_path is not None:
        Path(csv_path).parent.mkdir(parents=True, exist_ok=True)
    shown = 0.0  # seconds of the call the progress bar has been advanced by
    with (open(csv_path, "w", newline="", encoding="utf-8") if csv_path is not None else nullcontext() as fh,
          AudioProgress(path.name, duration, enabled=progress) as bar):
        writer = None if fh is None else csv.writer(fh)
        if writer is not None:
            writer.writerow(["start_s", "end_s", "speech", *(f"p_{l}" for l in scorer.labels), *scorer.labels])
        # Windows wait here in call order, so the CSV stays in time order while only speech windows are batched.
        # A non-speech window keeps only its place, not its samples, so a long silence costs no memory.
        pending: list[tuple[int, int, np.ndarray | None]] = []

        def flush() -> None:
            nonlocal shown
            spoken = [w for _, _, w in pending if w is not None]
            if spoken:
                p, d = scorer.score_embeddings(scorer.embed_windows(spoken))
            k = 0
            for s, length, w in pending:
                is_speech = w is not None
                t0, t1 = s / rate, (s + length) / rate
                if is_speech:
                    pi, di = p[k].astype(np.float32), d[k]
                    k += 1
                else:
                    pi, di = np.full(n, np.nan, np.float32), np.zeros(n, bool)
                starts.append(t0), ends.append(t1), speech.append(is_speech), probs.append(pi), decs.append(di)
                if writer is not None:
                    flag = "" if gate is None else int(is_speech)
                    scores = [f"{v:.6f}" for v in pi] + [int(v) for v in di] if is_speech else [""] * (2 * n)
                    writer.writerow([f"{t0:.3f}", f"{t1:.3f}", flag, *scores])
            reached = min(duration, (pending[-1][0] + pending[-1][1]) / rate)
            bar.advance(reached - shown)
            shown = reached
            pending.clear()

        blocks = iter_blocks(path, rate, channel=channel)
        if gate is not None:
            blocks = gate.through(blocks)
        n_spoken = 0
        for s, w in _windows(blocks, win, hp, min_len):
            is_speech = gate is None or gate.is_speech(s, s + len(w))
            pending.append((s, len(w), w if is_speech else None))
            n_spoken += is_speech
            if n_spoken >= batch_size or len(pending) >= 64 * batch_size:
                flush()
                n_spoken = 0
        if pending:
            flush()
        bar.advance(duration - shown)
    result = Timeline(str(path), tuple(scorer.labels), np.asarray(starts, float), np.asarray(ends, float),
                      np.asarray(probs, np.float32).reshape(-1, n), np.asarray(decs, bool).reshape(-1, n), duration,
                      speech=None if gate is None else np.asarray(speech, bool), task=scorer.task,
                      thresholds=np.asarray(scorer.thresholds, float), channel=channel, truth=tuple(truth))
    if png_path is not None:
        plot_timeline(result, png_path)
    return result


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """``[first, last]`` index pairs of each run of True in ``mask``."""
    edges = np.diff(np.concatenate([[0], mask.astype(np.int8), [0]]))
    return list(zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1))


def plot_timeline(tl: Timeline, png_path: str | Path) -> Path:
    """One panel per label on a shared time axis (minutes, or seconds for calls under 2 minutes).

    Each panel: the label's probability per scored window (a step over the window's hop span; gaps where
    the window was not scored), the decision threshold as a dashed line (binary and multi-label; for
    multi-class, a bar along the top where the label is the most probable one), non-speech stretches
    shaded grey, and ground-truth segments for the label as a bar under the axis.
    """
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    png_path = Path(png_path)
    png_path.parent.mkdir(parents=True, exist_ok=True)
    unit = 60 if tl.duration >= 120 else 1
    n = max(1, len(tl.labels))
    fig = Figure(figsize=(min(40, 8 + tl.duration / 240), 1.1 * n + 1.4))
    axes = fig.subplots(n, 1, sharex=True, squeeze=False)
    colours = colormaps["tab10"]
    hop = float(np.median(np.diff(tl.start))) if len(tl.start) > 1 else float(tl.end[0] - tl.start[0]) if len(tl.start) else 0.0
    # Each window is drawn over its hop span, the stretch of the call it is the latest score for.
    span_end = np.minimum(tl.start + hop, tl.end) if len(tl.start) else tl.end
    quiet = [] if tl.speech is None else _runs(~tl.speech)
    for j, (ax, label) in enumerate(zip(axes[:, 0], tl.labels)):
        colour = colours(j % 10)
        for a, b in quiet:
            ax.axvspan(tl.start[a] / unit, span_end[b] / unit, color="0.85", linewidth=0, zorder=0)
        if len(tl.start):
            xs = np.column_stack([tl.start, span_end]).ravel() / unit
            ys = np.repeat(tl.probabilities[:, j], 2)
            ax.plot(xs, ys, color=colour, linewidth=1.2)
            ax.fill_between(xs, ys, color=colour, alpha=0.25, linewidth=0)
        if tl.task == "multiclass":
            for a, b in _runs(tl.decisions[:, j]):
                ax.plot([tl.start[a] / unit, span_end[b] / unit], [1.02, 1.02], color=colour, linewidth=3, solid_capstyle="butt")
        elif tl.thresholds is not None:
            ax.axhline(float(tl.thresholds[j]), color="0.3", linestyle="--", linewidth=0.8)
        for span in tl.truth:
            if label in span.labels:
                ax.plot([span.start / unit, span.end / unit], [-0.1, -0.1], color="black", linewidth=4, solid_capstyle="butt")
        ax.set_ylim(-0.18 if tl.truth else 0, 1.06)
        ax.set_yticks([0, 0.5, 1])
        ax.set_ylabel(label, rotation=0, ha="right", va="center")
        ax.spines[["top", "right"]].set_visible(False)
    axes[-1, 0].set_xlim(0, tl.duration / unit)
    axes[-1, 0].set_xlabel("time (min)" if unit == 60 else "time (s)")
    channel = "channel mean" if tl.channel is None else f"channel {tl.channel}"
    legend = ["bar on top: the most probable label" if tl.task == "multiclass" else "dashed: decision threshold"]
    if tl.speech is not None:
        legend.append("grey: no speech (not scored)")
    if tl.truth:
        legend.append("black bar: ground truth")
    axes[0, 0].set_title(f"{Path(tl.path).name} ({channel}): probability per label\n" + "; ".join(legend), fontsize=9)
    fig.tight_layout()
    fig.savefig(png_path, dpi=100)
    return png_path

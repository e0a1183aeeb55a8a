"""Read and validate a segment manifest (CSV, TSV or JSONL).

A manifest has one row per speech segment:

- ``id`` (unique), ``path`` (relative to the manifest's folder, or absolute);
- optional ``start`` / ``end`` in seconds, to cut a segment out of a long recording;
- ``speaker`` (the caller; needed for speaker-independent evaluation);
- optional ``split`` (e.g. ``train`` / ``test``);
- optional ``channel``: the 0-based channel to keep from a multi-channel file (e.g. the caller's
  side of a two-channel call); empty means the channels are averaged;
- any other column is a label column: one label, or a ``;``-separated label set.

All problems are collected and reported together, each with its row number as a
person counts it (the header is line 1 of a CSV/TSV; the first object is line 1 of JSONL).
"""

from __future__ import annotations

from probekit.errors import ProbekitError

import csv
import hashlib
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf

RESERVED = ("id", "path", "start", "end", "speaker", "split", "channel")
LABEL_SEP = ";"


class ManifestError(ProbekitError, ValueError):
    """The manifest has problems; ``problems`` lists every one as ``(line, message)``."""

    def __init__(self, source: Path, problems: list[tuple[int | None, str]]):
        self.source = Path(source)
        self.problems = problems
        lines = [f"{self.source}: {len(problems)} problem(s) in the manifest:"]
        for line, msg in problems[:50]:
            where = f"line {line}" if line is not None else "file"
            lines.append(f"  {where}: {msg}")
        if len(problems) > 50:
            lines.append(f"  ... and {len(problems) - 50} more")
        super().__init__("\n".join(lines))


@dataclass(frozen=True)
class Segment:
    """One manifest row, resolved.

    ``start``/``end`` are seconds into ``path`` (``None`` = whole file); ``channel`` is the 0-based
    channel kept from a multi-channel file (``None`` = average the channels);
    ``line`` is the row's line number in the manifest, for error messages.
    """

    id: str
    path: Path
    speaker: str
    start: float | None = None
    end: float | None = None
    split: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    line: int = 0
    channel: int | None = None


@dataclass(frozen=True)
class Manifest:
    """A validated manifest: rows in file order plus the names of its label columns."""

    source: Path
    segments: tuple[Segment, ...]
    label_columns: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.segments)

    @property
    def ids(self) -> list[str]:
        return [s.id for s in self.segments]

    def columns(self) -> dict[str, list[str]]:
        """Metadata columns row-aligned with ``ids``: speaker, split and channel (if any) and every label column.

        ``channel`` is kept so that a cache says which side of each call it encoded ("" = channels averaged).
        """
        cols: dict[str, list[str]] = {"speaker": [s.speaker for s in self.segments]}
        if any(s.split is not None for s in self.segments):
            cols["split"] = [s.split or "" for s in self.segments]
        if any(s.channel is not None for s in self.segments):
            cols["channel"] = ["" if s.channel is None else str(s.channel) for s in self.segments]
        for name in self.label_columns:
            cols[name] = [s.labels.get(name, "") for s in self.segments]
        return cols

    def audio_fingerprint(self) -> str:
        """Hash of what decides the audio of each segment (id, path, start, end, channel), order-free.

        Labels are left out on purpose: relabelling a manifest must not force a new extraction.
        A row without a channel hashes as it did before the column existed, so older caches still match.
        """
        h = hashlib.sha256()
        base = Path(os.path.abspath(self.source.parent))
        for s in sorted(self.segments, key=lambda s: s.id):
            # Paths relative to the manifest's folder, so the same manifest read from another
            # working directory (or a moved dataset folder) has the same fingerprint.
            absolute = Path(os.path.abspath(s.path))
            try:
                where = absolute.relative_to(base).as_posix()
            except ValueError:
                where = absolute.as_posix()
            picked = "" if s.channel is None else f"\tchannel={s.channel}"
            h.update(f"{s.id}\t{where}\t{s.start}\t{s.end}{picked}\n".encode())
        return h.hexdigest()


def split_labels(value: str) -> list[str]:
    """``"anger;negative"`` -> ``["anger", "negative"]`` (whitespace stripped, empties dropped)."""
    return [v.strip() for v in str(value).split(LABEL_SEP) if v.strip()]


def _read_rows(path: Path) -> tuple[list[tuple[int, dict[str, str]]], list[str]]:
    suffix = path.suffix.lower()
    if suffix in (".jsonl", ".ndjson"):
        rows: list[tuple[int, dict[str, str]]] = []
        columns: list[str] = []
        problems: list[tuple[int | None, str]] = []
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, start=1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except json.JSONDecodeError as exc:
                    problems.append((lineno, f"not valid JSON ({exc.msg})"))
                    continue
                if not isinstance(obj, dict):
                    problems.append((lineno, "each JSONL line must be an object"))
                    continue
                row = {}
                for k, v in obj.items():
                    if isinstance(v, list):
                        v = LABEL_SEP.join(str(x) for x in v)
                    row[str(k)] = "" if v is None else str(v)
                    if k not in columns:
                        columns.append(str(k))
                rows.append((lineno, row))
        if problems:
            raise ManifestError(path, problems)
        return rows, columns
    if suffix in (".csv", ".tsv", ".txt"):
        delimiter = "\t" if suffix == ".tsv" else ","
        with open(path, encoding="utf-8", newline="") as fh:
            reader = csv.DictReader(fh, delimiter=delimiter)
            columns = [c.strip() for c in (reader.fieldnames or [])]
            reader.fieldnames = columns
            rows = []
            for i, row in enumerate(reader, start=2):
                extra = row.pop(None, None)
                clean = {k: (v or "").strip() for k, v in row.items() if k is not None}
                if extra:
                    clean["__extra__"] = str(len(extra))
                rows.append((i, clean))
        return rows, columns
    raise ManifestError(path, [(None, f"unknown manifest format '{suffix}': use .csv, .tsv or .jsonl")])


def _parse_time(value: str) -> float | None:
    if value == "":
        return None
    t = float(value)
    if not math.isfinite(t):
        raise ValueError("not a finite number")
    return t


def _parse_channel(value: str) -> int | None:
    if value == "":
        return None
    try:
        channel = int(value)
    except ValueError:
        raise ValueError(f"channel '{value}' is not a whole number (0 is the first channel; leave it empty to average them)") from None
    if channel < 0:
        raise ValueError(f"channel {channel} is negative (0 is the first channel)")
    return channel


def channel_problem(channel: int | None, channels: int) -> str | None:
    """Why ``channel`` (0-based, ``None`` = average) cannot be kept from a file of ``channels`` channels, or ``None``."""
    if channel is None or 0 <= channel < channels:
        return None
    have = "1 channel (index 0)" if channels == 1 else f"{channels} channels (0-{channels - 1})"
    return f"channel {channel} does not exist: the file has {have}"


def _file_channels(path: Path) -> int | None:
    """Channel count from the file's header, or ``None`` when the header cannot be read (the audio stage names why)."""
    try:
        return int(sf.info(str(path)).channels)
    except (sf.SoundFileError, RuntimeError, OSError):
        return None


def resolve_manifest_path(path: str | Path) -> Path:
    """The manifest file ``path`` names: a file as is, a folder's ``manifest.csv`` (as ``run --data``
    takes it). Raises :class:`ManifestError` saying which, when there is none."""
    path = Path(path)
    if path.is_dir():
        inside = path / "manifest.csv"
        if inside.is_file():
            return inside
        others = sorted(p.name for p in path.iterdir() if p.suffix.lower() in (".csv", ".tsv", ".jsonl", ".ndjson"))
        hint = f"; it holds {', '.join(others[:5])}: give one of them" if others else ""
        raise ManifestError(path, [(None, f"is a folder with no manifest.csv in it{hint}")])
    if not path.is_file():
        raise ManifestError(path, [(None, "manifest file not found")])
    return path


def read_manifest(path: str | Path, check_files: bool = True, require_speaker: bool = True) -> Manifest:
    """Read and validate a manifest.

    Raises :class:`ManifestError` listing every problem (duplicate ids, missing files,
    bad times, empty labels, missing columns, a channel the file does not have) with its line number.
    """
    path = resolve_manifest_path(path)
    rows, columns = _read_rows(path)
    problems: list[tuple[int | None, str]] = []
    required = ["id", "path"] + (["speaker"] if require_speaker else [])
    missing = [c for c in required if c not in columns]
    if missing:
        raise ManifestError(path, [(None, f"missing required column(s): {', '.join(missing)}; found: {', '.join(columns) or 'none'}")])
    if not rows:
        raise ManifestError(path, [(None, "the manifest has no rows")])
    label_columns = tuple(c for c in columns if c not in RESERVED)
    base = path.parent
    seen: dict[str, int] = {}
    segments: list[Segment] = []
    for line, row in rows:
        before = len(problems)  # the row is kept when it adds no problem
        if "__extra__" in row:
            problems.append((line, "more fields than the header has columns"))
        sid = row.get("id", "")
        if not sid:
            problems.append((line, "empty id"))
        elif sid in seen:
            problems.append((line, f"duplicate id '{sid}' (first on line {seen[sid]})"))
        else:
            seen[sid] = line
        raw_path = row.get("path", "")
        audio = None
        if not raw_path:
            problems.append((line, "empty path"))
        else:
            audio = base / raw_path  # an absolute path replaces base
            if check_files and not audio.is_file():
                problems.append((line, f"audio file not found: {audio}"))
        times: dict[str, float | None] = {}
        for key in ("start", "end"):
            try:
                times[key] = _parse_time(row.get(key, ""))
            except ValueError:
                problems.append((line, f"{key} '{row.get(key)}' is not a number of seconds"))
                times[key] = None
        start, end = times["start"], times["end"]
        if start is not None and start < 0:
            problems.append((line, f"start {start} s is negative"))
        if start is not None and end is not None and end <= start:
            problems.append((line, f"end {end} s is not after start {start} s"))
        if end is not None and end <= 0:
            problems.append((line, f"end {end} s must be positive"))
        try:
            channel = _parse_channel(row.get("channel", ""))
        except ValueError as exc:
            problems.append((line, str(exc)))
            channel = None
        if channel is not None and check_files and audio is not None and audio.is_file():
            # Only the header is read: a bad channel is a manifest mistake, found before any model loads.
            channels = _file_channels(audio)
            problem = None if channels is None else channel_problem(channel, channels)
            if problem:
                problems.append((line, f"{problem} ({audio.name})"))
        speaker = row.get("speaker", "")
        if require_speaker and not speaker:
            problems.append((line, "empty speaker"))
        labels = {}
        for col in label_columns:
            value = row.get(col, "")
            if not split_labels(value):
                problems.append((line, f"empty label in column '{col}'"))
            labels[col] = LABEL_SEP.join(split_labels(value))
        if len(problems) == before:
            segments.append(
                Segment(
                    id=sid,
                    path=audio,  # type: ignore[arg-type]
                    speaker=speaker,
                    start=start,
                    end=end,
                    split=row.get("split") or None,
                    labels=labels,
                    line=line,
                    channel=channel,
                )
            )
    if problems:
        raise ManifestError(path, problems)
    return Manifest(source=path, segments=tuple(segments), label_columns=label_columns)

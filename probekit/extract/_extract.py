"""Extraction: manifest -> audio -> encoder -> pooled layers -> one HDF5 cache per encoder.

:func:`extract_cache` is the one entry point that recipes and the CLI call. It is resumable and
crash-safe: every finished batch is journaled atomically next to the output (see
:mod:`probekit.extract.journal`), the batch plan is a pure function of the manifest, and the cache is
written to a temporary file and renamed only when complete. Killing it at any moment and rerunning
the same call recomputes at most the batch that was in flight and gives a bit-identical file.
"""

from __future__ import annotations

from probekit.errors import ProbekitError

import json
import os
import re
import resource
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from probekit.extract.audio import AudioError, FileHeader, SegmentInfo, load_segment, locate_segment, read_header, resampled_length
from probekit.extract.batching import Item, plan_batches, plan_digest
from probekit.choices import DType, Pooling
from probekit.cache import AUDIO_FIELDS, CacheError, CacheWriter, EmbeddingCache, merge_shards
from probekit.extract.heap import retained_heap
from probekit.extract.journal import BatchRecord, Journal, RunLock
from probekit.identity import CacheIdentity, RowAudio, file_audio, known_files, segment_audio
from probekit.manifest import Manifest, read_manifest
from probekit.progress import AudioProgress

DEFAULT_BATCH_SECONDS = 120.0
# Bumped when the journal or plan format changes: an old journal is then refused, not misread.
JOURNAL_VERSION = 2
# Wall-clock stages of an extraction, in the order the profile prints them.
STAGES = ("decode", "features", "forward", "pooling", "writing", "other")


def default_workers() -> int:
    """Decoding threads: half the cores, at least 2 and at most 8 (soundfile and soxr release
    the GIL, and the other half feeds the encoder)."""
    return min(8, max(2, (os.cpu_count() or 2) // 2))


class ExtractError(ProbekitError, RuntimeError):
    """The request conflicts with what is on disk (another model in the cache, a bad shard...)."""


class EncoderLike(Protocol):
    """What extraction needs from an encoder (see ``probekit.extract.encoders.Encoder``)."""

    sample_rate: int
    num_hidden_states: int
    hidden_size: int
    min_samples: int
    pads_safely: bool
    identity: dict[str, str]

    def encode(self, waves: list[np.ndarray], pooling: str = "mean") -> np.ndarray: ...


# Optional encoder members, used when present (probekit.extract.encoders.Encoder has them all):
# ``input_samples(n) -> int`` (what the encoder processes for n samples, for the batch bound),
# ``encode_padded(batch, lengths, pooling)`` (a zero-padded torch batch, decoded by the workers),
# ``device`` (a torch.device: pinned batches when CUDA), ``timings`` and ``sync_timings``
# (per-stage seconds for the profile).


@dataclass(frozen=True)
class ExtractResult:
    """What one extraction produced.

    ``audio_seconds`` counts the encoded segments' audio; ``wall_seconds`` the time of this call;
    ``skipped`` holds one ``{"id", "line", "reason"}`` per bad row; ``up_to_date`` is True when the
    cache already existed and nothing was done.
    """

    path: Path
    model: str
    n_segments: int
    num_layers: int
    dim: int
    audio_seconds: float
    wall_seconds: float
    skipped: tuple[dict, ...]
    batches_computed: int
    batches_resumed: int
    up_to_date: bool
    shard: str = ""
    #: Wall seconds of this call per stage (:data:`STAGES`): ``decode`` is time the encoder
    #: waited for decoded audio; ``decode_threads`` (not a wall share) is the workers' total.
    timings: dict = field(default_factory=dict)
    #: Peak resident memory of this process, bytes.
    peak_rss: int = 0
    #: Rows copied from the cache that was there, rows new to it, skipped rows tried again
    #: (their audio changed), and rows recomputed because their audio changed.
    rows_reused: int = 0
    rows_added: int = 0
    rows_retried: int = 0
    rows_changed: int = 0


# --------------------------------------------------------------------------- naming and sharding


def model_slug(model: str) -> str:
    """A file-name-safe name for a model: ``openai/whisper-tiny.en`` -> ``openai--whisper-tiny.en``;
    a local folder gives its last component."""
    p = Path(model)
    if p.is_absolute() or model.startswith((".", "~")) or p.exists():
        name = p.expanduser().resolve().name or "model"
    else:
        name = model.strip("/").replace("/", "--")
    return re.sub(r"[^A-Za-z0-9._+-]+", "_", name)


def parse_shard(text: str | None) -> tuple[int, int] | None:
    """``"i/n"`` (0-based ``i``, like torchrun's RANK) -> ``(i, n)``; ``None``/``""`` -> ``None``."""
    if not text:
        return None
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not m or not (0 <= int(m.group(1)) < int(m.group(2))):
        raise ValueError(f"--shard must be i/n with 0 <= i < n (0-based, like torchrun's RANK), not {text!r}")
    return int(m.group(1)), int(m.group(2))


def shard_from_env(env: dict | None = None) -> tuple[int, int] | None:
    """The shard torchrun assigns through ``RANK``/``WORLD_SIZE``, or ``None`` for a single process."""
    env = os.environ if env is None else env
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
    except ValueError:
        return None
    return (rank, world) if world > 1 else None


def default_cache_path(manifest: str | Path, model: str, out_dir: str | Path | None = None, shard: tuple[int, int] | None = None) -> Path:
    """``<out_dir or cache/<manifest-stem>>/<model-slug>.h5``, or ``<slug>.shard-i-of-n.h5`` for a shard."""
    folder = Path(out_dir) if out_dir is not None else Path("cache") / Path(manifest).stem
    suffix = f".shard-{shard[0]}-of-{shard[1]}" if shard else ""
    return folder / f"{model_slug(model)}{suffix}.h5"


# --------------------------------------------------------------------------- the run


def _previous(out: Path, expected: CacheIdentity) -> EmbeddingCache | None:
    """The finished cache at ``out`` if its settings match ``expected``; raises if it was made
    differently (a cache never mixes runs). Its rows may differ: that is incremental work."""
    if not out.is_file():
        return None
    try:
        cache = EmbeddingCache(out)
    except CacheError as exc:
        raise ExtractError(f"{out} exists but is not a readable cache ({exc}); move it away or choose another --out") from exc
    stored = CacheIdentity.from_cache(cache)
    if stored is None:
        raise ExtractError(f"{out} exists but was not written by `probekit extract`; move it away or choose another --out")
    diff = stored.setting_differences(expected)
    if diff:
        details = "; ".join(d.replace(" here, ", " in the file, you asked ").replace(" there", "") for d in diff)
        raise ExtractError(
            f"{out} already holds a different extraction ({details}). A cache never mixes runs: "
            "choose another --out, or delete the file to recompute"
        )
    return cache


def cache_differences(out: str | Path, manifest: str | Path | Manifest, encoder: Any, pooling: str = "mean", dtype: str = "float16") -> list[str] | None:
    """How the cache at ``out`` differs from what extracting ``manifest`` with ``encoder`` (a spec; no model is
    loaded) would write: ``None`` when there is no cache, ``[]`` when it would be reused as it is, else one
    readable line per difference (manifest audio, model, revision, Whisper mode, pooling, dtype, ...)."""
    out = Path(out)
    if not out.is_file():
        return None
    man = manifest if isinstance(manifest, Manifest) else read_manifest(manifest, check_files=False)
    expected = CacheIdentity.expected(encoder, pooling, dtype, man)
    try:
        stored = CacheIdentity.from_cache(EmbeddingCache(out))
    except CacheError:
        stored = None
    if stored is None:
        return [f"{out} is not a cache written by `probekit extract`"]
    return [d.replace(" here, ", " in the cache, wanted ").replace(" there", "") for d in stored.differences(expected)]


class BadRows(ExtractError):
    """Rows found bad by the pre-pass, before any model loads; ``rows`` holds ``{"id", "line", "reason"}`` each."""

    def __init__(self, source: Path, rows: list[dict]):
        self.rows = rows
        lines = [f"{source}: {len(rows)} row(s) cannot be encoded:"]
        lines += [f"  line {r['line']}, id {r['id']}: {r['reason']}" for r in rows[:100]]
        if len(rows) > 100:
            lines.append(f"  ... and {len(rows) - 100} more")
        lines.append("No model was loaded. Fix or drop these rows, or pass --skip-bad to extract the others "
                     "(a later run with the rows fixed adds them to the cache).")
        super().__init__("\n".join(lines))


class ExtractInterrupted(ExtractError):
    """Ctrl-C during a run: what was kept, and that the same command resumes."""

    exit_code = 130


@dataclass(frozen=True)
class _Checked:
    """The pre-pass's verdict on one row: its header (``None`` when bad), why not, its audio fingerprint."""

    info: SegmentInfo | None
    reason: str
    audio: RowAudio


def _prepass(man: Manifest, rows: Sequence[int], known: dict, workers: int) -> dict[int, _Checked]:
    """Header and size checks and audio fingerprints of ``rows``, no samples decoded.

    Each file is read once however many rows cut segments from it (a long call split into
    turns): its digest (only when its size or modification time differs from ``known``), its
    header and the truncation check, in threads; each row then only locates its segment in it.
    """
    digests = dict(known)
    paths = list(dict.fromkeys(man.segments[r].path for r in rows))

    def check(path: str) -> tuple[FileHeader | None, str, RowAudio]:
        # Two threads may hash the same file under two spellings; both get the same digest.
        audio = file_audio(path, digests)
        if not Path(path).is_file():
            return None, f"audio file not found: {path}", audio
        try:
            return read_header(path), "", audio
        except AudioError as exc:
            return None, exc.reason, audio

    with ThreadPoolExecutor(workers) as pool:
        files = dict(zip(paths, pool.map(check, paths)))
    checked = {}
    for r in rows:
        seg = man.segments[r]
        header, reason, audio = files[seg.path]
        audio = segment_audio(audio, seg.start, seg.end, seg.channel)
        if header is not None:
            try:
                checked[r] = _Checked(locate_segment(header, seg.start, seg.end, seg.channel), "", audio)
                continue
            except AudioError as exc:
                reason = exc.reason
        checked[r] = _Checked(None, reason, audio)
    return checked


def extract_cache(
    manifest: str | Path | Manifest,
    encoder: Any,
    out: str | Path,
    pooling: str = "mean",
    dtype: str = "float16",
    batch_seconds: float = DEFAULT_BATCH_SECONDS,
    shard: tuple[int, int] | None = None,
    progress: bool = True,
    loader: Callable[[Any], EncoderLike] | None = None,
    on_batch: Callable[[int], None] | None = None,
    on_bad: Callable[[dict], None] | None = None,
    workers: int | None = None,
    profile: bool = False,
    skip_bad: bool = True,
) -> ExtractResult:
    """Extract every layer's pooled hidden states of ``manifest`` into the cache file ``out``.

    ``encoder`` is an encoder object (``encode``, ``sample_rate``, ... as in
    ``probekit.extract.encoders.Encoder``) or a spec (``EncoderSpec``: ``model``, ``revision``,
    ``whisper_mode``), loaded with ``loader`` (default ``probekit.extract.encoders.load_encoder``) only
    when there is work to do. ``shard=(i, n)`` takes manifest rows ``i, i+n, i+2n, ...``.

    One pre-pass over every row, before any model loads, checks headers and sizes (missing,
    unreadable, empty, truncated files, times past the end, absent channels) and fingerprints the
    audio. With ``skip_bad=False`` any bad row stops the run there (:class:`BadRows`, listing
    them all); otherwise bad rows, and rows that fail later at decoding (corrupt data, silence),
    are skipped, passed to ``on_bad``, recorded in the cache's ``skipped`` group and returned in
    ``ExtractResult.skipped``. ``on_batch(i)`` runs after batch ``i`` is journaled.

    Incremental: when ``out`` already holds a cache of the same settings, only rows it lacks, rows
    whose audio fingerprint changed and skipped rows whose audio changed are computed; the other
    vectors are copied bit for bit into a new file that replaces the old one atomically.

    ``workers`` threads decode (and pad) batches ahead of the encoder, at most two batches each
    (default :func:`default_workers`). ``profile=True`` makes stage timings exact on CUDA (it
    waits for the device between stages); they are measured either way, in ``result.timings``.

    Raises ``ManifestError`` (bad manifest), :class:`BadRows`, :class:`ExtractError` (``out`` holds
    another run), ``JournalMismatch`` (an unfinished journal of another run), ``RunLocked``
    (another process is writing ``out``) or :class:`ExtractInterrupted` (Ctrl-C).
    """
    t0 = time.perf_counter()
    # Checked here, not through the pooling module: that one imports torch, which a run with nothing to compute never needs.
    Pooling.check(pooling, "pooling")
    DType.check(dtype, "dtype")
    if batch_seconds <= 0:
        raise ValueError(f"batch_seconds must be positive, not {batch_seconds}")
    workers = default_workers() if workers is None else int(workers)
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    man = manifest if isinstance(manifest, Manifest) else read_manifest(manifest, check_files=False)
    out = Path(out)
    expected = CacheIdentity.expected(encoder, pooling, dtype, man, shard)

    with RunLock(out):
        prev = _previous(out, expected)
        rows = [r for r in range(len(man.segments)) if shard is None or r % shard[1] == shard[0]]
        known = known_files(prev.audio["path"], prev.audio) if prev is not None and prev.audio else {}
        checked = _prepass(man, rows, known, workers)
        early_bad = [r for r in rows if checked[r].reason]
        if early_bad and not skip_bad:
            raise BadRows(man.source, [_entry(man, r, checked[r].reason) for r in early_bad])
        plan = _incremental(man, rows, checked, prev, expected)
        if prev is not None and plan.up_to_date:
            return _result_from_cache(prev, expected, t0)
        journal = Journal(out, {**expected.to_spec(), "journal_version": JOURNAL_VERSION,
                                "base_cache": prev.fingerprint if prev is not None else ""})
        # The plan must not change under a resumed run: keep the journal's batch size.
        batch_seconds = float((journal.stored_spec() or {}).get("batch_seconds", batch_seconds))
        journal.spec["batch_seconds"] = batch_seconds
        journal.open()
        run = _Run(man, out, journal, plan, checked, prev, expected, pooling, dtype, batch_seconds)
        try:
            return _run(run, encoder, loader, progress, on_batch, on_bad, workers, profile, t0)
        except KeyboardInterrupt:
            kept = len(journal.done())
            raise ExtractInterrupted(
                f"interrupted: {kept} finished batch(es) kept in {journal.dir}; "
                "run the same command to resume from there"
            ) from None


@dataclass
class _Plan:
    """Which rows an incremental run reuses (row -> position in the old cache), computes, or skips."""

    reuse: dict[int, int]
    todo: list[int]
    bad: dict[int, str]
    added: int = 0
    retried: int = 0
    changed: int = 0
    up_to_date: bool = False


def _incremental(man: Manifest, rows: Sequence[int], checked: dict[int, _Checked], prev: EmbeddingCache | None,
                 expected: CacheIdentity) -> _Plan:
    plan = _Plan(reuse={}, todo=[], bad={})
    position = {str(sid): k for k, sid in enumerate(prev.ids)} if prev is not None else {}
    prints = prev.audio.get("fingerprint") if prev is not None and prev.audio else None
    # An old cache without per-row fingerprints can vouch for its rows only through the manifest's.
    same_manifest = prev is not None and str(prev.attrs.get("manifest_fingerprint", "")) == expected.manifest_fingerprint
    skipped = {str(s["id"]): s for s in prev.skipped} if prev is not None else {}
    for r in rows:
        seg, c = man.segments[r], checked[r]
        k = position.get(seg.id)
        before = skipped.get(seg.id)
        if c.reason:
            plan.bad[r] = c.reason
        elif k is not None and (prints[k] == c.audio.fingerprint if prints is not None else same_manifest):
            plan.reuse[r] = k
        elif before is not None and before.get("fingerprint") and before["fingerprint"] == c.audio.fingerprint:
            # Failed at decoding before, and its audio has not changed since: it would fail again.
            plan.bad[r] = str(before["reason"])
        else:
            plan.todo.append(r)
            if k is not None:
                plan.changed += 1
            elif before is not None:
                plan.retried += 1
            else:
                plan.added += 1
    if prev is not None and not plan.todo:
        kept = [man.segments[r].id for r in sorted(plan.reuse)]
        bad = sorted((man.segments[r].id, reason) for r, reason in plan.bad.items())
        plan.up_to_date = (kept == [str(i) for i in prev.ids] and same_manifest
                           and bad == sorted((str(s["id"]), str(s["reason"])) for s in prev.skipped))
    return plan


@dataclass(frozen=True)
class _Run:
    """What the locked part of :func:`extract_cache` works from once the plan is known."""

    man: Manifest
    out: Path
    journal: Journal
    plan: _Plan
    checked: dict[int, _Checked]
    prev: EmbeddingCache | None
    expected: CacheIdentity
    pooling: str
    dtype: str
    batch_seconds: float


@dataclass(frozen=True)
class _Written:
    """The cache :func:`_write_cache` wrote: its shape, audio seconds and skipped rows (id, line, reason)."""

    n_segments: int
    num_layers: int
    dim: int
    audio_seconds: float
    skipped: tuple[dict, ...]


def _run(run: _Run, encoder: Any, loader: Callable[[Any], EncoderLike] | None, progress: bool,
         on_batch: Callable[[int], None] | None, on_bad: Callable[[dict], None] | None, workers: int,
         profile: bool, t0: float) -> ExtractResult:
    """Encode the plan's rows into the journal, then write the cache."""
    man, journal, plan, prev, expected = run.man, run.journal, run.plan, run.prev, run.expected
    enc = None
    # With nothing to compute, only a first cache needs the model (for its shape and identity).
    if plan.todo or prev is None:
        enc = encoder if hasattr(encoder, "encode") else _load(encoder, loader)
        _check_same_weights(enc, prev)
        if profile and hasattr(enc, "sync_timings"):
            enc.sync_timings = True
    items: list[Item] = []
    sample_rate = int(enc.sample_rate) if enc is not None else 16000
    input_samples = getattr(enc, "input_samples", None)
    for r in plan.todo:
        info = run.checked[r].info
        length = resampled_length(info.num_frames, info.sample_rate, sample_rate)
        items.append(Item(row=r, id=man.segments[r].id, length=length, cost=None if input_samples is None else int(input_samples(length))))
    batches = plan_batches(items, sample_rate, run.batch_seconds, pads_safely=bool(getattr(enc, "pads_safely", True)))
    journal.check_plan(plan_digest(batches))

    total = sum(it.length for it in items) / sample_rate
    done = {i for i in journal.done() if i < len(batches) and journal.readable(i)}
    label = f"{model_slug(expected.model)}{' shard ' + expected.shard if expected.shard else ''}"
    todo = [i for i in range(len(batches)) if i not in done]
    clock = _StageClock(enc)
    # Only where batches repeat one shape: there a kept block is reused whole. With varying shapes
    # (wav2vec2, fast Whisper) kept blocks fragment the heap and raise peak memory (docs/extract.md).
    keep_heap = bool(todo) and getattr(enc, "fixed_windows", False) and str(getattr(enc, "device", "cpu")).startswith("cpu")
    with (AudioProgress(label, total, enabled=progress and bool(batches)) as bar, ThreadPoolExecutor(workers) as pool,
          retained_heap(keep_heap)):
        for r, reason in plan.bad.items():
            _report(on_bad, man, r, reason, bar)
        for index in sorted(done):
            rec = journal.load(index)
            for r, reason in zip(rec.bad_rows.tolist(), rec.bad_reasons):
                _report(on_bad, man, r, reason, bar)
            bar.skip(sum(it.length for it in batches[index]) / sample_rate)
        for index, decoded in _decoded_ahead(pool, enc, man, batches, todo, 2 * workers, clock):
            rec = _encode_batch(enc, decoded, run.pooling)
            with clock.stage("writing"):
                journal.save(index, rec)
            for r, reason in zip(rec.bad_rows.tolist(), rec.bad_reasons):
                _report(on_bad, man, r, reason, bar)
            bar.advance(sum(it.length for it in batches[index]) / sample_rate)
            if on_batch is not None:
                on_batch(index)

    with clock.stage("writing"):
        written = _write_cache(run, enc, len(batches))
        journal.remove()
    wall = time.perf_counter() - t0
    return ExtractResult(
        path=run.out, model=expected.model, n_segments=written.n_segments, num_layers=written.num_layers,
        dim=written.dim, audio_seconds=written.audio_seconds, wall_seconds=wall, skipped=written.skipped,
        batches_computed=len(todo),
        batches_resumed=len(done), up_to_date=False, shard=expected.shard,
        timings=clock.split(wall), peak_rss=peak_rss(),
        rows_reused=len(plan.reuse), rows_added=plan.added, rows_retried=plan.retried, rows_changed=plan.changed,
    )


def _check_same_weights(enc: EncoderLike, prev: EmbeddingCache | None) -> None:
    """The loaded weights must be the ones the old cache's rows came from (a local folder can
    change under the same path)."""
    if prev is None:
        return
    ident = dict(getattr(enc, "identity", {}) or {})
    for key in ("commit", "config_hash"):
        old, new = str(prev.attrs.get(key, "")), str(ident.get(key, ""))
        if old and new and old != new:
            raise ExtractError(
                f"{prev.path} was computed with other weights of the same model ({key} {old[:12]}... there, "
                f"{new[:12]}... now); a cache never mixes them: choose another --out, or delete the file to recompute"
            )


def format_profile(result: ExtractResult) -> str:
    """One line: each stage's share of the wall time, the decoding threads' total, peak memory."""
    t = result.timings
    wall = max(result.wall_seconds, 1e-9)
    parts = ", ".join(f"{name} {t.get(name, 0.0):.1f} s ({100 * t.get(name, 0.0) / wall:.0f}%)" for name in STAGES)
    rate = result.audio_seconds / wall if not result.up_to_date else 0.0
    return (f"time: {parts}; decoding threads busy {t.get('decode_threads', 0.0):.1f} s; "
            f"{rate:.0f} audio-s/s; peak memory {result.peak_rss / 2**20:.0f} MiB")


def peak_rss() -> int:
    """Peak resident memory of this process so far, bytes (Linux reports KiB, macOS bytes)."""
    value = int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
    return value if os.uname().sysname == "Darwin" else value * 1024


class _StageClock:
    """Wall seconds per stage of one run. Features, forward and pooling come from the encoder's
    own ``timings`` (when it keeps them), taken as the difference over the run."""

    def __init__(self, enc: EncoderLike):
        self._enc = enc
        self._start = dict(getattr(enc, "timings", {}) or {})
        self.seconds = {name: 0.0 for name in STAGES}
        self.decode_threads = 0.0

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - t0

    def split(self, wall: float) -> dict:
        now = dict(getattr(self._enc, "timings", {}) or {})
        out = dict(self.seconds)
        for name in ("features", "forward", "pooling"):
            out[name] += float(now.get(name, 0.0)) - float(self._start.get(name, 0.0))
        out["other"] = max(0.0, wall - sum(v for k, v in out.items() if k != "other"))
        out["decode_threads"] = self.decode_threads
        return out


def _decoded_ahead(pool: ThreadPoolExecutor, enc: EncoderLike, man: Manifest, batches: Sequence[Sequence[Item]],
                   todo: Sequence[int], depth: int, clock: _StageClock) -> Iterator[tuple[int, _Decoded]]:
    """Batches ``todo`` decoded by the pool's workers, in order, at most ``depth`` ahead of the
    encoder (a bounded queue: memory stays at ``depth`` decoded batches). A crash still loses
    at most the batch being encoded: decoded batches are only ever recomputed."""
    # Pinned host batches pay off only for a CUDA encoder that takes padded batches.
    pin = hasattr(enc, "encode_padded") and getattr(getattr(enc, "device", None), "type", "") == "cuda"
    pending: deque = deque()
    upcoming = iter(todo)

    def fill() -> None:
        while len(pending) < depth:
            index = next(upcoming, None)
            if index is None:
                return
            pending.append((index, pool.submit(_decode_batch, enc, man, batches[index], pin)))

    try:
        fill()
        while pending:
            index, future = pending.popleft()
            with clock.stage("decode"):
                decoded = future.result()
            clock.decode_threads += decoded.seconds
            fill()
            yield index, decoded
    finally:
        for _, future in pending:
            future.cancel()


def _load(spec: Any, loader: Callable[[Any], EncoderLike] | None) -> EncoderLike:
    if loader is None:
        from probekit.extract.encoders import load_encoder  # heavy: torch and transformers

        loader = load_encoder
    return loader(spec)


def _report(on_bad, man: Manifest, row: int, reason: str, bar: AudioProgress) -> None:
    seg = man.segments[row]
    entry = {"id": seg.id, "line": seg.line, "reason": reason}
    bar.log(f"{man.source}: line {seg.line}, id {seg.id}: skipped: {reason}")
    if on_bad is not None:
        on_bad(entry)


@dataclass(frozen=True)
class _Decoded:
    """One decoded batch: the good rows' waveforms (or, for an encoder with ``encode_padded``,
    one zero-padded ``(B, longest)`` torch tensor and the lengths), the bad rows with reasons, and
    the worker's seconds."""

    waves: list[np.ndarray]
    padded: Any
    lengths: list[int]
    rows: list[int]
    bad_rows: list[int]
    reasons: list[str]
    seconds: float


def _decode_batch(enc: EncoderLike, man: Manifest, batch: Sequence[Item], pin: bool = False) -> _Decoded:
    """Decode one planned batch; rows that fail are recorded with their reason, not raised."""
    t0 = time.perf_counter()
    waves, good, bad_rows, reasons = [], [], [], []
    for it in batch:
        seg = man.segments[it.row]
        try:
            waves.append(load_segment(seg.path, seg.start, seg.end, enc.sample_rate, int(enc.min_samples), channel=seg.channel))
            good.append(it.row)
        except AudioError as exc:
            bad_rows.append(it.row)
            reasons.append(exc.reason)
    lengths = [len(w) for w in waves]
    padded = None
    if waves and hasattr(enc, "encode_padded"):
        from probekit.extract.features import pad_waves  # torch: only for encoders that run on it

        padded, lengths = pad_waves(waves, pin=pin)
        waves = []
    return _Decoded(waves, padded, lengths, good, bad_rows, reasons, time.perf_counter() - t0)


def _encode_batch(enc: EncoderLike, d: _Decoded, pooling: str) -> BatchRecord:
    if not d.rows:
        pooled = np.zeros((0, 0, 0), np.float32)
    elif d.padded is not None:
        pooled = np.asarray(enc.encode_padded(d.padded, d.lengths, pooling=pooling), dtype=np.float32)  # type: ignore[attr-defined]
    else:
        pooled = _encode(enc, d.waves, pooling)
    return BatchRecord(
        rows=np.array(d.rows, dtype=np.int64),
        pooled=pooled,
        durations=(np.asarray(d.lengths, dtype=np.float64) / int(enc.sample_rate)).astype(np.float32),
        bad_rows=np.array(d.bad_rows, dtype=np.int64),
        bad_reasons=tuple(d.reasons),
    )


def _encode(enc: EncoderLike, waves: list[np.ndarray], pooling: str) -> np.ndarray:
    """``(len(waves), layers, dim)`` float32. Encoders that cannot mask padding only ever see
    equal-length inputs together: decoded lengths can differ from the header-based plan."""
    n = np.array([len(w) for w in waves])
    groups = [np.arange(len(n))] if enc.pads_safely else [np.flatnonzero(n == k) for k in np.unique(n)]
    parts = [np.asarray(enc.encode([waves[i] for i in g], pooling=pooling), dtype=np.float32) for g in groups]
    if len(parts) == 1:  # one group is the whole batch in input order
        return parts[0]
    # Rows come out group by group; the inverse permutation puts them back in input order.
    return np.concatenate(parts)[np.argsort(np.concatenate(groups))]


def _entry(man: Manifest, row: int, reason: str, fingerprint: str = "") -> dict:
    seg = man.segments[row]
    return {"id": seg.id, "line": seg.line, "reason": reason, "fingerprint": fingerprint}


def _write_cache(run: _Run, enc: EncoderLike | None, n_batches: int) -> _Written:
    """The new cache, rows in manifest order: reused rows copied from ``prev`` in their stored
    dtype (bit for bit), computed rows from the journal's ``n_batches`` batches; written to a
    temporary file and renamed. ``enc`` is ``None`` when nothing was computed."""
    man, journal, plan, checked, prev, pooling = run.man, run.journal, run.plan, run.checked, run.prev, run.pooling
    all_bad = dict(plan.bad)
    durations: dict[int, float] = {r: float(prev.durations[k]) for r, k in plan.reuse.items()}
    for index in range(n_batches):
        rec = journal.load(index)
        for k, r in enumerate(rec.rows.tolist()):
            durations[r] = float(rec.durations[k])
        for r, reason in zip(rec.bad_rows.tolist(), rec.bad_reasons):
            all_bad[r] = reason
    kept = sorted(durations)  # reused and computed rows
    position = {r: p for p, r in enumerate(kept)}
    if enc is not None:
        from probekit.extract.pooling import pooled_dim  # torch-backed module; the encoder already loaded it

        layers, dim = int(enc.num_hidden_states), pooled_dim(int(enc.hidden_size), pooling)
    else:
        layers, dim = prev.num_layers, prev.dim
    if prev is not None and (prev.num_layers, prev.dim) != (layers, dim):
        raise ExtractError(f"{prev.path} has {prev.num_layers} layers x {prev.dim} dims but the encoder gives ({layers}, {dim})")
    writer = CacheWriter(run.out, [man.segments[r].id for r in kept], layers, dim, dtype=run.dtype)
    # Rows per block written at once: 64 MiB of float32 vectors.
    step = max(1, 2**24 // max(1, layers * dim))
    try:
        held: list[tuple[int, int, int]] = []  # (position, batch, row in batch)
        for index in range(n_batches):
            rec = journal.load(index)
            if len(rec.rows) == 0:
                continue
            if rec.pooled.shape[1:] != (layers, dim):
                raise ExtractError(
                    f"batch {index} has shape {rec.pooled.shape[1:]} but the encoder gives ({layers}, {dim}); "
                    f"delete {journal.dir} to start over"
                )
            positions = [position[r] for r in rec.rows.tolist()]
            if journal.holds(index):
                held.extend((p, index, k) for k, p in enumerate(positions))
            else:
                writer.write_rows(np.array(positions), rec.pooled, rec.durations)
        # Batches in memory go out in row order, a block at a time: one write per block rather
        # than one scattered write per batch (a batch's rows are spread over the whole file).
        held.sort()
        for lo in range(0, len(held), step):
            chunk = held[lo : lo + step]
            writer.write_rows(np.array([p for p, _, _ in chunk]),
                              np.stack([journal.load(i).pooled[k] for _, i, k in chunk]),
                              np.array([journal.load(i).durations[k] for _, i, k in chunk]))
        if plan.reuse:
            writer.copy_rows(prev, list(plan.reuse.values()), [position[r] for r in plan.reuse])
        metadata = {name: [values[r] for r in kept] for name, values in man.columns().items()}
        skipped = tuple(_entry(man, r, all_bad[r], checked[r].audio.fingerprint) for r in sorted(all_bad))
        if enc is not None:
            attrs = {str(k): str(v) for k, v in dict(enc.identity).items()}
        else:
            attrs = {k: v for k, v in prev.attrs.items() if k not in ("fingerprint", "schema_version", "probekit_version", "created")}
        attrs.update(
            pooling=pooling,
            manifest=str(man.source),
            manifest_fingerprint=run.expected.manifest_fingerprint,
            shard=run.expected.shard,
            batch_seconds=float(run.batch_seconds),
            run_spec=json.dumps(run.expected.to_spec(), sort_keys=True),
        )
        audio = {name: [getattr(checked[r].audio, name) for r in kept] for name in AUDIO_FIELDS if name != "path"}
        audio["path"] = [os.path.abspath(man.segments[r].path) for r in kept]
        writer.finalize(metadata, attrs, skipped, audio=audio)
    except BaseException:
        writer.abort()
        raise
    return _Written(len(kept), layers, dim, float(sum(durations[r] for r in kept)),
                    tuple({k: e[k] for k in ("id", "line", "reason")} for e in skipped))


def _result_from_cache(cache: EmbeddingCache, expected: CacheIdentity, t0: float) -> ExtractResult:
    return ExtractResult(
        path=cache.path, model=expected.model, n_segments=len(cache), num_layers=cache.num_layers, dim=cache.dim,
        audio_seconds=float(cache.durations.sum()), wall_seconds=time.perf_counter() - t0,
        skipped=tuple({k: e[k] for k in ("id", "line", "reason")} for e in cache.skipped), batches_computed=0, batches_resumed=0, up_to_date=True, shard=expected.shard,
        rows_reused=len(cache),
    )


# --------------------------------------------------------------------------- several models, shards


def extract_models(
    manifest: str | Path,
    specs: Sequence[Any],
    out_dir: str | Path | None = None,
    shard: tuple[int, int] | None = None,
    **options: Any,
) -> list[ExtractResult]:
    """One cache per encoder spec, at :func:`default_cache_path`. ``shard=None`` falls back to
    torchrun's ``RANK``/``WORLD_SIZE``. The manifest is validated once, before any model loads.

    ``options``: keyword arguments of :func:`extract_cache` (``pooling``, ``dtype``, ``batch_seconds``,
    ``progress``, ``loader``, ``on_bad``, ``workers``, ``profile``, ``skip_bad``...), the same for every spec.
    """
    man = read_manifest(manifest, check_files=False)
    if shard is None:
        shard = shard_from_env()
        if shard is not None:
            _pin_local_gpu()
    return [extract_cache(man, spec, default_cache_path(manifest, spec.model, out_dir, shard), shard=shard, **options)
            for spec in specs]


def _pin_local_gpu() -> None:
    """Under torchrun, make ``cuda`` mean this process's own GPU (``LOCAL_RANK``), not GPU 0."""
    local = os.environ.get("LOCAL_RANK")
    if local is None or not local.isdigit():
        return
    import torch

    if torch.cuda.is_available() and int(local) < torch.cuda.device_count():
        torch.cuda.set_device(int(local))


def merge_shard_files(shards: Sequence[str | Path], out: str | Path, manifest: str | Path | None = None) -> Path:
    """Join the shard caches of one extraction into ``out``, rows in manifest order.

    Every shard ``0..n-1`` of the same ``n`` must be present exactly once. The manifest defaults
    to the one recorded in the shards.
    """
    paths = [Path(p) for p in shards]
    if not paths:
        raise ExtractError("no shard files given")
    caches = [EmbeddingCache(p) for p in paths]
    seen: dict[int, Path] = {}
    total = None
    for c in caches:
        parsed = parse_shard(str(c.attrs.get("shard", ""))) if str(c.attrs.get("shard", "")) else None
        if parsed is None:
            raise ExtractError(f"{c.path} is not a shard (its 'shard' attribute is {c.attrs.get('shard')!r})")
        i, n = parsed
        if total is not None and n != total:
            raise ExtractError(f"{c.path} is shard {i}/{n} but others are out of {total}")
        total = n
        if i in seen:
            raise ExtractError(f"shard {i}/{n} given twice: {seen[i]} and {c.path}")
        seen[i] = c.path
    missing = [i for i in range(total or 0) if i not in seen]
    if missing:
        raise ExtractError(f"missing shard(s) {', '.join(f'{i}/{total}' for i in missing)}; extract them first (--shard i/{total})")
    source = Path(manifest) if manifest is not None else Path(str(caches[0].attrs.get("manifest", "")))
    order = None
    if source.is_file():
        man = read_manifest(source, check_files=False)
        if man.audio_fingerprint() != str(caches[0].attrs.get("manifest_fingerprint", "")):
            raise ExtractError(f"{source} is not the manifest these shards were extracted from (fingerprints differ)")
        order = man.ids
    extra = {}
    try:
        run_spec = json.loads(str(caches[0].attrs.get("run_spec", "")))
        # The merged file is what an unsharded run would have written: a later unsharded
        # `probekit extract` into it then finds it up to date.
        extra["run_spec"] = json.dumps({**run_spec, "shard": ""}, sort_keys=True)
    except ValueError:
        pass
    return merge_shards(paths, out, order=order, extra_attrs=extra)

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
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from probekit.extract.audio import AudioError, load_segment, probe_segment, resampled_length
from probekit.extract.batching import Item, plan_batches, plan_digest
from probekit.cache import CacheError, CacheWriter, EmbeddingCache, merge_shards
from probekit.extract.journal import BatchRecord, Journal, JournalMismatch, RunLock
from probekit.manifest import Manifest, read_manifest
from probekit.progress import AudioProgress

POOLINGS = ("mean", "mean+std")
DTYPES = ("float16", "float32")
DEFAULT_BATCH_SECONDS = 120.0
# Bumped when the journal or plan format changes: an old journal is then refused, not misread.
JOURNAL_VERSION = 1


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


def _request(encoder: Any, pooling: str, dtype: str, manifest: Manifest, shard: tuple[int, int] | None) -> dict:
    """What the cache must have been computed with to be reused: known before any model loads."""
    if hasattr(encoder, "encode"):
        ident = dict(getattr(encoder, "identity", {}) or {})
        model, revision, mode = ident.get("encoder", ""), ident.get("revision", ""), ident.get("whisper_mode", "")
        max_layer = ident.get("max_layer", "")
    else:
        model, revision, mode = encoder.model, encoder.revision, getattr(encoder, "whisper_mode", "")
        if Path(model).expanduser().is_dir():
            # The same local checkpoint named from another working directory is the same model.
            model = str(Path(model).expanduser().resolve())
        max_layer = getattr(encoder, "max_layer", None)
    return {
        "model": str(model),
        "revision": str(revision or ""),
        "whisper_mode": str(mode or ""),
        "max_layer": "" if max_layer in (None, "") else str(max_layer),
        "pooling": pooling,
        "dtype": dtype,
        "manifest_fingerprint": manifest.audio_fingerprint(),
        "shard": f"{shard[0]}/{shard[1]}" if shard else "",
    }


def _check_finished(out: Path, request: dict) -> EmbeddingCache | None:
    """The finished cache at ``out`` if it matches ``request``; raises if it was made differently."""
    if not out.is_file():
        return None
    try:
        cache = EmbeddingCache(out)
    except CacheError as exc:
        raise ExtractError(f"{out} exists but is not a readable cache ({exc}); move it away or choose another --out") from exc
    try:
        stored = json.loads(str(cache.attrs.get("run_spec", "")))
    except ValueError:
        stored = None
    if not isinstance(stored, dict):
        raise ExtractError(f"{out} exists but was not written by `probekit extract`; move it away or choose another --out")
    diff = [k for k in request if str(stored.get(k, "")) != str(request[k])]
    if diff:
        details = "; ".join(f"{k}: file has {stored.get(k)!r}, you asked {request[k]!r}" for k in diff)
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
    man = manifest if isinstance(manifest, Manifest) else read_manifest(manifest)
    request = _request(encoder, pooling, dtype, man, None)
    try:
        stored = json.loads(str(EmbeddingCache(out).attrs.get("run_spec", "")))
    except (CacheError, ValueError):
        return [f"{out} is not a cache written by `probekit extract`"]
    if not isinstance(stored, dict):
        return [f"{out} is not a cache written by `probekit extract`"]
    names = {"manifest_fingerprint": "manifest audio (ids, paths, start/end)"}
    return [f"{names.get(k, k)}: cache has {stored.get(k)!r}, wanted {request[k]!r}" for k in request if str(stored.get(k, "")) != str(request[k])]


def _shard_segments(manifest: Manifest, shard: tuple[int, int] | None) -> list[int]:
    rows = range(len(manifest.segments))
    return list(rows) if shard is None else [r for r in rows if r % shard[1] == shard[0]]


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
) -> ExtractResult:
    """Extract every layer's pooled hidden states of ``manifest`` into the cache file ``out``.

    ``encoder`` is an encoder object (``encode``, ``sample_rate``, ... as in
    ``probekit.extract.encoders.Encoder``) or a spec (``EncoderSpec``: ``model``, ``revision``,
    ``whisper_mode``), loaded with ``loader`` (default ``probekit.extract.encoders.load_encoder``) only
    when there is work to do. ``shard=(i, n)`` takes manifest rows ``i, i+n, i+2n, ...``.

    Bad rows (unreadable, empty, truncated, silent, too short) are skipped, passed to ``on_bad``,
    recorded in the cache's ``skipped`` group and returned in ``ExtractResult.skipped``; the caller
    decides whether that is an error. ``on_batch(i)`` runs after batch ``i`` is journaled.

    Raises ``ManifestError`` (bad manifest), :class:`ExtractError` (``out`` holds another run),
    ``JournalMismatch`` (an unfinished journal of another run) or ``RunLocked`` (another process
    is writing ``out``).
    """
    t0 = time.perf_counter()
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {', '.join(POOLINGS)}, not {pooling!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    if batch_seconds <= 0:
        raise ValueError(f"batch_seconds must be positive, not {batch_seconds}")
    man = manifest if isinstance(manifest, Manifest) else read_manifest(manifest)
    out = Path(out)
    request = _request(encoder, pooling, dtype, man, shard)

    finished = _check_finished(out, request)
    if finished is not None:
        return _result_from_cache(finished, request, t0)

    with RunLock(out):
        # The lock's previous holder may have finished this very cache since the first check.
        finished = _check_finished(out, request)
        if finished is not None:
            return _result_from_cache(finished, request, t0)
        journal = Journal(out, {**request, "journal_version": JOURNAL_VERSION})
        stored = journal.stored_spec()
        if stored is not None and "batch_seconds" in stored and stored["batch_seconds"] != batch_seconds:
            # The plan must not change under a resumed run: keep the journal's batch size.
            batch_seconds = float(stored["batch_seconds"])
        journal.spec["batch_seconds"] = float(batch_seconds)
        journal.open()

        enc = encoder if hasattr(encoder, "encode") else _load(encoder, loader)
        rows = _shard_segments(man, shard)
        bad: dict[int, str] = {}
        items: list[Item] = []
        for r in rows:
            seg = man.segments[r]
            try:
                info = probe_segment(seg.path, seg.start, seg.end)
            except AudioError as exc:
                bad[r] = exc.reason
                continue
            items.append(Item(row=r, id=seg.id, length=resampled_length(info.num_frames, info.sample_rate, enc.sample_rate)))
        batches = plan_batches(items, enc.sample_rate, batch_seconds, pads_safely=bool(enc.pads_safely))
        _check_plan(journal, plan_digest(batches))

        total = sum(it.length for it in items) / enc.sample_rate
        done = journal.done()
        computed = resumed = 0
        label = f"{model_slug(request['model'])}{' shard ' + request['shard'] if shard else ''}"
        todo = [i for i in range(len(batches)) if i not in done]
        # Decoding of the next batch overlaps encoding of this one (soundfile and soxr release
        # the GIL); a crash still loses at most the batch being encoded.
        with AudioProgress(label, total, enabled=progress) as bar, ThreadPoolExecutor(1) as pool:
            for r, reason in bad.items():
                _report(on_bad, man, r, reason, bar)
            for index in sorted(done):
                rec = journal.load(index)
                for r, reason in zip(rec.bad_rows.tolist(), rec.bad_reasons):
                    _report(on_bad, man, r, reason, bar)
                resumed += 1
                bar.skip(sum(it.length for it in batches[index]) / enc.sample_rate)
            pending = pool.submit(_decode_batch, enc, man, batches[todo[0]]) if todo else None
            for k, index in enumerate(todo):
                decoded = pending.result()  # type: ignore[union-attr]
                pending = pool.submit(_decode_batch, enc, man, batches[todo[k + 1]]) if k + 1 < len(todo) else None
                rec = _encode_batch(enc, decoded, pooling)
                journal.save(index, rec)
                for r, reason in zip(rec.bad_rows.tolist(), rec.bad_reasons):
                    _report(on_bad, man, r, reason, bar)
                computed += 1
                bar.advance(sum(it.length for it in batches[index]) / enc.sample_rate)
                if on_batch is not None:
                    on_batch(index)

        result = _write_cache(out, man, enc, journal, len(batches), bad, request, pooling, dtype, batch_seconds, shard)
        journal.remove()
    n, layers, dim, audio_seconds, skipped = result
    return ExtractResult(
        path=out, model=request["model"], n_segments=n, num_layers=layers, dim=dim, audio_seconds=audio_seconds,
        wall_seconds=time.perf_counter() - t0, skipped=skipped, batches_computed=computed,
        batches_resumed=resumed, up_to_date=False, shard=request["shard"],
    )


def _load(spec: Any, loader: Callable[[Any], EncoderLike] | None) -> EncoderLike:
    if loader is None:
        from probekit.extract.encoders import load_encoder  # heavy: torch and transformers

        loader = load_encoder
    return loader(spec)


def _report(on_bad, man: Manifest, row: int, reason: str, bar: AudioProgress | None = None) -> None:
    seg = man.segments[row]
    entry = {"id": seg.id, "line": seg.line, "reason": reason}
    if bar is not None:
        bar.log(f"{man.source}: line {seg.line}, id {seg.id}: skipped: {reason}")
    if on_bad is not None:
        on_bad(entry)


def _check_plan(journal: Journal, digest: str) -> None:
    path = journal.dir / "plan.sha256"
    if path.is_file():
        if path.read_text().strip() != digest:
            raise JournalMismatch(
                f"{journal.dir}: the batch plan differs from the interrupted run's (audio files changed "
                f"length since?); delete {journal.dir} to start over"
            )
        return
    from probekit.extract.journal import _atomic_write_bytes

    _atomic_write_bytes(path, (digest + "\n").encode())


@dataclass(frozen=True)
class _Decoded:
    waves: list[np.ndarray]
    rows: list[int]
    bad_rows: list[int]
    reasons: list[str]
    sample_rate: int


def _decode_batch(enc: EncoderLike, man: Manifest, batch: Sequence[Item]) -> _Decoded:
    """Decode one planned batch; rows that fail are recorded with their reason, not raised."""
    waves, good, bad_rows, reasons = [], [], [], []
    for it in batch:
        seg = man.segments[it.row]
        try:
            waves.append(load_segment(seg.path, seg.start, seg.end, enc.sample_rate, int(enc.min_samples)))
            good.append(it.row)
        except AudioError as exc:
            bad_rows.append(it.row)
            reasons.append(exc.reason)
    return _Decoded(waves, good, bad_rows, reasons, int(enc.sample_rate))


def _encode_batch(enc: EncoderLike, d: _Decoded, pooling: str) -> BatchRecord:
    pooled = _encode(enc, d.waves, pooling) if d.waves else np.zeros((0, 0, 0), np.float32)
    return BatchRecord(
        rows=np.array(d.rows, dtype=np.int64),
        pooled=pooled,
        durations=np.array([len(w) / d.sample_rate for w in d.waves], dtype=np.float32),
        bad_rows=np.array(d.bad_rows, dtype=np.int64),
        bad_reasons=tuple(d.reasons),
    )


def _encode(enc: EncoderLike, waves: list[np.ndarray], pooling: str) -> np.ndarray:
    """``(len(waves), layers, dim)`` float32. Encoders that cannot mask padding only ever see
    equal-length inputs together: decoded lengths can differ from the header-based plan."""
    if enc.pads_safely or len({len(w) for w in waves}) == 1:
        return np.asarray(enc.encode(waves, pooling=pooling), dtype=np.float32)
    out: list[np.ndarray | None] = [None] * len(waves)
    groups: dict[int, list[int]] = {}
    for i, w in enumerate(waves):
        groups.setdefault(len(w), []).append(i)
    for length in sorted(groups):
        idx = groups[length]
        res = np.asarray(enc.encode([waves[i] for i in idx], pooling=pooling), dtype=np.float32)
        for k, i in enumerate(idx):
            out[i] = res[k]
    return np.stack(out)  # type: ignore[arg-type]


def _pooled_dim(enc: EncoderLike, pooling: str) -> int:
    return int(enc.hidden_size) * (2 if pooling == "mean+std" else 1)


def _write_cache(out, man, enc, journal, n_batches, bad, request, pooling, dtype, batch_seconds, shard):
    """Assemble the journaled batches into the final cache (manifest order), atomically."""
    records_rows: dict[int, tuple[int, int]] = {}
    all_bad = dict(bad)
    durations: dict[int, float] = {}
    for index in range(n_batches):
        rec = journal.load(index)
        for k, r in enumerate(rec.rows.tolist()):
            records_rows[r] = (index, k)
            durations[r] = float(rec.durations[k])
        for r, reason in zip(rec.bad_rows.tolist(), rec.bad_reasons):
            all_bad[r] = reason
    kept = sorted(records_rows)
    position = {r: p for p, r in enumerate(kept)}
    layers, dim = int(enc.num_hidden_states), _pooled_dim(enc, pooling)
    writer = CacheWriter(out, [man.segments[r].id for r in kept], layers, dim, dtype=dtype)
    try:
        for index in range(n_batches):
            rec = journal.load(index)
            if len(rec.rows) == 0:
                continue
            if rec.pooled.shape[1:] != (layers, dim):
                raise ExtractError(
                    f"batch {index} has shape {rec.pooled.shape[1:]} but the encoder gives ({layers}, {dim}); "
                    f"delete {journal.dir} to start over"
                )
            writer.write_rows(np.array([position[r] for r in rec.rows.tolist()]), rec.pooled, rec.durations)
        cols = man.columns()
        metadata = {name: [values[r] for r in kept] for name, values in cols.items()}
        skipped = tuple(
            {"id": man.segments[r].id, "line": man.segments[r].line, "reason": all_bad[r]} for r in sorted(all_bad)
        )
        attrs = {str(k): str(v) for k, v in dict(enc.identity).items()}
        attrs.update(
            pooling=pooling,
            manifest=str(man.source),
            manifest_fingerprint=request["manifest_fingerprint"],
            shard=request["shard"],
            batch_seconds=float(batch_seconds),
            run_spec=json.dumps(request, sort_keys=True),
        )
        writer.finalize(metadata, attrs, skipped)
    except BaseException:
        writer.abort()
        raise
    audio_seconds = float(sum(durations.values()))
    return len(kept), layers, dim, audio_seconds, skipped


def _result_from_cache(cache: EmbeddingCache, request: dict, t0: float) -> ExtractResult:
    return ExtractResult(
        path=cache.path, model=request["model"], n_segments=len(cache), num_layers=cache.num_layers, dim=cache.dim,
        audio_seconds=float(cache.durations.sum()), wall_seconds=time.perf_counter() - t0,
        skipped=tuple(cache.skipped), batches_computed=0, batches_resumed=0, up_to_date=True, shard=request["shard"],
    )


# --------------------------------------------------------------------------- several models, shards


def extract_models(
    manifest: str | Path,
    specs: Sequence[Any],
    out_dir: str | Path | None = None,
    pooling: str = "mean",
    dtype: str = "float16",
    batch_seconds: float = DEFAULT_BATCH_SECONDS,
    shard: tuple[int, int] | None = None,
    progress: bool = True,
    loader: Callable[[Any], EncoderLike] | None = None,
    on_bad: Callable[[dict], None] | None = None,
) -> list[ExtractResult]:
    """One cache per encoder spec, at :func:`default_cache_path`. ``shard=None`` falls back to
    torchrun's ``RANK``/``WORLD_SIZE``. The manifest is validated once, before any model loads."""
    man = read_manifest(manifest)
    if shard is None:
        shard = shard_from_env()
        if shard is not None:
            _pin_local_gpu()
    results = []
    for spec in specs:
        out = default_cache_path(manifest, spec.model, out_dir, shard)
        results.append(
            extract_cache(man, spec, out, pooling=pooling, dtype=dtype, batch_seconds=batch_seconds, shard=shard,
                          progress=progress, loader=loader, on_bad=on_bad)
        )
    return results


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

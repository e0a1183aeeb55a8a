"""The HDF5 embedding cache: the one file that joins extraction to probing.

Layout (schema version 1)::

    /embeddings        (n_layers, n_segments, dim)  float16 or float32, contiguous:
                       layer i of every segment is one contiguous slab, so reading
                       one layer reads only that layer.
    /ids               (n_segments,)  utf-8 strings, the manifest ids
    /durations         (n_segments,)  float32 seconds of audio that were encoded
    /meta/<column>     (n_segments,)  utf-8 strings: speaker, split, channel, label columns
    /skipped/{ids,lines,reasons}      rows that could not be encoded, and why
                       (+ fingerprints: their audio fingerprint when skipped, optional)
    /audio/{path,size,mtime_ns,file_sha256,fingerprint}  (n_segments,) per-row audio
                       fingerprints (see probekit.identity), optional: older files lack it
    attrs              encoder, revision, commit, config_hash, pooling, sample_rate,
                       whisper_mode, dtype, probekit_version, schema_version, created,
                       manifest, manifest_fingerprint, shard, fingerprint

No audio is ever stored. Only this module imports ``h5py``.
"""

from __future__ import annotations

from probekit import __version__
from probekit.choices import DType
from probekit.errors import ProbekitError

import hashlib
import os
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path

import h5py
import numpy as np

SCHEMA_VERSION = 1
_STR = h5py.string_dtype(encoding="utf-8")


class CacheError(ProbekitError, RuntimeError):
    """A cache file is missing, unreadable, unfinished or of an unknown schema."""


AUDIO_FIELDS = ("path", "size", "mtime_ns", "file_sha256", "fingerprint")


def lock_path(path: str | Path) -> Path:
    """The lock file of the cache at ``path``: ``<folder>/.locks/<name>.lock``, out of reach of a
    glob such as ``<folder>/*.shard-*`` that should match only caches."""
    path = Path(path)
    return path.parent / ".locks" / (path.name + ".lock")


def writer_pid(path: str | Path) -> str | None:
    """The pid of a live process writing the cache at ``path``, or ``None``.

    Asks the kernel (a non-blocking ``flock`` probe on :func:`lock_path`), so a lock file left
    by a killed writer does not count.
    """
    import fcntl

    lock = lock_path(path)
    try:
        fd = os.open(lock, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return os.pread(fd, 64, 0).decode(errors="replace").strip() or "?"
        return None  # closing the descriptor drops the probe's own shared lock
    finally:
        os.close(fd)


def _strings(values: Iterable[str]) -> np.ndarray:
    return np.array([str(v) for v in values], dtype=object)


def _decode(arr) -> np.ndarray:
    return np.array([v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in arr], dtype=object)


class CacheWriter:
    """Writes a cache to ``<path>.tmp`` and renames it into place only on :meth:`finalize`.

    So a reader never sees a half-written file: either the old file (or none) or the new one.

    Parameters
    ----------
    path: final file path.
    ids: ``(n_segments,)`` segment ids, in the order rows will be stored.
    num_layers, dim: shape of each segment's pooled representation.
    dtype: ``"float16"`` or ``"float32"`` storage.
    """

    def __init__(self, path: str | Path, ids: Sequence[str], num_layers: int, dim: int, dtype: str = "float16"):
        DType.check(dtype, "dtype")
        self.path = Path(path)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.n = len(ids)
        self._file = h5py.File(self.tmp, "w")
        self._file.create_dataset("embeddings", shape=(num_layers, self.n, dim), dtype=dtype)
        self._file.create_dataset("ids", data=_strings(ids), dtype=_STR)
        self._file.create_dataset("durations", shape=(self.n,), dtype="float32")
        self._written = np.zeros(self.n, dtype=bool)

    def write_rows(self, rows: np.ndarray, pooled: np.ndarray, durations: np.ndarray) -> None:
        """Store ``pooled`` ``(len(rows), num_layers, dim)`` at row positions ``rows``."""
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) == 0:
            return
        order = np.argsort(rows)
        rows, pooled, durations = rows[order], np.asarray(pooled)[order], np.asarray(durations)[order]
        emb = self._file["embeddings"]
        # h5py fancy indexing needs increasing indices; per-layer writes keep memory at one batch.
        for layer in range(emb.shape[0]):
            emb[layer, rows, :] = pooled[:, layer, :].astype(emb.dtype)
        self._file["durations"][rows] = durations
        self._written[rows] = True

    def copy_rows(self, cache: EmbeddingCache, src: Sequence[int], dst: Sequence[int]) -> None:
        """Copy rows ``src`` of ``cache`` (vectors in their stored dtype, bit for bit, and durations) to
        positions ``dst``, a block of 64 MiB of float32 vectors at a time."""
        pairs = sorted(zip((int(r) for r in src), (int(r) for r in dst)))
        step = max(1, 2**24 // max(1, cache.num_layers * cache.dim))
        for lo in range(0, len(pairs), step):
            rows = np.array([s for s, _ in pairs[lo : lo + step]])
            block = cache.read_rows(rows)
            self.write_rows(np.array([d for _, d in pairs[lo : lo + step]]), block, cache.durations[rows])

    def finalize(
        self,
        metadata: Mapping[str, Sequence[str]],
        attrs: Mapping[str, object],
        skipped: Sequence[Mapping[str, object]] = (),
        audio: Mapping[str, Sequence] | None = None,
    ) -> Path:
        """Write metadata, attributes, skipped rows and per-row audio fingerprints (``audio``: the
        :data:`AUDIO_FIELDS`, row-aligned), fingerprint the content, then rename into place."""
        if not self._written.all():
            missing = int((~self._written).sum())
            self.abort()
            raise CacheError(f"{self.path}: {missing} row(s) were never written; refusing to finish an incomplete cache")
        f = self._file
        meta = f.create_group("meta")
        for name, values in metadata.items():
            if len(values) != self.n:
                self.abort()
                raise CacheError(f"metadata column '{name}' has {len(values)} values for {self.n} segments")
            meta.create_dataset(name, data=_strings(values), dtype=_STR)
        sk = f.create_group("skipped")
        sk.create_dataset("ids", data=_strings(s.get("id", "") for s in skipped), dtype=_STR)
        sk.create_dataset("lines", data=np.array([int(s.get("line", 0)) for s in skipped], dtype=np.int64))
        sk.create_dataset("reasons", data=_strings(s.get("reason", "") for s in skipped), dtype=_STR)
        sk.create_dataset("fingerprints", data=_strings(s.get("fingerprint", "") for s in skipped), dtype=_STR)
        if audio is not None:
            group = f.create_group("audio")
            for name in AUDIO_FIELDS:
                values = list(audio[name])
                if len(values) != self.n:
                    self.abort()
                    raise CacheError(f"audio column '{name}' has {len(values)} values for {self.n} segments")
                if name in ("size", "mtime_ns"):
                    group.create_dataset(name, data=np.array(values, dtype=np.int64))
                else:
                    group.create_dataset(name, data=_strings(values), dtype=_STR)
        for key, value in attrs.items():
            f.attrs[key] = "" if value is None else value
        f.attrs["schema_version"] = SCHEMA_VERSION
        f.attrs.setdefault("created", datetime.now(timezone.utc).isoformat(timespec="seconds"))
        f.attrs["probekit_version"] = __version__
        f.attrs["dtype"] = str(f["embeddings"].dtype)
        f.attrs["fingerprint"] = _fingerprint(f)
        f.flush()
        f.close()
        with open(self.tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        """Close and delete the temporary file."""
        try:
            self._file.close()
        finally:
            self.tmp.unlink(missing_ok=True)


def _fingerprint(f: h5py.File) -> str:
    """Content hash of ids and embeddings, layer by layer (bounded memory)."""
    h = hashlib.sha256()
    # One read of the ids: iterating the dataset reads them one HDF5 call per row (0.1 ms each).
    for sid in f["ids"][()]:
        h.update(sid if isinstance(sid, bytes) else str(sid).encode())
        h.update(b"\0")
    emb = f["embeddings"]
    for layer in range(emb.shape[0]):
        h.update(np.ascontiguousarray(emb[layer]).tobytes())
    return h.hexdigest()


def write_cache(
    path: str | Path,
    ids: Sequence[str],
    embeddings: np.ndarray,
    metadata: Mapping[str, Sequence[str]],
    attrs: Mapping[str, object] | None = None,
    durations: np.ndarray | None = None,
    dtype: str = "float16",
    skipped: Sequence[Mapping[str, object]] = (),
) -> Path:
    """Write a whole cache at once from ``embeddings`` of shape ``(n_segments, n_layers, dim)``.

    Convenient for tests, synthetic benchmarks and merging; extraction streams through :class:`CacheWriter`.
    """
    embeddings = np.asarray(embeddings)
    n, num_layers, dim = embeddings.shape
    w = CacheWriter(path, ids, num_layers, dim, dtype=dtype)
    step = max(1, 2**26 // max(1, num_layers * dim))
    for lo in range(0, n, step):
        rows = np.arange(lo, min(n, lo + step))
        w.write_rows(rows, embeddings[rows], durations[rows] if durations is not None else np.zeros(len(rows)))
    return w.finalize(metadata, dict(attrs or {}), skipped)


class EmbeddingCache:
    """Read-only view of a finished cache file.

    ``ids``: ``(n_segments,)``; ``num_layers``: hidden states, embedding output included;
    ``dim``: features per layer (``2 * hidden_size`` for ``mean+std`` pooling);
    ``metadata``: manifest columns (speaker, split, labels), row-aligned with ``ids``.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            pid = writer_pid(self.path)
            if pid is not None:
                raise CacheError(f"{self.path} is being written by `probekit extract` (process {pid}); wait for it to finish, then rerun")
            tmp = self.path.with_name(self.path.name + ".tmp")
            hint = " (an extraction is unfinished: rerun `probekit extract` to resume it)" if tmp.exists() or self.path.with_name(self.path.name + ".partial").exists() else ""
            raise CacheError(f"{self.path}: cache file not found{hint}")
        try:
            with h5py.File(self.path, "r") as f:
                version = int(f.attrs.get("schema_version", -1))
                if version < 1 or version > SCHEMA_VERSION:
                    raise CacheError(f"{self.path}: unknown cache schema version {version} (this probekit reads 1..{SCHEMA_VERSION}); upgrade probekit")
                shape = f["embeddings"].shape
                self.ids = _decode(f["ids"][:])
                self.durations = f["durations"][:].astype(np.float32)
                self.metadata = {k: _decode(v[:]) for k, v in f["meta"].items()}
                self.attrs = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in f.attrs.items()}
                sk = f.get("skipped")
                self.skipped = []
                if sk is not None:
                    prints = _decode(sk["fingerprints"][:]) if "fingerprints" in sk else None
                    for k, (sid, line, reason) in enumerate(zip(_decode(sk["ids"][:]), sk["lines"][:], _decode(sk["reasons"][:]))):
                        entry = {"id": sid, "line": int(line), "reason": reason}
                        if prints is not None:
                            entry["fingerprint"] = prints[k]
                        self.skipped.append(entry)
                au = f.get("audio")
                #: Per-row audio facts (:data:`AUDIO_FIELDS` -> (n_segments,) arrays); {} in older files.
                self.audio = {} if au is None else {
                    k: (au[k][:].astype(np.int64) if k in ("size", "mtime_ns") else _decode(au[k][:])) for k in AUDIO_FIELDS
                }
        except CacheError:
            raise
        except (OSError, KeyError) as exc:
            raise CacheError(f"{self.path}: not a readable probekit cache ({exc})") from exc
        self.num_layers, self.n_segments, self.dim = (int(x) for x in shape)

    def __len__(self) -> int:
        return self.n_segments

    def __repr__(self) -> str:
        return f"EmbeddingCache({str(self.path)!r}, encoder={self.encoder!r}, layers={self.num_layers}, segments={self.n_segments}, dim={self.dim})"

    @property
    def encoder(self) -> str:
        return str(self.attrs.get("encoder", ""))

    @property
    def fingerprint(self) -> str:
        return str(self.attrs.get("fingerprint", ""))

    @property
    def dtype(self) -> np.dtype:
        return np.dtype(str(self.attrs.get("dtype", "float32")))

    def read_layer(self, layer: int, dtype: np.dtype | type | None = np.float32, rows: np.ndarray | None = None) -> np.ndarray:
        """Layer ``layer`` of every segment (or of ``rows``, sorted row positions): ``(n, dim)``.

        ``dtype=None`` keeps the stored dtype (float16 caches then cost half the memory).
        """
        if not 0 <= layer < self.num_layers:
            raise IndexError(f"layer {layer} out of range: this cache has hidden states 0..{self.num_layers - 1}")
        with h5py.File(self.path, "r") as f:
            data = f["embeddings"][layer] if rows is None else f["embeddings"][layer, np.asarray(rows), :]
        return data if dtype is None else data.astype(dtype, copy=False)

    def read_rows(self, rows: np.ndarray | None = None) -> np.ndarray:
        """Every hidden state of ``rows`` (sorted row positions; default all) in the stored dtype, from one
        open of the file: ``(n, num_layers, dim)``."""
        with h5py.File(self.path, "r") as f:
            data = f["embeddings"][()] if rows is None else f["embeddings"][:, np.asarray(rows), :]
        return np.ascontiguousarray(data.transpose(1, 0, 2))


def merge_shards(
    shards: Sequence[str | Path],
    out: str | Path,
    order: Sequence[str] | None = None,
    extra_attrs: Mapping[str, object] | None = None,
) -> Path:
    """Join shard caches of the same encoder into one file.

    Rows follow ``order`` (ids) when given, else shard order. Encoder, pooling and dtype must match.
    ``extra_attrs`` override the attributes copied from the first shard.
    """
    caches = [EmbeddingCache(p) for p in shards]
    if not caches:
        raise CacheError("no shard files to merge")
    ref = caches[0]
    for c in caches[1:]:
        for key in ("encoder", "commit", "config_hash", "pooling", "whisper_mode", "dtype", "manifest_fingerprint"):
            if str(c.attrs.get(key)) != str(ref.attrs.get(key)):
                raise CacheError(f"cannot merge {c.path} with {ref.path}: '{key}' differs ({c.attrs.get(key)!r} vs {ref.attrs.get(key)!r})")
        if (c.num_layers, c.dim) != (ref.num_layers, ref.dim):
            raise CacheError(f"cannot merge {c.path}: shape {c.num_layers}x{c.dim} differs from {ref.num_layers}x{ref.dim}")
    where: dict[str, tuple[int, int]] = {}
    for ci, c in enumerate(caches):
        for ri, sid in enumerate(c.ids):
            if sid in where:
                raise CacheError(f"id '{sid}' appears in both {caches[where[sid][0]].path} and {c.path}")
            where[sid] = (ci, ri)
    ids = list(order) if order is not None else [sid for c in caches for sid in c.ids]
    ids = [i for i in ids if i in where]
    cols = sorted(set().union(*(c.metadata.keys() for c in caches)))
    metadata = {k: [caches[where[i][0]].metadata.get(k, np.array([""] * len(caches[where[i][0]])))[where[i][1]] for i in ids] for k in cols}
    w = CacheWriter(out, ids, ref.num_layers, ref.dim, dtype=str(ref.dtype))
    for ci, c in enumerate(caches):
        sel = [k for k, i in enumerate(ids) if where[i][0] == ci]
        w.copy_rows(c, [where[ids[k]][1] for k in sel], sel)
    attrs = {k: v for k, v in ref.attrs.items() if k not in ("fingerprint", "schema_version", "probekit_version", "shard", "created")}
    attrs["shard"] = f"merged from {len(caches)} shard(s)"
    attrs.update(extra_attrs or {})
    skipped = [s for c in caches for s in c.skipped]
    audio = None
    if all(c.audio for c in caches):
        audio = {k: [caches[where[i][0]].audio[k][where[i][1]] for i in ids] for k in AUDIO_FIELDS}
    return w.finalize(metadata, attrs, skipped, audio=audio)

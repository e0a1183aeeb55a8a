"""What a cache was computed from: its identity, defined once.

A cache can be reused, extended or merged only with work of the same identity:

- the settings: model (a local folder as its absolute path), revision, Whisper mode, max layer,
  pooling, storage dtype, shard, and :data:`FEATURE_VERSION`;
- the manifest's audio fingerprint (ids, paths, start/end, channel; labels are left out);
- per row, an audio fingerprint over the file's bytes, the segment's start/end and channel: a file
  replaced at the same path changes it, a file copied elsewhere unchanged does not.

:class:`CacheIdentity` is built from a finished cache (:meth:`CacheIdentity.from_cache`, or
:meth:`~CacheIdentity.from_attrs`) or from what a run would use (:meth:`CacheIdentity.expected`,
which loads no model); :meth:`~CacheIdentity.differences` lists how two identities differ, in
words. Only the cache module reads cache files; this one hashes audio and compares.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, MutableMapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

#: Version of the feature path (decoding, features, pooling). Bumped only when the vectors a
#: run writes change beyond float32 rounding; caches written before this field existed are 1.
FEATURE_VERSION = 1

# The settings that must match for two caches to hold comparable vectors, with their names in words.
SETTINGS = {
    "model": "model",
    "revision": "revision",
    "whisper_mode": "Whisper mode",
    "max_layer": "max layer",
    "pooling": "pooling",
    "dtype": "dtype",
    "shard": "shard",
    "feature_version": "feature path version",
}


@dataclass(frozen=True)
class RowAudio:
    """One row's audio fingerprint and the file facts that let a rerun skip rehashing.

    ``fingerprint``: hex digest over the file's content digest, start, end and channel;
    ``file_sha256``: the whole file's content digest; ``size`` (bytes) and ``mtime_ns`` of the
    file when it was hashed. An absent file has empty digests.
    """

    fingerprint: str
    file_sha256: str = ""
    size: int = -1
    mtime_ns: int = -1


@dataclass(frozen=True)
class CacheIdentity:
    """Settings, manifest fingerprint and per-row audio fingerprints (``rows``: id -> fingerprint)."""

    model: str
    revision: str = ""
    whisper_mode: str = ""
    max_layer: str = ""
    pooling: str = "mean"
    dtype: str = "float16"
    shard: str = ""
    feature_version: int = FEATURE_VERSION
    manifest_fingerprint: str = ""
    rows: Mapping[str, str] = field(default_factory=dict, compare=False, hash=False)

    # -- building ------------------------------------------------------------------------------

    @classmethod
    def expected(cls, encoder: Any, pooling: str, dtype: str, manifest: Any = None, shard: tuple[int, int] | None = None,
                 rows: Mapping[str, str] | None = None) -> CacheIdentity:
        """What a run of ``encoder`` would write, known before any model loads.

        ``encoder``: an ``EncoderSpec`` (``model``, ``revision``, ``whisper_mode``, ``max_layer``) or
        a loaded encoder (its ``identity`` dict). ``manifest``: a ``probekit.manifest.Manifest`` or
        ``None``. ``rows``: per-row fingerprints (see :func:`row_fingerprints`), when computed.
        """
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
        return cls(
            model=str(model), revision=str(revision or ""), whisper_mode=str(mode or ""),
            max_layer="" if max_layer in (None, "") else str(max_layer), pooling=str(pooling), dtype=str(dtype),
            shard=f"{shard[0]}/{shard[1]}" if shard else "",
            manifest_fingerprint=manifest.audio_fingerprint() if manifest is not None else "",
            rows=dict(rows or {}),
        )

    @classmethod
    def from_attrs(cls, attrs: Mapping[str, Any], rows: Mapping[str, str] | None = None) -> CacheIdentity | None:
        """From a cache's attributes (its ``run_spec``); ``None`` when not written by ``probekit extract``."""
        try:
            spec = json.loads(str(attrs.get("run_spec", "")))
        except ValueError:
            return None
        if not isinstance(spec, dict) or "model" not in spec:
            return None
        known = {f.name for f in fields(cls)} - {"rows"}
        values = {k: str(spec[k]) for k in known if k in spec}
        values["feature_version"] = int(spec.get("feature_version", 1))
        return cls(**values, rows=dict(rows or {}))

    @classmethod
    def from_cache(cls, cache: Any) -> CacheIdentity | None:
        """From an ``EmbeddingCache`` (its attributes and per-row audio fingerprints)."""
        audio = getattr(cache, "audio", None) or {}
        rows = dict(zip(map(str, cache.ids), map(str, audio.get("fingerprint", ())))) if audio else {}
        return cls.from_attrs(cache.attrs, rows)

    def to_spec(self) -> dict:
        """The JSON-able settings and manifest fingerprint (stored as the cache's ``run_spec``)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "rows"}

    # -- comparing -----------------------------------------------------------------------------

    def setting_differences(self, other: CacheIdentity) -> list[str]:
        """Settings that differ, one line each: ``"pooling: mean here, mean+std there"``."""
        return [f"{label}: {getattr(self, key)!r} here, {getattr(other, key)!r} there"
                for key, label in SETTINGS.items() if str(getattr(self, key)) != str(getattr(other, key))]

    def differences(self, other: CacheIdentity) -> list[str]:
        """Every difference, in words: settings, the manifest's audio, and rows whose audio changed,
        that only one side has (rows are compared only where both sides know them)."""
        out = self.setting_differences(other)
        if self.manifest_fingerprint != other.manifest_fingerprint:
            out.append("manifest audio (ids, paths, start/end, channel) differs")
        if self.rows and other.rows:
            changed = sorted(k for k in self.rows.keys() & other.rows.keys() if self.rows[k] != other.rows[k])
            only_here = sorted(self.rows.keys() - other.rows.keys())
            only_there = sorted(other.rows.keys() - self.rows.keys())
            for what, ids in (("audio changed", changed), ("only here", only_here), ("only there", only_there)):
                if ids:
                    shown = ", ".join(ids[:5]) + (f" and {len(ids) - 5} more" if len(ids) > 5 else "")
                    out.append(f"{len(ids)} row(s) {what}: {shown}")
        return out


# --------------------------------------------------------------------------- per-row fingerprints


def update_with_file(h: Any, path: str | Path) -> None:
    """Feed a file's bytes to the hash object ``h`` (1 MiB reads; hashlib releases the GIL, so threads overlap)."""
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)


def file_sha256(path: str | Path) -> str:
    """Hex SHA-256 of a file's bytes: the one file digest of probekit (audio, manifests, exported files)."""
    h = hashlib.sha256()
    update_with_file(h, path)
    return h.hexdigest()


def json_sha256(obj: Any) -> str:
    """Hex SHA-256 of the canonical JSON of ``obj`` (sorted keys; values JSON cannot hold as ``str()``)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def file_audio(path: str | Path, known: MutableMapping[tuple[str, int, int], str] | None = None) -> RowAudio:
    """The file part of a segment's audio fingerprint: digest, size and mtime of ``path`` (empty
    digests when it cannot be read), ``fingerprint`` left empty; :func:`segment_audio` adds it per
    segment. ``known`` maps ``(absolute path, size, mtime_ns)`` to a file digest computed earlier: an
    untouched file is not read again (as ``make`` and git do). A digest computed here is added to
    ``known``, so the other segments of one file (a long call cut into turns) do not hash it again."""
    absolute = os.path.abspath(path)
    try:
        st = os.stat(absolute)
    except OSError:
        return RowAudio(fingerprint="")
    key = (absolute, int(st.st_size), int(st.st_mtime_ns))
    digest = (known or {}).get(key)
    if digest is None:
        try:
            digest = file_sha256(absolute)
        except OSError:
            return RowAudio(fingerprint="")
        if known is not None:
            known[key] = digest
    return RowAudio("", digest, key[1], key[2])


def segment_audio(file: RowAudio, start: float | None, end: float | None, channel: int | None) -> RowAudio:
    """One segment's :class:`RowAudio` from its file's (:func:`file_audio`): the fingerprint over
    the file digest, start, end and channel; empty for a file that could not be read."""
    if not file.file_sha256:
        return RowAudio(fingerprint="")
    picked = f"{file.file_sha256}\t{start}\t{end}\t{'' if channel is None else channel}"
    return RowAudio(hashlib.sha256(picked.encode()).hexdigest()[:32], file.file_sha256, file.size, file.mtime_ns)


def known_files(paths: Iterable[str], audio: Mapping[str, Iterable]) -> dict[tuple[str, int, int], str]:
    """``(path, size, mtime_ns) -> file digest`` from a cache's stored per-row audio facts."""
    return {(str(p), int(s), int(m)): str(d)
            for p, s, m, d in zip(paths, audio.get("size", ()), audio.get("mtime_ns", ()), audio.get("file_sha256", ())) if d}

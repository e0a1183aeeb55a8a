"""Append-only results store of a sweep: one JSON line per computed cell.

A cell is (cache fingerprint, task hash, layer, probe, params, fold). Every record carries its full
key, so a store never mixes results of a changed cache or a changed label definition: those are
different keys, and :meth:`ResultStore.check_compatible` refuses to reuse a store whose records
were made on another cache file of the same path or another task definition.

Records are appended and flushed one line at a time (``os.fsync`` on :meth:`close`); a torn last
line left by a crash is ignored on load and cut off before the next append.
"""

from __future__ import annotations

from probekit.errors import ProbekitError

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

from probekit.identity import json_sha256

__all__ = ["StoreError", "ResultStore", "cell_key", "params_key", "stable_hash"]


class StoreError(ProbekitError, RuntimeError):
    """The store belongs to another cache or task, or cannot be read."""


def stable_hash(obj) -> str:
    """Short sha256 of the canonical JSON of ``obj`` (sorted keys)."""
    return json_sha256(obj)[:16]


def params_key(params: Mapping[str, object]) -> str:
    """Canonical string of a parameter dict: ``{"C": 0.1}`` -> ``'{"C":0.1}'``."""
    return json.dumps({k: params[k] for k in sorted(params)}, separators=(",", ":"), default=float)


def cell_key(cache_fp: str, task_hash: str, layer: int, probe: str, params: Mapping[str, object], fold: str) -> tuple:
    """The identity of one computed cell."""
    return (cache_fp, task_hash, int(layer), probe, params_key(params), fold)


class ResultStore:
    """``results.jsonl`` of a sweep: load existing records, append new ones.

    Each record is a dict with at least ``cache``, ``task``, ``layer``, ``probe``, ``params``,
    ``fold`` (e.g. ``"o2/i1"`` = inner fold 1 of outer fold 2, ``"o2"`` = outer test fold 2),
    ``scores`` (metric name -> float) and ``n_test``; an outer cell also has ``confusion`` (counts as
    :func:`probekit.probe.metrics.confusion_counts` gives them; ``null`` for inner cells, absent from
    stores written before it was kept, which still load).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.records: dict[tuple, dict] = {}
        self.torn = False
        self._good_bytes = 0
        if self.path.exists():
            self._load()
        self._fh = None

    def _load(self) -> None:
        *complete, tail = self.path.read_bytes().split(b"\n")
        self.torn = bool(tail)  # no newline at the end: a write cut short by a crash
        for lineno, line in enumerate(complete, 1):
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                if lineno == len(complete) and not tail:
                    self.torn = True
                    break
                raise StoreError(f"{self.path}: line {lineno} is not valid JSON ({exc}); the store is damaged in the middle, not just at the end") from exc
            self.records[self._key(rec)] = rec
            self._good_bytes += len(line) + 1

    @staticmethod
    def _key(rec: Mapping) -> tuple:
        return cell_key(rec["cache"], rec["task"], rec["layer"], rec["probe"], rec["params"], rec["fold"])

    def check_compatible(self, caches: Mapping[str, str], task_hash: str) -> None:
        """Refuse a store whose records name one of ``caches`` (path -> fingerprint) with another
        fingerprint, or another task definition: mixing them would silently blend two experiments."""
        for rec in self.records.values():
            path = rec.get("cache_path")
            if path in caches and rec["cache"] != caches[path]:
                raise StoreError(
                    f"{self.path}: records for cache {path} were computed on different content (fingerprint {rec['cache'][:12]}, now {caches[path][:12]}). "
                    "The cache was re-extracted: use a new --out folder, or delete the old results.jsonl to start over."
                )
            if rec["task"] != task_hash:
                raise StoreError(
                    f"{self.path}: records were computed for another task or label definition ({rec.get('task_spec', rec['task'])}). "
                    "Use a new --out folder for this task, or delete the old results.jsonl."
                )

    def has(self, key: tuple) -> bool:
        return key in self.records

    def get(self, key: tuple) -> dict | None:
        return self.records.get(key)

    def append(self, records: Iterable[Mapping]) -> None:
        """Append ``records`` (one JSON line each, flushed)."""
        if self._fh is None:
            if self.torn:
                with open(self.path, "r+b") as fh:
                    fh.truncate(self._good_bytes)
                self.torn = False
            self._fh = open(self.path, "a", encoding="utf-8")
        for rec in records:
            rec = dict(rec)
            self._fh.write(json.dumps(rec, sort_keys=True, default=float) + "\n")
            self._fh.flush()
            self.records[self._key(rec)] = rec

    def close(self) -> None:
        if self._fh is not None:
            self._fh.flush()
            os.fsync(self._fh.fileno())
            self._fh.close()
            self._fh = None

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return len(self.records)

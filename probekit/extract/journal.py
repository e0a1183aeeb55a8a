"""Crash-safe bookkeeping for a running extraction: a lock and a per-batch journal.

- :class:`RunLock` holds ``fcntl.flock`` on ``<folder>/.locks/<name>.lock`` (:func:`probekit.cache.lock_path`). The kernel drops it when the process
  dies, even by ``kill -9``, so a stale lock never blocks a rerun, while a live writer is never
  joined by a second one.
- :class:`Journal` keeps each finished batch as ``<out>.partial/batch-NNNNNN.npz``, written to a
  temporary name and renamed, so a file in the folder is complete unless the machine lost power
  (then :meth:`Journal.readable` finds it damaged and it is recomputed). ``spec.json``
  records what the run computes; a rerun with another model, revision or pooling is refused
  rather than mixed in.
"""

from __future__ import annotations

from probekit.errors import ProbekitError

import fcntl
import json
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from probekit.cache import lock_path

#: Bytes of pooled vectors a :class:`Journal` holds in memory by default (float32: about 17,000
#: rows of 5 x 768 values, or the whole of most corpora); batches beyond it are read back from disk.
HOLD_BYTES = 256 * 2**20


class RunLocked(ProbekitError, RuntimeError):
    """Another live process is writing the same cache."""


class JournalMismatch(ProbekitError, RuntimeError):
    """An unfinished journal belongs to a different run (model, revision, pooling, manifest...)."""


class RunLock:
    """Exclusive, non-blocking lock on :func:`probekit.cache.lock_path` of ``out`` for the life of a ``with`` block."""

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.path = lock_path(out)
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunLocked(
                f"{self.out} is being written by process {holder}; wait for it to finish "
                "(or stop it), then rerun to resume"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, str(os.getpid()).encode(), 0)
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            # The file stays: deleting it would let a process that opened it just before the
            # unlink lock a dead inode while a third locks a new file.
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


@dataclass(frozen=True)
class BatchRecord:
    """One finished batch: manifest ``rows`` ``(n,)``, ``pooled`` ``(n, layers, dim)`` float32,
    ``durations`` ``(n,)`` seconds, and the rows of the batch that failed, with reasons."""

    rows: np.ndarray
    pooled: np.ndarray
    durations: np.ndarray
    bad_rows: np.ndarray
    bad_reasons: tuple[str, ...]


def _atomic_write_bytes(path: Path, data: bytes, sync: bool = True) -> None:
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        if sync:
            os.fsync(fh.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Journal:
    """The ``<out>.partial/`` folder of a run identified by ``spec`` (a JSON-able dict).

    Finished batches are also held in memory while their pooled vectors fit in ``hold_bytes``:
    :meth:`load` then costs no disk read. What is held is what the file holds, so a cache written
    from memory equals one written from the files (a resumed run reads them back)."""

    def __init__(self, out: str | Path, spec: dict, hold_bytes: int | None = None):
        self.dir = Path(str(out) + ".partial")
        self.spec = json.loads(json.dumps(spec, sort_keys=True))
        #: Bytes of pooled vectors held in memory (default :data:`HOLD_BYTES`; 0 holds nothing).
        self.hold_bytes = HOLD_BYTES if hold_bytes is None else int(hold_bytes)
        self._held: dict[int, BatchRecord] = {}
        self._held_bytes = 0

    def stored_spec(self) -> dict | None:
        try:
            return json.loads((self.dir / "spec.json").read_text())
        except (OSError, ValueError):
            return None

    def open(self) -> None:
        """Create the journal, or check that the existing one is for this same run."""
        stored = self.stored_spec()
        if stored is None and any(self.dir.glob("batch-*.npz")):
            raise JournalMismatch(f"{self.dir} holds batches but no readable spec.json; delete {self.dir} to start over")
        if stored is not None:
            diff = [k for k in sorted(set(stored) | set(self.spec)) if stored.get(k) != self.spec.get(k)]
            if diff:
                details = "; ".join(f"{k}: journal has {stored.get(k)!r}, this run asks {self.spec.get(k)!r}" for k in diff)
                raise JournalMismatch(
                    f"{self.dir} holds an unfinished extraction of a different run ({details}). "
                    f"Rerun with the journal's settings to finish it, choose another --out, or delete {self.dir} to start over"
                )
            return
        self.dir.mkdir(parents=True, exist_ok=True)
        _atomic_write_bytes(self.dir / "spec.json", json.dumps(self.spec, sort_keys=True, indent=1).encode())
        _fsync_dir(self.dir.parent)

    def check_plan(self, digest: str) -> None:
        """Record the batch plan's digest, or check it against the one recorded: a resumed run
        must find the plan of the run it resumes."""
        path = self.dir / "plan.sha256"
        if not path.is_file():
            _atomic_write_bytes(path, (digest + "\n").encode())
        elif path.read_text().strip() != digest:
            raise JournalMismatch(
                f"{self.dir}: the batch plan differs from the interrupted run's (audio files changed "
                f"length since?); delete {self.dir} to start over"
            )

    def _file(self, index: int) -> Path:
        return self.dir / f"batch-{index:06d}.npz"

    def done(self) -> set[int]:
        """Indices of batches already journaled."""
        out = set()
        for p in self.dir.glob("batch-*.npz"):
            try:
                out.add(int(p.stem.split("-")[1]))
            except (IndexError, ValueError):
                continue
        return out

    def save(self, index: int, record: BatchRecord) -> None:
        """Journal batch ``index`` atomically (temporary file, rename).

        No fsync per batch (it cost more than encoding a batch of short clips): a killed process
        loses nothing, since the kernel holds what was written; after a power loss, a damaged
        file is found by :meth:`readable` on resume and that batch is recomputed.
        """
        import io

        # Copies, not views: an encoder may hand back one buffer it overwrites each batch, and the held
        # batches must stay what the journal file says.
        held = BatchRecord(
            rows=np.array(record.rows, dtype=np.int64),
            pooled=np.array(record.pooled, dtype=np.float32),
            durations=np.array(record.durations, dtype=np.float32),
            bad_rows=np.array(record.bad_rows, dtype=np.int64),
            bad_reasons=tuple(str(r) for r in record.bad_reasons),
        )
        buf = io.BytesIO()
        np.savez(buf, rows=held.rows, pooled=held.pooled, durations=held.durations, bad_rows=held.bad_rows,
                 bad_reasons=np.array(held.bad_reasons, dtype=np.str_).reshape(-1))
        _atomic_write_bytes(self._file(index), buf.getvalue(), sync=False)
        self._hold(index, held)

    def readable(self, index: int) -> bool:
        """Whether batch ``index``'s file loads whole (zip CRCs checked); a damaged one is deleted."""
        try:
            self._read(index)
            return True
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            self._file(index).unlink(missing_ok=True)
            return False

    def load(self, index: int) -> BatchRecord:
        """Batch ``index``: the record held in memory, else read from its file (and held if it fits)."""
        record = self._held.get(index)
        if record is None:
            record = self._read(index)
            self._hold(index, record)
        return record

    def holds(self, index: int) -> bool:
        """Whether batch ``index`` is held in memory (loading it costs no disk read)."""
        return index in self._held

    def _hold(self, index: int, record: BatchRecord) -> None:
        size = int(record.pooled.nbytes)
        if index not in self._held and self._held_bytes + size <= self.hold_bytes:
            self._held[index] = record
            self._held_bytes += size

    def _read(self, index: int) -> BatchRecord:
        with np.load(self._file(index), allow_pickle=False) as z:
            return BatchRecord(
                rows=z["rows"],
                pooled=z["pooled"],
                durations=z["durations"],
                bad_rows=z["bad_rows"],
                bad_reasons=tuple(str(r) for r in z["bad_reasons"]),
            )

    def remove(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)
        self._held.clear()
        self._held_bytes = 0

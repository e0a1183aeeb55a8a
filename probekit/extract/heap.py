"""Keep freed host memory in the process while a CPU encoder runs (glibc only).

Each CPU forward pass returns every hidden state of its batch, for Whisper's padded windows
tens of MB, and allocates attention buffers of hundreds of MB. glibc serves blocks that large by
``mmap`` and trims a freed heap top back to the kernel, so every batch gives the memory back and
the next one faults it in again, page by page, zeroed by the kernel: 2-10 ms of host time per
batch on a 2-core machine (docs/extract.md). Raising glibc's mmap and trim thresholds for the
length of the run keeps that memory for reuse; it holds no more at the peak, only for longer.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Iterator
from contextlib import contextmanager

# mallopt parameter numbers from glibc's <malloc.h>.
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
# glibc's static defaults, restored after the run (its dynamic threshold cannot be re-enabled).
_DEFAULT_THRESHOLD = 128 * 1024
MMAP_THRESHOLD = 256 * 1024**2  # bytes: blocks below it come from the heap, where they can be reused
TRIM_THRESHOLD = 1024**3  # bytes of free heap top kept before glibc gives any back
# A user who tunes glibc through its environment variables keeps their own settings.
_USER_SETTINGS = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")


def _glibc():
    """The process's C library when it is glibc with ``mallopt`` (else ``None``: musl, macOS, Windows, a preloaded allocator)."""
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 -- only glibc has it
        return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None
    except (OSError, AttributeError, TypeError):
        return None


@contextmanager
def retained_heap(active: bool = True) -> Iterator[bool]:
    """Within the block, freed memory below :data:`MMAP_THRESHOLD` stays in the process (up to
    :data:`TRIM_THRESHOLD` bytes of free heap); afterwards glibc's default thresholds are restored
    and the kept memory is returned with ``malloc_trim``. Yields whether it took effect: not when
    ``active`` is false, the C library is not glibc, or the user set glibc's own ``MALLOC_*``
    environment variables."""
    libc = _glibc() if active and not any(v in os.environ for v in _USER_SETTINGS) else None
    if libc is None:
        yield False
        return
    try:
        yield bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD))
    finally:
        libc.mallopt(_M_TRIM_THRESHOLD, _DEFAULT_THRESHOLD)
        libc.mallopt(_M_MMAP_THRESHOLD, _DEFAULT_THRESHOLD)
        libc.malloc_trim(0)

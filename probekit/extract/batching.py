"""Group segments into batches by length, bounded by padded audio seconds per batch.

The plan depends only on each segment's id and length, sorted by ``(length, id)``, so the same
manifest always gives the same batches: a resumed run recomputes exactly the batches an
uninterrupted run would have, and the final cache is bit-identical.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

# A batch never spans lengths further apart than this ratio: padding stays under ~25 %
# and similar lengths share a bucket, whatever the batch-seconds bound allows.
BUCKET_RATIO = 1.25


@dataclass(frozen=True)
class Item:
    """One segment to encode: ``row`` is its position in the manifest, ``length`` in encoder samples,
    ``cost`` the samples the encoder actually processes for it (padded Whisper: whole 30 s
    windows; ``None``: the length)."""

    row: int
    id: str
    length: int
    cost: int | None = None

    @property
    def work(self) -> int:
        return self.length if self.cost is None else self.cost


def plan_batches(
    items: Sequence[Item],
    sample_rate: int,
    batch_seconds: float,
    pads_safely: bool = True,
    bucket_ratio: float = BUCKET_RATIO,
) -> list[tuple[Item, ...]]:
    """Split ``items`` into batches.

    Items are sorted by ``(length, id)`` and cut greedily: a batch closes when what the encoder
    would process (``count * largest cost``) would exceed ``batch_seconds`` of audio at
    ``sample_rate`` Hz, or when the next item costs more than ``bucket_ratio`` times the batch's
    cheapest. The cost is what bounds memory: a 2 s clip costs padded Whisper a 30 s window.
    An item longer than the bound gets a batch of its own. When the encoder cannot mask padding
    (``pads_safely=False``), only items of exactly equal length share a batch.
    """
    if batch_seconds <= 0:
        raise ValueError(f"batch_seconds must be positive, not {batch_seconds}")
    budget = batch_seconds * sample_rate
    batches: list[tuple[Item, ...]] = []
    current: list[Item] = []
    for item in sorted(items, key=lambda it: (it.length, it.id)):
        if current:
            first = current[0]
            same_bucket = item.length == first.length if not pads_safely else item.work <= first.work * bucket_ratio
            fits = (len(current) + 1) * item.work <= budget
            if not (same_bucket and fits):
                batches.append(tuple(current))
                current = []
        current.append(item)
    if current:
        batches.append(tuple(current))
    return batches


def plan_digest(batches: Sequence[Sequence[Item]]) -> str:
    """Hash of a plan (ids and lengths, batch by batch): a resumed run must find the same one."""
    h = hashlib.sha256()
    for batch in batches:
        for it in batch:
            h.update(f"{it.id}\t{it.length}\t{it.work}\n".encode())
        h.update(b"--\n")
    return h.hexdigest()

"""Batch planning: bounded padded seconds, length buckets, equal lengths for unsafe encoders, determinism."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from probekit.extract.batching import Item, plan_batches, plan_digest

RATE = 100


def _items(lengths):
    return [Item(row=i, id=f"id{i:03d}", length=n) for i, n in enumerate(lengths)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 500), min_size=1, max_size=60), st.floats(0.5, 10), st.booleans())
def test_plan_covers_every_item_once_and_respects_bounds(lengths, seconds, safe):
    items = _items(lengths)
    batches = plan_batches(items, RATE, seconds, pads_safely=safe)
    assert sorted(it.row for b in batches for it in b) == list(range(len(items)))
    for b in batches:
        longest = max(it.length for it in b)
        if len(b) > 1:
            assert len(b) * longest <= seconds * RATE
            if safe:
                assert longest <= 1.25 * min(it.length for it in b)
            else:
                assert len({it.length for it in b}) == 1


@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 300), min_size=1, max_size=40), st.randoms())
def test_plan_is_independent_of_manifest_order(lengths, rnd):
    items = _items(lengths)
    shuffled = items[:]
    rnd.shuffle(shuffled)
    a, b = plan_batches(items, RATE, 3.0), plan_batches(shuffled, RATE, 3.0)
    assert a == b and plan_digest(a) == plan_digest(b)


def test_batches_fill_up_to_the_bound():
    batches = plan_batches(_items([100] * 10), RATE, 4.0)
    assert [len(b) for b in batches] == [4, 4, 2]


def test_long_item_gets_its_own_batch_and_buckets_split():
    batches = plan_batches(_items([100, 110, 1000, 200]), RATE, 5.0)
    assert [[it.length for it in b] for b in batches] == [[100, 110], [200], [1000]]


def test_unsafe_encoder_groups_equal_lengths_only():
    items = _items([100, 101, 100, 101, 100])
    batches = plan_batches(items, RATE, 100.0, pads_safely=False)
    assert [[it.length for it in b] for b in batches] == [[100, 100, 100], [101, 101]]
    assert len(plan_batches(items, RATE, 100.0, pads_safely=True)) == 1


def test_digest_changes_with_the_plan():
    items = _items([random.Random(0).randint(1, 100) for _ in range(20)])
    assert plan_digest(plan_batches(items, RATE, 2.0)) != plan_digest(plan_batches(items, RATE, 3.0))


def test_batch_bound_counts_what_the_encoder_processes():
    """Padded Whisper processes a whole 30 s window for a 2 s clip: 120 s then holds 4 clips, not 60."""
    window = 30 * RATE
    items = [Item(row=i, id=f"id{i:03d}", length=2 * RATE + i, cost=window) for i in range(20)]
    batches = plan_batches(items, RATE, 120.0)
    assert [len(b) for b in batches] == [4] * 5
    # Without a cost, the same clips are bounded by their own length (and the 25 % buckets).
    assert max(len(b) for b in plan_batches([Item(it.row, it.id, it.length) for it in items], RATE, 120.0)) == 20
    # The cost is part of the plan's digest: a resumed run with another bound is refused.
    assert plan_digest(batches) != plan_digest([[Item(it.row, it.id, it.length) for it in b] for b in batches])

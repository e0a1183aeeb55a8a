"""Manifests the extraction benchmarks build from EmoDB's: copies of its clips under new ids."""

from __future__ import annotations

import csv
from pathlib import Path


def emodb_copies(emodb: Path, out: Path, copies: int, clips: int | None = None) -> Path:
    """Write to ``out`` a manifest of ``copies`` copies of EmoDB's rows (ids ``<id>-<k>``, absolute paths).

    ``clips``: take that many rows, evenly spaced through the manifest, instead of all of them.
    """
    with open(emodb, newline="") as fh:
        reader = csv.DictReader(fh)
        rows, fields = list(reader), reader.fieldnames or []
    if clips is not None:
        rows = rows[:: max(1, len(rows) // clips)][:clips]
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=fields)
        w.writeheader()
        for k in range(copies):
            for row in rows:
                w.writerow({**row, "id": f"{row['id']}-{k}", "path": str((emodb.parent / row["path"]).resolve())})
    return out

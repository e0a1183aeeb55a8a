"""docs/api.md's worked example runs as written: its Python blocks, in order, in a fresh folder."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def test_api_doc_example_runs(shared_dir, whisper_tiny, emodb_manifest, tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PROBEKIT_SHARED", str(shared_dir))
    scope: dict = {}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), scope)  # noqa: S102 - the documentation's own example
    out = capsys.readouterr().out
    assert "5 384 535" in out
    # The example's numbers are the reference run's: the middle hidden state wins.
    assert re.search(r"best hidden state [23]: UAR 0\.9", out), out
    assert len(scope["predictions"]) == 3 and os.path.isdir(scope["folder"])

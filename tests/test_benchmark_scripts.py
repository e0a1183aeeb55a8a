"""The GPU benchmark script runs end to end on a CPU in its --quick smoke mode (tiny configs)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow
SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "extract_gpu.py"


def test_extract_gpu_quick_on_cpu(tmp_path):
    spec = importlib.util.spec_from_file_location("extract_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = module.main(["--device", "cpu", "--quick", "--json", str(tmp_path / "rows.jsonl")])
    assert [(r["encoder"], r["whisper_mode"]) for r in rows] == [
        ("wav2vec2-quick", ""), ("hubert-quick", ""), ("whisper-quick", "padded"), ("whisper-quick", "fast"),
    ]
    for r in rows:
        assert r["segments"] == 12 and r["audio_seconds"] > 6
        assert r["audio_hours_per_gpu_hour"] > 0 and 0 < r["forward_share"] <= 1
        assert set(r["split_seconds"]) == {"decode", "features", "forward", "pooling", "writing", "other"}
        assert r["peak_gpu_mib"] is None and r["peak_host_mib"] > 0
    assert len((tmp_path / "rows.jsonl").read_text().splitlines()) == 4

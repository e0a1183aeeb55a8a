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


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.mark.parametrize("script", sorted(BENCHMARKS.glob("*.py")), ids=lambda p: p.stem)
def test_every_benchmark_imports_names_probekit_has(script):
    """Benchmarks import probekit's functions by name; a rename in the package must not leave one broken."""
    import ast
    import importlib.util

    missing = []
    for node in ast.walk(ast.parse(script.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("probekit"):
            module = importlib.import_module(node.module)
            missing += [f"{node.module}.{a.name} (line {node.lineno})" for a in node.names
                        if not hasattr(module, a.name) and importlib.util.find_spec(f"{node.module}.{a.name}") is None]
    assert not missing, missing


def test_sweep_speed_runs_on_a_small_cache(tmp_path):
    """The sweep benchmark end to end on a 600-row cache (one layer, binary; no whole sweep): both sides
    score the same cells, so its F1 columns are comparable."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(BENCHMARKS.parent)}
    cmd = [sys.executable, str(BENCHMARKS / "sweep_speed.py"), "--sizes", "600", "--tasks", "binary",
           "--sweep-task", "none", "--dir", str(tmp_path)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    row = next(line for line in out.stdout.splitlines() if line.startswith("| 600 | binary |"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    f1_probekit, f1_loop, diffs = float(cells[5]), float(cells[6]), cells[7]
    assert 0.5 < f1_probekit < 1 and 0.5 < f1_loop < 1
    assert float(diffs.split("/")[0]) < 5  # points: the two solvers of one objective agree on every cell

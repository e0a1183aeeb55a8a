"""Every benchmark script still runs against the current package: its probekit imports resolve, and each
one runs end to end in its smallest mode and prints the rows it claims, with sane values (never timings)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import numpy as np
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


def _run_script(name: str, *args: str, shared: Path | None = None, cwd: Path | None = None) -> str:
    """Run ``benchmarks/<name>.py args`` as a user does (this checkout first on the path); its stdout."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": str(BENCHMARKS.parent)}
    if shared is not None:
        env["PROBEKIT_SHARED"] = str(shared)
    out = subprocess.run([sys.executable, str(BENCHMARKS / f"{name}.py"), *args], env=env, capture_output=True, text=True,
                         timeout=600, cwd=cwd)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def _table(stdout: str, header_start: str) -> list[list[str]]:
    """The cells of the markdown table whose header line starts with ``header_start`` (separator row dropped)."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return rows


def test_sweep_oof_cost_runs_on_a_small_cache():
    """One logreg-fast sweep (4 C values, 5 outer x 3 inner speaker folds) on a 300-row cache; the split adds up."""
    out = _run_script("sweep_oof_cost", "--rows", "300", "--layers", "2", "--dim", "16")
    m = re.search(r"logreg-fast n=300 layers=2 dim=16: cells ([\d.]+) s, refit fits ([\d.]+) s, pooled metrics \+ bootstrap "
                  r"([\d.]+) s, tied sets \+ calibration ([\d.]+) s; after/before = ([\d.]+)", out)
    assert m, out
    assert all(float(v) >= 0 for v in m.groups())
    assert float(m.group(5)) >= 1  # after = before + the refit's extra steps, by construction


def test_truncation_saving_times_every_truncation(whisper_tiny):
    """Whisper tiny.en truncated after hidden states 1-3 of 4, the random 24-layer wav2vec2 after 6, 12 and 18."""
    out = _run_script("truncation_saving", "--whisper", str(whisper_tiny), "--clips", "1", "--seconds", "1", "--repeats", "1")
    rows = re.findall(r"^(.+?) +(\d+) of (\d+) +([\d.]+) +([\d.]+) +([\d.]+) +([\d.]+)$", out, re.M)
    got = [(r[0].split(" (")[0], int(r[1]), int(r[2])) for r in rows]  # "<model> K of N s/pass full ratio ideal"
    assert got == [("whisper-tiny.en", k, 4) for k in (1, 2, 3)] + [("random wav2vec2, 24 layers", k, 24) for k in (6, 12, 18)], out
    for r, (_, k, n) in zip(rows, got):
        seconds, full, ratio, ideal = map(float, r[3:])
        assert min(seconds, full, ratio) >= 0 and ideal == round(k / n, 2)


def test_whisper_fast_mode_on_a_few_emodb_clips(shared_dir, whisper_tiny, emodb_manifest):
    """Fast against padded mode on 30 EmoDB clips: a row per hidden state, fast-mode vectors close to padded ones
    (the first hidden state, before any attention, identical), leave-one-speaker-out UAR in range."""
    out = _run_script("whisper_fast_mode", "--limit", "30", shared=shared_dir)
    assert "EmoDB, whisper-tiny.en, 30 clips, 10 speakers" in out, out
    rows = _table(out, "| hidden state |")
    assert [int(r[0]) for r in rows] == [0, 1, 2, 3, 4], out
    cos_mean, cos_min, uar_padded, uar_fast = (np.array([float(r[k]) for r in rows]) for k in (1, 2, 3, 4))
    assert cos_min[0] > 0.9999 and (cos_min > 0.9).all() and (cos_mean >= cos_min).all()
    assert ((0 <= uar_padded) & (uar_padded <= 1) & (0 <= uar_fast) & (uar_fast <= 1)).all()
    assert uar_padded.max() > 1 / 7  # some hidden state beats chance on 7 emotions


def test_extract_throughput_agrees_with_the_plain_loop(shared_dir, whisper_tiny, emodb_manifest):
    """`extract_cache` and the plain one-clip-at-a-time loop on 4 EmoDB clips: the same vectors at every hidden state."""
    out = _run_script("extract_throughput", "--limit", "4", "--manifest", str(emodb_manifest), "--model", str(whisper_tiny))
    assert out.startswith("clips: 4 "), out
    assert re.search(r"speed-up: [\d.]+x", out), out
    cosines = re.findall(r"L(\d)=([\d.]+)", out.splitlines()[-1])
    assert [int(k) for k, _ in cosines] == [0, 1, 2, 3, 4], out
    assert all(float(c) > 0.9999 for _, c in cosines), out


def test_extract_host_profile_splits_a_small_run(shared_dir, whisper_tiny, emodb_manifest):
    """The stand-in forward on 8 EmoDB clips: the profile's stages and the host-side rate are printed."""
    out = _run_script("extract_host_profile", "--clips", "8", shared=shared_dir)
    stages = re.search(r"stages, s: (.*) \(other without the model load\)", out)
    assert stages, out
    split = {k: float(v) for k, v in (part.split() for part in stages.group(1).split(", "))}
    assert {"decode", "features", "forward", "pooling", "writing", "other"} <= set(split)
    m = re.search(r"(\d+) clips, (\d+) s of audio; .* stand-in forward .* host side [\d.]+ s = ([\d,]+) audio-s/s", out)
    assert m and int(m.group(1)) == 8 and int(m.group(2)) > 8 and int(m.group(3).replace(",", "")) > 0, out


def test_extract_host_against_its_baseline_commit(shared_dir, whisper_tiny, emodb_manifest):
    """This checkout against the older commit's code on 4 clips, the small wav2vec2 only: both write the same vectors."""
    import subprocess

    baseline = re.search(r'^BASELINE = "(\w+)"', (BENCHMARKS / "extract_host.py").read_text(), re.M).group(1)
    known = subprocess.run(["git", "-C", str(BENCHMARKS.parent), "cat-file", "-e", f"{baseline}^{{commit}}"], capture_output=True)
    if known.returncode != 0:
        pytest.skip(f"the baseline commit {baseline} is not in this clone (a shallow checkout?)")
    out = _run_script("extract_host", "--clips", "4", "--copies", "1", "--only", "wav2vec2", shared=shared_dir)
    assert re.search(r"wav2vec2 \(layer-norm.*\): 4 clips, \d+ s of audio", out), out
    rows = {r[0]: r[1:] for r in _table(out, f"| | baseline ({baseline})")}
    assert set(rows) == {"wall, s", "forward (timed by hooks), s", "model load, s", "host side, audio-s/s", "peak host memory, MiB"}
    assert all(float(v.replace(",", "")) >= 0 for cells in rows.values() for v in cells)
    worst = re.search(r"largest difference between the two caches, relative to the layer's largest value: (\S+)", out)
    assert worst and float(worst.group(1)) < 1e-4, out


def test_probe_speed_on_a_small_cache(tmp_path):
    """Fast against plain logreg on a 600-row planted cache, binary, all 5 folds both sides: same F1 within points."""
    out = _run_script("probe_speed", "--sizes", "600", "--generators", "planted", "--tasks", "binary", "--probes", "logreg",
                      "--dir", str(tmp_path))
    rows = _table(out, "| generator | segments |")
    assert [r[:4] for r in rows] == [["planted", "600", "binary", "logreg"]], out
    f1_fast, f1_plain, diff, folds = float(rows[0][7]), float(rows[0][8]), float(rows[0][9]), rows[0][10]
    assert 0.5 < f1_fast < 1 and 0.5 < f1_plain < 1 and abs(diff) < 5 and folds == "5"
    assert list(tmp_path.glob("plain/*.npz")), "the plain run's probabilities are kept for --reuse-plain"


def test_long_call_on_a_half_minute_call(tmp_path, shared_dir, whisper_tiny, emodb_manifest):
    """Exports trained on 30 EmoDB clips, a 30 s two-channel call, each path once: every path's row, today's path
    scoring every window, and the lean padded path giving today's probabilities on the windows both scored."""
    out = _run_script("long_call", "--clips", "30", "--minutes", "0.5", "--repeats", "1", "--work", str(tmp_path),
                      "--manifest", str(emodb_manifest), "--whisper", str(whisper_tiny), cwd=tmp_path)
    speed = {r[0]: r for r in _table(out, "| path | windows scored |")}
    assert list(speed) == ["today (padded, every window)", "padded exact (VAD + lean batch)", "fast-mode export (VAD)",
                           "padded export --fast (VAD)"], out
    scored = {k: tuple(int(x) for x in r[1].split(" of ")) for k, r in speed.items()}
    windows = scored["today (padded, every window)"][1]
    assert 5 <= windows <= 11 and scored["today (padded, every window)"][0] == windows  # about 30 s in 3 s windows, no VAD
    assert all(0 < s <= w == windows for s, w in scored.values())
    diff = re.search(r"padded exact vs today on the (\d+) windows both scored: max abs probability difference (\S+)", out)
    assert diff and int(diff.group(1)) > 0 and float(diff.group(2)) < 1e-3, out
    accuracy = _table(out, "| path | anger |")
    assert len(accuracy) == 4 and all(0 <= float(r[-1]) <= 1 and 0 <= float(r[-2]) <= 1 for r in accuracy)
    assert float(accuracy[1][-2]) == 1.0 and float(accuracy[1][-1]) == 0.0  # padded exact against itself
    assert not list(tmp_path.glob("*.wav")), "the call's audio is removed after scoring"


def test_emodb_layer_selection_gives_the_reference_figures(tmp_path, emodb_whisper_cache, emodb_manifest):
    """The README's EmoDB run end to end on the real cache: per hidden state the 7-class LOSO UAR of the shared
    reference (0.77, 0.86, 0.91, 0.90, 0.88) within 2 points, the layer-weighted probe, calibration, the report."""
    out = _run_script("emodb_layer_selection", str(emodb_whisper_cache), "--manifest", str(emodb_manifest),
                      "--out", str(tmp_path / "run"))
    uar = {int(m.group(1)): float(m.group(2)) for m in re.finditer(r"logreg\s+layer\s+(\d)\s+UAR ([\d.]+)", out)}
    assert sorted(uar) == [0, 1, 2, 3, 4], out
    for layer, ref in enumerate((0.77, 0.86, 0.91, 0.90, 0.88)):
        assert abs(uar[layer] - ref) < 0.02, (layer, uar[layer])
    assert re.search(r"logreg\s+layer\s+2\s+UAR .* best", out), out
    weights = [float(w) for w in re.search(r"layer-weights: UAR [\d.]+, weights (.*)", out).group(1).split(", ")]
    assert len(weights) == 5 and abs(sum(weights) - 1) < 0.01
    ece = re.findall(r"(temperature|isotonic)\s*: ECE ([\d.]+) -> ([\d.]+); ROC-AUC ([\d.]+) -> ([\d.]+)", out)
    assert [e[0] for e in ece] == ["temperature", "isotonic"], out
    assert all(0 <= float(v) <= 1 for e in ece for v in e[1:]) and all(float(e[3]) > 0.8 for e in ece)
    assert (tmp_path / "run" / "report.html").is_file() and (tmp_path / "run" / "stats" / "stats.json").is_file()

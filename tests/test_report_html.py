"""``probekit report``: one self-contained HTML page, checked as text and rendered in a real headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread
from typer.testing import CliRunner

from probekit.cli import app
from probekit.probe.probing import ProbeConfig, run_probe
from probekit.probe.tasks import TaskSpec
from probekit.report.html import ReportError, html_report, load_run, write_html_report
from tests._synth import synth_cache

# The curve colours of the first three probes (tab10): logreg, layer-weights, and the second run's.
BLUE, ORANGE = (0x1F, 0x77, 0xB4), (0xFF, 0x7F, 0x0E)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A multiclass run over two caches of different depth and a binary run, each with logreg and layer-weights."""
    root = tmp_path_factory.mktemp("report")
    deep = synth_cache(root / "deep.h5", signal_layer=3, n_layers=7, n_speakers=8, per_speaker=15)
    shallow = synth_cache(root / "shallow.h5", signal_layer=1, n_layers=3, n_speakers=8, per_speaker=15, strength=1.5)
    probes = ("logreg", "layer-weights")
    run_probe(ProbeConfig(caches=(str(deep), str(shallow)), task=TaskSpec("multiclass", "label"), probes=probes, folds=4, bootstrap=100, out=str(root / "mc")))
    run_probe(ProbeConfig(caches=(str(deep),), task=TaskSpec("binary", "labels", positive="negative"), probes=probes, folds=4, bootstrap=100, out=str(root / "bin")))
    stats = {"source": "manifest.csv", "target": "label", "segments": 120, "speakers": 8, "total_hours": 0.1,
             "durations": {"min": 1.0, "median": 2.0, "mean": 2.0, "max": 3.0},
             "labels": [{"label": "anger", "segments": 40, "share": 1 / 3, "speakers": 8, "mean_duration": 2.0}]}
    (root / "mc" / "stats.json").write_text(json.dumps(stats))
    return {"mc": root / "mc", "bin": root / "bin", "root": root}


def test_page_is_self_contained_and_shows_every_section(runs):
    page = html_report([load_run(runs["mc"]), load_run(runs["bin"])])
    # No fetch of anything: no scripts, no src/href/url() pointing outside the page (SVG namespaces are names, not fetches).
    assert "<script" not in page
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', page) and "url(http" not in page and "@import" not in page
    for section in ("Layer curves", "Tied layers", "Layer weights", "Best layer", "Calibration", "Dataset", "Protocol"):
        assert f"{section}</h2>" in page, section
    assert page.count("<svg") >= 4  # curves, layer weights, confusion matrices, reliability
    assert "Holm-corrected" in page and "relative depth" in page
    assert "120 segments, 8 speakers" in page  # stats.json found beside results.json
    assert "fingerprint" in page and "speaker-kfold" in page
    assert "ECE" in page
    # The probe output folders carry the same two figures as PNGs beside the layer curve.
    assert (runs["mc"] / "layer_weights.png").is_file() and (runs["bin"] / "reliability.png").is_file()
    assert not (runs["mc"] / "reliability.png").exists()  # multiclass: no calibration figure


def test_cli_writes_the_page_and_names_a_folder_without_results(runs, tmp_path):
    out = tmp_path / "r.html"
    res = CliRunner().invoke(app, ["report", str(runs["mc"]), str(runs["bin"]), "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert out.is_file() and "wrote" in res.output
    bad = CliRunner().invoke(app, ["report", str(tmp_path), "--out", str(out)])
    assert bad.exit_code != 0 and "no results.json" in bad.output
    with pytest.raises(ReportError):
        html_report([])


def _chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def _near(img: np.ndarray, rgb: tuple[int, int, int], tol: float = 0.06) -> int:
    target = np.array(rgb) / 255.0
    return int((np.abs(img[..., :3] - target) < tol).all(-1).sum())


def test_page_renders_in_headless_chromium_and_shows_the_curves(runs, tmp_path):
    browser = _chromium()
    if browser is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("Chromium is missing under CI: .ci/run installs it (apt-get install chromium)")
        pytest.skip("no Chromium on this machine (Debian: apt-get install chromium); CI installs it")
    page = write_html_report([runs["mc"], runs["bin"]], tmp_path / "report.html")
    shot = tmp_path / "shot.png"
    # An unreachable proxy: anything the page tried to fetch would fail, so the render proves it needs no network.
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--proxy-server=127.0.0.1:9",
           f"--user-data-dir={tmp_path / 'profile'}", "--window-size=1280,900", f"--screenshot={shot}", page.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.is_file(), proc.stderr[-2000:]
    img = imread(shot)
    assert img.shape[0] == 900 and img.shape[1] == 1280
    assert img[..., :3].std() > 0.05  # not a blank page
    # The curves are the first figure: both probes' colours must be on screen, in the figure's area.
    assert _near(img, BLUE) > 300 and _near(img, ORANGE) > 300
    top = img[:120]
    assert _near(top, BLUE) == 0  # above the figure there is only the title and text


def test_a_results_file_of_an_older_probekit_still_renders_and_says_what_it_lacks(tmp_path):
    golden = Path(__file__).parent / "golden" / "results_v1.json"
    page = write_html_report([golden], tmp_path / "old.html").read_text()
    assert "No tied sets in this results.json" in page and "Layer curves</h2>" in page

"""`probekit extract` and `probekit merge` through CliRunner, with a fake encoder module."""

from __future__ import annotations

import sys
import types

import numpy as np
import pytest
import soundfile as sf
from fake_encoder import FakeEncoder, write_corpus
from typer.testing import CliRunner

import probekit
from probekit.cache import EmbeddingCache
from probekit.cli import app

runner = CliRunner()


@pytest.fixture()
def fake_encoders(monkeypatch):
    """Replace probekit.extract.encoders by a module whose load_encoder builds the fake encoder."""

    from probekit.extract.encoders import EncoderError, EncoderSpec  # the real ones: only loading is faked

    loaded = []

    def load_encoder(spec):
        if spec.model == "no/such-model":
            raise EncoderError("no/such-model: not found on the hub")
        loaded.append(spec)
        return FakeEncoder(name=spec.model, revision=spec.revision or "")

    module = types.ModuleType("probekit.extract.encoders")
    module.EncoderSpec, module.load_encoder, module.loaded = EncoderSpec, load_encoder, loaded
    module.EncoderError = EncoderError
    monkeypatch.setitem(sys.modules, "probekit.extract.encoders", module)
    # `from probekit.extract import encoders` reads the package attribute first, once the real module was imported.
    monkeypatch.setattr(probekit, "encoders", module, raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.delenv("RANK", raising=False)
    return module


def _run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_extract_two_models_then_rerun(tmp_path, fake_encoders):
    manifest = write_corpus(tmp_path / "data", n=8)
    out = tmp_path / "caches"
    res = _run("extract", manifest, "--model", "org/a", "--model", "org/b", "--out", out, "--dtype", "float32", "-q")
    assert res.exit_code == 0, res.output
    for slug in ("org--a", "org--b"):
        c = EmbeddingCache(out / f"{slug}.h5")
        assert (len(c), c.num_layers, c.dim) == (8, 3, 4) and c.attrs["dtype"] == "float32"
        assert f"{out / slug}.h5: 8 segments x 3 layers x 4 dims" in res.output
    assert [s.model for s in fake_encoders.loaded] == ["org/a", "org/b"]
    again = _run("extract", manifest, "--model", "org/a", "--out", out, "--dtype", "float32", "-q")
    assert again.exit_code == 0 and "already up to date" in again.output
    assert len(fake_encoders.loaded) == 2  # nothing loaded for a finished cache


def test_default_out_folder_and_mean_std(tmp_path, fake_encoders, monkeypatch):
    manifest = write_corpus(tmp_path / "data", n=5, name="emo.csv")
    monkeypatch.chdir(tmp_path)
    res = _run("extract", manifest, "--model", "org/a", "--pooling", "mean+std", "-q")
    assert res.exit_code == 0, res.output
    assert EmbeddingCache(tmp_path / "cache" / "emo" / "org--a.h5").dim == 8


def test_conflicting_pooling_is_a_clear_error(tmp_path, fake_encoders):
    manifest = write_corpus(tmp_path / "data", n=4)
    assert _run("extract", manifest, "-m", "org/a", "--out", tmp_path, "-q").exit_code == 0
    res = _run("extract", manifest, "-m", "org/a", "--out", tmp_path, "--pooling", "mean+std", "-q")
    assert res.exit_code == 2 and "pooling" in res.output and "Traceback" not in res.output


def test_bad_rows_exit_nonzero_unless_skip_bad(tmp_path, fake_encoders):
    manifest = write_corpus(tmp_path / "data", n=4)
    sf.write(tmp_path / "data" / "quiet.wav", np.zeros(8000, np.float32), 16000)
    with open(manifest, "a") as fh:
        fh.write("q,quiet.wav,s9,anger,train\n")
    res = _run("extract", manifest, "-m", "org/a", "--out", tmp_path, "-q")
    assert res.exit_code == 1
    assert "line 6, id q: silent" in res.output and "--skip-bad" in res.output
    assert EmbeddingCache(tmp_path / "org--a.h5").skipped[0]["id"] == "q"
    res = _run("extract", manifest, "-m", "org/a", "--out", tmp_path, "-q", "--skip-bad")
    assert res.exit_code == 0 and "1 row(s) skipped" in res.output


def test_bad_manifest_and_bad_options(tmp_path, fake_encoders):
    manifest = write_corpus(tmp_path / "data", n=3)
    text = manifest.read_text().replace("wav/c01.wav", "wav/missing.wav")
    manifest.write_text(text)
    res = _run("extract", manifest, "-m", "org/a", "--out", tmp_path)
    assert res.exit_code == 2 and "line 3, id c01: audio file not found" in res.output and "No model was loaded" in res.output and "Traceback" not in res.output
    assert fake_encoders.loaded == []
    manifest.write_text(text.replace("wav/missing.wav", "wav/c01.wav"))
    res = _run("extract", manifest, "-m", "no/such-model", "--out", tmp_path)
    assert res.exit_code == 2 and "not found on the hub" in res.output and "Traceback" not in res.output
    for opt, value in (("--pooling", "max"), ("--dtype", "int8"), ("--shard", "3/3"), ("--whisper-mode", "x"), ("--batch-seconds", "0")):
        res = _run("extract", manifest, "-m", "org/a", opt, value)
        assert res.exit_code == 2 and opt in res.output, (opt, res.output)


def test_shards_via_option_and_torchrun_env_then_merge(tmp_path, fake_encoders, monkeypatch):
    manifest = write_corpus(tmp_path / "data", n=7)
    out = tmp_path / "c"
    assert _run("extract", manifest, "-m", "org/a", "--out", out, "--shard", "0/2", "--dtype", "float32", "-q").exit_code == 0
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert _run("extract", manifest, "-m", "org/a", "--out", out, "--dtype", "float32", "-q").exit_code == 0
    shards = [out / "org--a.shard-0-of-2.h5", out / "org--a.shard-1-of-2.h5"]
    assert [len(EmbeddingCache(p)) for p in shards] == [4, 3]
    res = _run("merge", *shards, "--out", out / "org--a.h5")
    assert res.exit_code == 0 and "7 segments" in res.output, res.output
    monkeypatch.delenv("RANK")
    monkeypatch.delenv("WORLD_SIZE")
    full = tmp_path / "full"
    assert _run("extract", manifest, "-m", "org/a", "--out", full, "--dtype", "float32", "-q").exit_code == 0
    a, b = EmbeddingCache(out / "org--a.h5"), EmbeddingCache(full / "org--a.h5")
    assert list(a.ids) == list(b.ids)
    for layer in range(a.num_layers):
        np.testing.assert_array_equal(a.read_layer(layer), b.read_layer(layer))
    res = _run("merge", shards[0], "--out", out / "x.h5")
    assert res.exit_code == 2 and "missing shard(s) 1/2" in res.output


def test_progress_bar_reports_audio_seconds_per_second(tmp_path, fake_encoders):
    manifest = write_corpus(tmp_path / "data", n=4)
    res = _run("extract", manifest, "-m", "org/a", "--out", tmp_path)
    assert res.exit_code == 0 and "audio-s/s" in res.output and "ETA" in res.output, res.output


def test_folder_manifest_merge_globs_and_ctrl_c(tmp_path, fake_encoders):
    manifest = write_corpus(tmp_path / "data", n=4)
    # A folder stands for its manifest.csv.
    res = _run("extract", manifest.parent, "-m", "org/a", "--out", tmp_path / "c", "--shard", "0/2", "-q")
    assert res.exit_code == 0, res.output
    assert _run("extract", manifest.parent, "-m", "org/a", "--out", tmp_path / "c", "--shard", "1/2", "-q").exit_code == 0
    empty = tmp_path / "empty"
    empty.mkdir()
    res = _run("extract", empty, "-m", "org/a")
    assert res.exit_code == 2 and "no manifest.csv in it" in res.output
    # Lock files are out of a shard glob's reach, and merge takes only the .h5 files it is given.
    matched = sorted((tmp_path / "c").glob("*.shard-*"))
    assert matched and all(p.suffix == ".h5" for p in matched)
    (tmp_path / "c" / "org--a.shard-0-of-2.h5.partial").mkdir()  # as while a shard is still running
    res = _run("merge", *sorted((tmp_path / "c").glob("*.shard-*")), "--out", tmp_path / "c" / "all.h5")
    assert res.exit_code == 0 and "4 segments" in res.output and "ignoring 1 path" in res.output, res.output


def test_ctrl_c_says_what_was_kept_and_how_to_resume(tmp_path, fake_encoders, monkeypatch):
    from probekit.extract import _extract

    manifest = write_corpus(tmp_path / "data", n=8)
    original = _extract._encode_batch
    calls = []

    def interrupt_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(_extract, "_encode_batch", interrupt_second)
    res = _run("extract", manifest, "-m", "org/a", "--out", tmp_path / "c", "--batch-seconds", "1", "-q")
    assert res.exit_code == 130, res.output
    assert "interrupted: 1 finished batch(es) kept in" in res.output and "run the same command to resume" in res.output
    monkeypatch.setattr(_extract, "_encode_batch", original)
    res = _run("extract", manifest, "-m", "org/a", "--out", tmp_path / "c", "--batch-seconds", "1", "-q")
    assert res.exit_code == 0 and "1 resumed" in res.output, res.output

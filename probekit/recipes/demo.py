"""The Quickstart's synthetic demo corpus: speech made on this machine, for a fresh machine without EmoDB.

NOT EMOTION. It lets Quickstart command 1 run the whole pipeline (real Whisper tiny.en, every layer, speaker-independent
probes) on a machine that has nothing but the package registries. The eSpeak NG formant synthesiser (GPL-3.0-or-later),
shipped with its voice data by the PyPI wheel ``espeakng-loader``, speaks it at run time; nothing is downloaded.

A known answer, like the synthetic caches in ``tests/``: the speakers are eight eSpeak NG voices (:data:`VOICES`), each
with its own base pitch, pitch range, rate and level drawn from the seed; the classes (``label``) are seven prosody
settings relative to that base (:data:`STYLES`) with a small per-utterance jitter, so that no class is a single point;
every speaker says the same :data:`SENTENCES` in every class, as in EmoDB, so text never gives the class away.
``labels`` adds the stand-in tags ``negative`` (lower, slower, softer) and ``high_arousal`` (higher, faster, louder)
only so that the Quickstart recipe's steps, written for EmoDB's columns, run unchanged; they say nothing about emotion.

:func:`write_demo_corpus` makes ``manifest.csv`` (``id,path,speaker,label,labels``, paths relative to the folder),
``wav/<id>.wav`` (16 kHz mono 16-bit PCM) and ``README.txt``, byte-identical from run to run for a fixed seed and
eSpeak NG build.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from probekit.errors import ProbekitError
from probekit.recipes.defaults import label_tags, write_quickstart_manifest

#: Bumped whenever the plan or the rendering changes, so a stale corpus in ``cache/`` is never reused.
DEMO_VERSION = 1
SAMPLE_RATE = 16_000
ESPEAK_PACKAGE_PIP = "espeakng-loader==0.2.4"

#: Speaker id -> eSpeak NG voice (language file + voice variant). Eight speakers, so leave-one-speaker-out has 8 folds.
VOICES: dict[str, str] = {
    "spk01": "en-us+m1",
    "spk02": "en-us+f1",
    "spk03": "en+m3",
    "spk04": "en+f2",
    "spk05": "en-GB-x-rp+m5",
    "spk06": "en-029+f4",
    "spk07": "en-GB-scotland+m2",
    "spk08": "en-US-nyc+f3",
}


@dataclass(frozen=True)
class Style:
    """A prosody class relative to the speaker's base: ``pitch`` in eSpeak pitch units (0-100 scale), ``rate`` as a
    factor on words per minute, ``gain_db`` in dB on the utterance level."""

    pitch: float = 0.0
    rate: float = 1.0
    gain_db: float = 0.0


#: label -> prosody setting. Differences are a few times the per-utterance jitter: clear, not trivial.
STYLES: dict[str, Style] = {
    "plain": Style(),
    "higher": Style(pitch=+24),
    "lower": Style(pitch=-24),
    "faster": Style(rate=1.5),
    "slower": Style(rate=0.65),
    "louder": Style(gain_db=+9),
    "softer": Style(gain_db=-12),
}
SUBDUED = frozenset({"lower", "slower", "softer"})
RAISED = frozenset({"higher", "faster", "louder"})

#: Neutral everyday sentences (written for this corpus), each 2-3 s at a normal rate.
SENTENCES: tuple[str, ...] = (
    "The parcel arrived on Tuesday, a day later than the tracking page said.",
    "Please leave the spare key under the blue flower pot by the back door.",
    "We moved the weekly meeting to the small room on the second floor.",
    "The bus to the station leaves every twenty minutes until midnight.",
    "She wrote the numbers on a card and pinned it above the desk.",
    "Our neighbours painted their fence green over the long weekend.",
    "Turn left after the bakery and the library is on your right.",
    "He keeps the old maps in a wooden box beside the window.",
)

# Per-utterance jitter (one standard deviation) around the speaker's base and the class setting.
_JITTER_PITCH = 3.0
_JITTER_RATE = 0.05
_JITTER_GAIN_DB = 1.5
_BASE_LEVEL_DBFS = -30.0  # RMS of a plain utterance at the speaker's level

DEMO_NOTICE = "== SYNTHETIC DEMO, NOT EMOTION ==\n" + textwrap.fill(
    "No EmoDB was found (--data, $PROBEKIT_DATA, <shared>/data/emodb), so this run uses speech made on this machine "
    f"by eSpeak NG: {len(VOICES)} synthetic voices as speakers x {len(STYLES)} prosody settings "
    f"({', '.join(STYLES)}) as the 'label' classes x {len(SENTENCES)} sentences "
    f"({len(VOICES) * len(STYLES) * len(SENTENCES)} clips). It shows the pipeline working end to end: real Whisper "
    "tiny.en, every layer, leave-one-speaker-out probes. Its tables measure how well each layer tells pitch, rate and "
    "loudness apart; they say nothing about emotion. The 'negative' tag marks the lower/slower/softer settings only "
    "so that the recipe's binary step has a target. For the real job: --data EMODB_FOLDER or PROBEKIT_DATA=EMODB_FOLDER.",
    width=116,
)


class DemoError(ProbekitError, RuntimeError):
    """The demo corpus cannot be made here; the message says what to install or pass instead."""


@dataclass(frozen=True)
class Utterance:
    """One planned row: what to say, in which voice, with which eSpeak settings and level.

    ``pitch`` and ``pitch_range``: eSpeak units (0-100); ``rate``: words per minute; ``level_dbfs``: target RMS in dB
    relative to full scale; ``noise_seed``: the synthesiser's noise generator.
    """

    id: str
    speaker: str
    voice: str
    text: str
    label: str
    pitch: int
    pitch_range: int
    rate: int
    level_dbfs: float
    noise_seed: int

    @property
    def tags(self) -> str:
        """The ``labels`` cell: the class, then the stand-in tags (see the module docstring)."""
        return label_tags(self.label, SUBDUED, RAISED)


def demo_plan(seed: int = 0) -> list[Utterance]:
    """Every row of the corpus, decided by ``seed`` alone (no synthesis): speakers x styles x sentences."""
    rng = np.random.default_rng(seed)
    plan = []
    for speaker, voice in VOICES.items():
        base_pitch = rng.uniform(42, 58)
        base_range = rng.uniform(40, 70)
        base_rate = rng.uniform(160, 180)
        base_level = _BASE_LEVEL_DBFS + rng.uniform(-2, 2)
        for label, style in STYLES.items():
            for t, text in enumerate(SENTENCES):
                pitch = base_pitch + style.pitch + rng.normal(0, _JITTER_PITCH)
                rate = base_rate * style.rate * (1 + rng.normal(0, _JITTER_RATE))
                level = base_level + style.gain_db + rng.normal(0, _JITTER_GAIN_DB)
                plan.append(Utterance(
                    id=f"{speaker}_t{t + 1:02d}_{label}", speaker=speaker, voice=voice, text=text, label=label,
                    pitch=int(np.clip(round(pitch), 0, 100)), pitch_range=int(round(base_range)),
                    rate=int(np.clip(round(rate), 80, 450)), level_dbfs=round(float(level), 2),
                    noise_seed=int(rng.integers(1, 2**31 - 1)),
                ))
    return plan


def corpus_key(seed: int = 0) -> str:
    """Folder name of the corpus for ``seed``: changes whenever the plan or the synthesiser's version does."""
    return f"quickstart-demo-v{DEMO_VERSION}-espeakng{_espeak_version()}-seed{seed}"


def write_demo_corpus(folder: str | Path, seed: int = 0) -> Path:
    """Make the corpus in ``folder`` (once: a finished folder is reused) and return its ``manifest.csv``.

    Synthesis runs in a fresh child process (``python -m probekit.recipes.demo SEED FOLDER``): eSpeak NG keeps state
    between utterances inside one process, and a fresh process is what makes the files byte-identical from run to
    run. The folder appears whole or not at all.
    Raises :class:`DemoError` when ``espeakng-loader`` is not installed or synthesis fails.
    """
    folder = Path(folder)
    manifest = folder / "manifest.csv"
    if manifest.is_file():
        return manifest
    _espeak_paths()  # fail before making anything when the synthesiser is missing
    folder.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        # A child process, not multiprocessing: spawn would re-run the caller's __main__, which may be any script.
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(__file__).resolve().parents[2]),
                                                                          os.environ.get("PYTHONPATH")]))}
        child = subprocess.run([sys.executable, "-m", "probekit.recipes.demo", str(seed), str(work)], env=env,
                               capture_output=True, text=True)
        if child.returncode != 0 or not (work / "manifest.csv").is_file():
            tail = (child.stderr.strip().splitlines() or ["no message"])[-1]
            raise DemoError(f"eSpeak NG could not render the demo corpus ({tail}); "
                            "pass --data with EmoDB or your own manifest instead")
        try:
            work.rename(folder)
        except OSError:
            if not manifest.is_file():  # not a concurrent run that finished first
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return manifest


# ----------------------------------------------------------------------------- synthesis (runs in the child process)


def _espeak_paths() -> tuple[str, str]:
    """(shared library, data folder) shipped by the ``espeakng-loader`` wheel."""
    try:
        import espeakng_loader
    except ImportError as exc:
        raise DemoError(
            f"The synthetic demo needs the eSpeak NG speech synthesiser from PyPI: pip install {ESPEAK_PACKAGE_PIP} "
            "(the Quickstart script installs it), or pass --data with EmoDB or your own manifest."
        ) from exc
    return espeakng_loader.get_library_path(), espeakng_loader.get_data_path()


def _espeak_version() -> str:
    try:
        return version("espeakng-loader")
    except PackageNotFoundError:
        return "missing"


class _Espeak:
    """The few eSpeak NG C calls the corpus needs, in synchronous mode (samples come back through a callback)."""

    _RATE, _VOLUME, _PITCH, _RANGE = 1, 2, 3, 4  # espeak_PARAMETER
    _SYNCHRONOUS = 2  # espeak_AUDIO_OUTPUT: no audio device, no thread
    _UTF8 = 1  # espeakCHARS_UTF8
    _POS_CHARACTER = 1

    def __init__(self) -> None:
        import ctypes

        lib_path, data_path = _espeak_paths()
        self._lib = ctypes.CDLL(lib_path)
        self._lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        self._lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        self._lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        self._lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
        self._lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                                           ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
        self.sample_rate = self._lib.espeak_Initialize(self._SYNCHRONOUS, 0, data_path.encode(), 0)
        if self.sample_rate <= 0:
            raise DemoError(f"eSpeak NG did not start with its data folder {data_path}")
        self._chunks: list[np.ndarray] = []
        callback_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)

        def collect(samples, n, _events) -> int:
            if n > 0 and samples:
                self._chunks.append(np.ctypeslib.as_array(samples, shape=(n,)).copy())
            return 0

        self._callback = callback_type(collect)  # kept on self: the C side holds only a raw pointer
        self._lib.espeak_SetSynthCallback(self._callback)

    def say(self, u: Utterance) -> np.ndarray:
        """``u.text`` spoken with ``u``'s voice and settings: int16 samples at :attr:`sample_rate`."""
        if self._lib.espeak_SetVoiceByName(u.voice.encode()) != 0:
            raise DemoError(f"eSpeak NG has no voice {u.voice!r}")
        for parameter, value in ((self._RATE, u.rate), (self._VOLUME, 100), (self._PITCH, u.pitch),
                                 (self._RANGE, u.pitch_range)):
            self._lib.espeak_SetParameter(parameter, int(value), 0)
        # The synthesiser draws noise (breath, frication) from a generator that is seeded from the clock by default.
        self._lib.espeak_ng_SetRandSeed(u.noise_seed)
        text = u.text.encode()
        self._chunks.clear()
        status = self._lib.espeak_Synth(text, len(text) + 1, 0, self._POS_CHARACTER, 0, self._UTF8, None, None)
        self._lib.espeak_Synchronize()
        if status != 0 or not self._chunks:
            raise DemoError(f"eSpeak NG failed on {u.id} (status {status})")
        return np.concatenate(self._chunks)


def _render_corpus(seed: int, folder: str) -> None:
    """Child-process entry: speak every planned row into ``folder``/wav and write the manifest last."""
    import soundfile as sf
    import soxr

    out = Path(folder)
    (out / "wav").mkdir(parents=True, exist_ok=True)
    engine = _Espeak()
    rows = []
    for u in demo_plan(seed):
        audio = engine.say(u).astype(np.float64) / 32768.0
        audio = soxr.resample(audio, engine.sample_rate, SAMPLE_RATE)
        rms = math.sqrt(float(np.mean(audio**2)))
        audio *= 10 ** (u.level_dbfs / 20) / rms
        # The loudest settings must not clip: clipping would add a distortion cue that no other class has.
        peak = float(np.abs(audio).max())
        if peak > 0.98:
            audio *= 0.98 / peak
        rel = f"wav/{u.id}.wav"
        sf.write(out / rel, audio.astype(np.float32), SAMPLE_RATE, subtype="PCM_16")
        rows.append({"id": u.id, "path": rel, "speaker": u.speaker, "label": u.label, "labels": u.tags})
    (out / "README.txt").write_text(DEMO_NOTICE + "\n\nMade by probekit.recipes.demo (seed "
                                    f"{seed}, version {DEMO_VERSION}); see that module's docstring.\n")
    write_quickstart_manifest(rows, out / "manifest.csv")


if __name__ == "__main__":
    _render_corpus(int(sys.argv[1]), sys.argv[2])

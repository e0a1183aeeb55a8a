"""Recipes: a study written down as plain TOML, checked without running, and run step by step.

The schema (tables, keys, variables) is documented in docs/recipes.md; each table parses into a frozen dataclass
below. ``run_recipe`` runs extract -> probe -> sweep into one output folder and skips a step whose output is finished.
"""

from __future__ import annotations

import csv
import json
import os
import re
import tomllib
from dataclasses import asdict, dataclass, field, replace
from itertools import takewhile
from pathlib import Path
from typing import Callable

from probekit.choices import Calibration, ClassWeight, DType, Pooling, Protocol, TaskKind, WhisperMode
from probekit.errors import ProbekitError
from probekit.identity import file_sha256
from probekit.probe.probes import PROBES, probe_params
from probekit.probe.probing import ProbeConfig
from probekit.probe.store import stable_hash
from probekit.probe.sweep import SweepSpec
from probekit.probe.tasks import TaskSpec
from probekit.recipes import defaults
from probekit.recipes._typed import check_keys, typed_fields
from probekit.recipes.sweepfile import sweep_spec_from_table

DEFAULT = "default:quickstart"
REQUIRED_COLUMNS = ("id", "path", "speaker")
VARIABLES = ("PROBEKIT_DATA", "PROBEKIT_MODELS", "PROBEKIT_SHARED")


class RecipeError(ProbekitError, ValueError):
    """A recipe is invalid or cannot run; ``problems`` lists every issue found, each naming the key to fix."""

    def __init__(self, source: str | Path, problems: list[str]):
        self.problems = list(problems)
        super().__init__(f"{source}:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class EncoderEntry:
    """An ``[[encoders]]`` table: ``model`` (hub id, folder or ``default:quickstart``), ``revision``, ``whisper_mode``."""

    model: str
    revision: str | None = None
    whisper_mode: WhisperMode = WhisperMode.padded.value


@dataclass(frozen=True)
class ExtractEntry:
    """The ``[extract]`` table: ``pooling``, ``dtype`` (storage), ``batch_seconds``."""

    pooling: Pooling = Pooling.mean.value
    dtype: DType = DType.float16.value
    batch_seconds: float = 120.0


@dataclass(frozen=True)
class ProbeStep:
    """A ``[[probes]]`` step: the fields of :class:`~probekit.probe.probing.ProbeConfig` a recipe sets, plus
    ``[probes.params.<probe>]`` tables (``params``: ``(("logreg.C", 0.5), ...)``)."""

    name: str
    task: TaskKind
    target: str
    positive: str | None = None
    labels: tuple[str, ...] | None = None
    min_support: int = 1
    probes: tuple[str, ...] = ("logreg",)
    exact: bool = False
    layers: tuple[int, ...] | None = None
    cv: Protocol = Protocol.speaker_kfold.value
    folds: int = 5
    seed: int = 0
    class_weight: ClassWeight | None = None
    tune_thresholds: bool = False
    calibrate: Calibration | None = None
    bootstrap: int = 1000
    jobs: int = 1
    params: tuple[tuple[str, object], ...] = ()

    def config(self, caches: list[Path], manifest: Path, out: Path) -> ProbeConfig:
        """The :class:`ProbeConfig` of this step over ``caches``, labelled by the recipe's ``manifest``."""
        return ProbeConfig(
            caches=tuple(str(c) for c in caches), task=TaskSpec(str(self.task), self.target, self.positive, self.labels, self.min_support),
            probes=self.probes, exact=self.exact, params=self.params, layers=self.layers, cv=str(self.cv), folds=self.folds,
            seed=self.seed, jobs=self.jobs, manifest=str(manifest), out=str(out), class_weight=self.class_weight,
            tune_thresholds=self.tune_thresholds, calibrate=self.calibrate, bootstrap=self.bootstrap,
        )


@dataclass(frozen=True)
class SweepStep:
    """A ``[[sweeps]]`` step: its name and the :class:`~probekit.probe.sweep.SweepSpec` (grid from ``[sweeps.grid]``,
    random-search ranges from ``[sweeps.range]``)."""

    name: str
    spec: SweepSpec


@dataclass(frozen=True)
class Recipe:
    """A parsed, checked recipe: every table typed (:class:`EncoderEntry`, :class:`ExtractEntry`,
    :class:`ProbeStep`, :class:`SweepStep`)."""

    path: Path
    name: str
    description: str
    manifest: str
    default_data: str | None
    columns: tuple[str, ...]
    vocabulary: dict[str, tuple[str, ...]]
    encoders: tuple[EncoderEntry, ...]
    extract: ExtractEntry
    probes: tuple[ProbeStep, ...]
    sweeps: tuple[SweepStep, ...] = ()
    commands: tuple[str, ...] = ()


# ----------------------------------------------------------------------------- loading and validation


def _commands(text: str) -> tuple[str, ...]:
    return tuple(line.lstrip("#").strip() for line in takewhile(lambda line: line.startswith("#"), text.splitlines()))


def _probe_step(i: int, p: dict, columns: set[str], vocab: dict, problems: list[str]) -> ProbeStep | None:
    where = f"[[probes]] #{i + 1}" + (f" ({p['name']})" if "name" in p else "")
    before = len(problems)
    fields = typed_fields(ProbeStep, {**p, "name": p.get("name", f"probe{i + 1}")}, where, problems, skip=("params",))
    known = {name: set(probe_params(name)) for name in PROBES}  # probe -> its constructor parameters
    _check_target(where, p, columns, vocab, problems)
    chosen = fields.get("probes", ("logreg",))
    if not chosen:
        problems.append(f"{where}: probes must be a non-empty list of {', '.join(known)}")
    for name in chosen:
        if name not in known:
            problems.append(f"{where}: unknown probe '{name}'; use one of {', '.join(known)}")
    for key, low in (("folds", 2), ("jobs", 1)):
        if fields.get(key, low) < low:
            problems.append(f"{where}: {key} must be an integer >= {low}")
    params = p.get("params", {})
    pairs: list[tuple[str, object]] = []
    if not isinstance(params, dict):
        problems.append(f"{where}: params must be a table of [probes.params.<probe>] tables")
        params = {}
    for probe, values in params.items():
        if probe not in chosen:
            problems.append(f"{where}: params.{probe} is for a probe this step does not run ({', '.join(chosen)})")
            continue
        if not isinstance(values, dict):
            problems.append(f"{where}: params.{probe} must be a table NAME = VALUE")
            continue
        for key, value in values.items():
            if key not in known.get(probe, set()):
                problems.append(f"{where}: probe '{probe}' has no parameter '{key}' (it takes {', '.join(sorted(known[probe]))})")
            pairs.append((f"{probe}.{key}", value))
    if len(problems) > before:
        return None
    return ProbeStep(**fields, params=tuple(pairs))


def _check_target(where: str, t: dict, columns: set[str], vocab: dict, problems: list[str]) -> None:
    target = t.get("target")
    if not isinstance(target, str) or not target:
        problems.append(f"{where}: target (a label column) is required")
        return
    if target not in columns:
        problems.append(f"{where}: target column '{target}' is not among the manifest columns [data] columns = {sorted(columns)}")
    if t.get("task") == "binary" and not t.get("positive"):
        problems.append(f"{where}: a binary task needs positive = LABEL")
    known = vocab.get(target)
    if known:
        for label in [t.get("positive")] + list(t.get("labels") or []):
            if label and label not in known:
                problems.append(f"{where}: label '{label}' is not in [data.vocabulary] {target} = {list(known)}")


def _sweep_step(i: int, s: dict, columns: set[str], vocab: dict, problems: list[str]) -> SweepStep | None:
    where = f"[[sweeps]] #{i + 1}" + (f" ({s['name']})" if "name" in s else "")
    _check_target(where, s, columns, vocab, problems)
    spec = sweep_spec_from_table({k: v for k, v in s.items() if k != "name"}, where, problems, extra=("name",))
    return SweepStep(str(s.get("name") or f"sweep{i + 1}"), spec) if spec is not None else None


def parse_recipe(path: str | Path) -> Recipe:
    """Load and check a recipe file (what is checked: docs/recipes.md); raise :class:`RecipeError` listing every
    problem at once."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except OSError as exc:
        raise RecipeError(path, [f"cannot read the recipe ({exc})"]) from exc
    except tomllib.TOMLDecodeError as exc:
        raise RecipeError(path, [f"not valid TOML ({exc})"]) from exc
    problems: list[str] = []
    commands = _commands(text)
    if not any("probekit run" in c for c in commands):
        problems.append("the first lines must be comments giving the exact command, e.g. '# probekit run " + str(path) + "'")
    check_keys("top level", data, {"recipe", "data", "encoders", "extract", "probes", "sweeps"}, problems)
    # [recipe] and [data] are checked here; the other tables against their dataclasses' fields (typed_fields).

    head = check_keys("[recipe]", data.get("recipe", {}), {"name", "description"}, problems)
    for key in ("name", "description"):
        if not isinstance(head.get(key), str) or not head.get(key):
            problems.append(f"[recipe] {key} is required")

    dat = check_keys("[data]", data.get("data", {}), {"manifest", "default_data", "columns", "vocabulary"}, problems)
    if not isinstance(dat.get("manifest"), str):
        problems.append("[data] manifest is required (a path, may use ${PROBEKIT_DATA})")
    for name in re.findall(r"\$\{([^}]*)\}", str(dat.get("manifest", "")) + str(dat.get("default_data", ""))):
        if name not in VARIABLES:
            problems.append(f"[data]: unknown variable ${{{name}}}; use {', '.join(VARIABLES)}")
    columns = dat.get("columns", [])
    if not isinstance(columns, list) or not columns:
        problems.append("[data] columns must list the manifest's columns (id, path, speaker and the label columns)")
        columns = []
    for req in REQUIRED_COLUMNS:
        if columns and req not in columns:
            problems.append(f"[data] columns must include '{req}'")
    vocab_raw = dat.get("vocabulary", {})
    vocab: dict[str, tuple[str, ...]] = {}
    if isinstance(vocab_raw, dict):
        for col, labels in vocab_raw.items():
            if col not in columns:
                problems.append(f"[data.vocabulary] {col}: not a declared column")
            vocab[col] = tuple(labels) if isinstance(labels, list) else ()
    colset = set(columns)

    encoders = []
    raw_enc = data.get("encoders", [])
    if not isinstance(raw_enc, list) or not raw_enc:
        problems.append("at least one [[encoders]] table is required")
        raw_enc = []
    for i, e in enumerate(raw_enc):
        fields = typed_fields(EncoderEntry, e, f"[[encoders]] #{i + 1}", problems)
        if "model" in fields and fields["model"]:
            encoders.append(EncoderEntry(**{**fields, "revision": fields.get("revision") or None}))

    # typed_fields keeps only well-typed values, so the entry can be built even when a problem was found.
    extract = ExtractEntry(**typed_fields(ExtractEntry, data.get("extract", {}), "[extract]", problems))
    if extract.batch_seconds <= 0:
        problems.append("[extract] batch_seconds must be a positive number")

    probes: list[ProbeStep] = []
    sweeps: list[SweepStep] = []
    names_seen: set[str] = set()
    for kind, build, out in (("probes", _probe_step, probes), ("sweeps", _sweep_step, sweeps)):
        raw = data.get(kind, [])
        if not isinstance(raw, list):
            problems.append(f"{kind} must be [[{kind}]] tables")
            continue
        for i, table in enumerate(raw):
            if not isinstance(table, dict):
                problems.append(f"[[{kind}]] #{i + 1} must be a table")
                continue
            # An unnamed step is named by its kind and position, as its builder names it.
            name = table.get("name") or f"{kind[:-1]}{i + 1}"
            if name in names_seen:
                problems.append(f"[[{kind}]] #{i + 1}: name '{name}' is used twice (it names the output folder)")
            names_seen.add(name)
            step = build(i, table, colset, vocab, problems)
            if step is not None:
                out.append(step)
    if not probes and not sweeps:
        problems.append("a recipe needs at least one [[probes]] or [[sweeps]] step")
    if problems:
        raise RecipeError(path, problems)
    return Recipe(
        path=path, name=head["name"], description=head["description"], manifest=dat["manifest"],
        default_data=dat.get("default_data"), columns=tuple(columns), vocabulary=vocab, encoders=tuple(encoders),
        extract=extract, probes=tuple(probes), sweeps=tuple(sweeps), commands=commands,
    )


# ----------------------------------------------------------------------------- resolving paths


def _variables(recipe: Recipe, data: str | Path | None) -> dict[str, str | None]:
    shared = os.environ.get("PROBEKIT_SHARED") or (str(defaults.shared_dir()) if defaults.shared_dir() else None)
    models = os.environ.get("PROBEKIT_MODELS") or (str(Path(shared) / "models") if shared else None)
    values: dict[str, str | None] = {"PROBEKIT_SHARED": shared, "PROBEKIT_MODELS": models}
    data = str(data) if data is not None else os.environ.get("PROBEKIT_DATA")
    if not data and recipe.default_data:
        data = _expand(recipe.default_data, values, "[data] default_data")
    values["PROBEKIT_DATA"] = data or None
    return values


_HINTS = {
    "PROBEKIT_DATA": "pass --data FOLDER or set PROBEKIT_DATA",
    "PROBEKIT_MODELS": "set PROBEKIT_MODELS to the folder holding the model folders",
    "PROBEKIT_SHARED": "set PROBEKIT_SHARED or put the shared assets at ../shared",
}


def _expand(template: str, values: dict[str, str | None], what: str) -> str:
    def sub(match: re.Match) -> str:
        name = match.group(1)
        if values.get(name) is None:
            raise RecipeError(what, [f"${{{name}}} is not set: {_HINTS.get(name, 'set it')}"])
        return str(values[name])

    return re.sub(r"\$\{([^}]*)\}", sub, template)


def _quickstart_default(recipe: Recipe, resolve: Callable[..., tuple[Path, str]], *args) -> Path:
    """``default:quickstart`` resolved by :mod:`probekit.recipes.defaults`; its error names this recipe."""
    try:
        return resolve(*args)[0]
    except defaults.DefaultsError as exc:
        raise RecipeError(recipe.path, [str(exc)]) from exc


def resolve_manifest(recipe: Recipe, data: str | Path | None = None) -> Path:
    """The manifest the recipe runs on. ``data`` (the ``--data`` flag) may be a manifest file or a data folder."""
    if recipe.manifest == DEFAULT:
        return _quickstart_default(recipe, defaults.resolve_manifest, data)
    if data is not None and Path(data).is_file():
        return Path(data)
    path = Path(_expand(recipe.manifest, _variables(recipe, data), str(recipe.path)))
    return path if path.is_absolute() else defaults.repo_root() / path


def resolve_model(recipe: Recipe, entry: EncoderEntry) -> str:
    """The model reference to load: a hub id stays as written; variables and ``default:quickstart`` are resolved."""
    if entry.model == DEFAULT:
        return str(_quickstart_default(recipe, defaults.resolve_model))
    if "${" not in entry.model:
        return entry.model
    return _expand(entry.model, _variables(recipe, None), str(recipe.path))


def manifest_header(path: Path) -> list[str]:
    """Column names of a CSV/TSV (first line) or JSONL (first record's keys) manifest."""
    with path.open(newline="", encoding="utf-8") as fh:
        if path.suffix == ".jsonl":
            first = fh.readline()
            return list(json.loads(first)) if first.strip() else []
        dialect = "excel-tab" if path.suffix == ".tsv" else "excel"
        return next(csv.reader(fh, dialect=dialect), [])


def validate_recipe(path: str | Path, data: str | Path | None = None) -> Recipe:
    """:func:`parse_recipe`, then, when the recipe's manifest can be found, check its header has every declared column.

    A manifest that cannot be resolved (private data, no ``--data``) is not an error here: the recipe documents it.
    """
    recipe = parse_recipe(path)
    try:
        manifest = resolve_manifest(recipe, data)
    except RecipeError:
        return recipe
    if manifest.is_file():
        header = set(manifest_header(manifest))
        missing = [c for c in recipe.columns if c not in header]
        if missing:
            raise RecipeError(path, [f"manifest {manifest} lacks column(s) {', '.join(missing)} that the recipe declares "
                                     f"in [data] columns; it has {', '.join(sorted(header))}"])
    return recipe


# ----------------------------------------------------------------------------- running


@dataclass
class StepResult:
    """One step of a run: ``kind`` extract|probe|sweep, ``status`` ran|skipped, ``path`` its output; ``skipped_rows``:
    manifest rows an extraction could not encode."""

    kind: str
    name: str
    status: str
    path: Path
    skipped_rows: int = 0


@dataclass
class RunReport:
    recipe: Recipe
    manifest: Path
    out: Path
    steps: list[StepResult] = field(default_factory=list)


def step_hash(settings: dict, fingerprints: list[str]) -> str:
    """Hash of a probe/sweep step: its settings (the labelling manifest's content hash among them) and the
    fingerprints of the caches it reads."""
    return stable_hash({"settings": settings, "caches": fingerprints})


def _stamp_matches(folder: Path, digest: str) -> bool:
    try:
        stamp = json.loads((folder / "recipe_step.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    return (folder / "results.json").is_file() and stamp.get("hash") == digest


def _extract_step(manifest: Path, model: str, entry: EncoderEntry, extract: ExtractEntry, cache_path: Path, progress: bool,
                  say: Callable[[str], None]) -> StepResult:
    """Reuse the cache only when extraction would write exactly it (:func:`cache_differences`: manifest audio, model,
    revision, Whisper mode, pooling, dtype); a cache made otherwise is this run's own stale output and is recomputed."""
    from probekit.extract._extract import cache_differences, extract_cache
    from probekit.extract.encoders import EncoderSpec

    spec = EncoderSpec(model=model, revision=entry.revision, whisper_mode=str(entry.whisper_mode))
    name = Path(model).name
    differences = cache_differences(cache_path, manifest, spec, str(extract.pooling), str(extract.dtype))
    if differences == []:
        say(f"extract {model}: finished cache {cache_path} matches, skipped")
        return StepResult("extract", name, "skipped", cache_path)
    if differences:
        say(f"extract {model}: {cache_path} was made differently ({'; '.join(differences)}); recomputing it")
        cache_path.unlink()
    else:
        say(f"extract {model} -> {cache_path}")
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    result = extract_cache(manifest, spec, cache_path, pooling=str(extract.pooling), dtype=str(extract.dtype),
                           batch_seconds=float(extract.batch_seconds), progress=progress)
    # Bad rows are recorded in the cache; a recipe carries on like `probekit extract --skip-bad`.
    return StepResult("extract", name, "ran", cache_path, len(result.skipped))


def run_recipe(
    path: str | Path,
    data: str | Path | None = None,
    out: str | Path | None = None,
    model: str | None = None,
    progress: bool = True,
    echo: Callable[[str], None] | None = None,
) -> RunReport:
    """Run a recipe: extract every encoder's cache, then every probe and sweep step; skip what is finished.

    ``data``: a manifest file or data folder (``--data``); ``model``: replaces every ``[[encoders]]`` model (the
    Quickstart's ``--model``); ``out``: output folder (default ``runs/<recipe name>``; its layout: docs/recipes.md).
    A probe or sweep step is skipped only when its folder holds the stamp of the same :func:`step_hash`.
    """
    from probekit.cache import EmbeddingCache
    from probekit.extract._extract import model_slug
    from probekit.probe.probing import run_probe
    from probekit.probe.sweep import run_sweep, write_outputs

    say = echo or (lambda _msg: None)
    recipe = validate_recipe(path, data)
    manifest = resolve_manifest(recipe, data)
    if not manifest.is_file():
        raise RecipeError(recipe.path, [f"manifest {manifest} does not exist: pass --data FOLDER_OR_MANIFEST or set PROBEKIT_DATA"])
    out = Path(out) if out else Path("runs") / recipe.name
    report = RunReport(recipe=recipe, manifest=manifest, out=out)
    encoders = recipe.encoders if model is None else (EncoderEntry(model=model, whisper_mode=recipe.encoders[0].whisper_mode),)

    caches: list[Path] = []
    for entry in encoders:
        ref = resolve_model(recipe, entry)
        # A local folder is named by its folder name, a hub id by its slug (never by the unexpanded template).
        cache_path = out / "cache" / f"{Path(ref).name if Path(ref).is_dir() else model_slug(ref)}.h5"
        caches.append(cache_path)
        report.steps.append(_extract_step(manifest, ref, entry, recipe.extract, cache_path, progress, say))

    fingerprints = [EmbeddingCache(c).fingerprint for c in caches]
    labels_sha = file_sha256(manifest)
    for kind, steps in (("probe", recipe.probes), ("sweep", recipe.sweeps)):
        for step in steps:
            folder = out / kind / step.name
            settings = {"kind": kind, "step": asdict(step), "manifest": str(manifest), "manifest_sha256": labels_sha}
            digest = step_hash(settings, fingerprints)
            if _stamp_matches(folder, digest):
                report.steps.append(StepResult(kind, step.name, "skipped", folder))
                say(f"{kind} {step.name}: finished ({folder}), skipped")
                continue
            say(f"{kind} {step.name} -> {folder}")
            folder.mkdir(parents=True, exist_ok=True)
            (folder / "recipe_step.json").unlink(missing_ok=True)  # the step is unfinished until its stamp is rewritten
            if kind == "probe":
                run_probe(step.config(caches, manifest, folder))
            else:
                write_outputs(run_sweep(caches, replace(step.spec, manifest=str(manifest)), folder), folder)
            stamp = {"hash": digest, "settings": settings}
            (folder / "recipe_step.json").write_text(json.dumps(stamp, indent=2, default=str) + "\n")
            report.steps.append(StepResult(kind, step.name, "ran", folder))
    return report


"""Safe export of a fitted probe, and safe loading of it back, with no pickle anywhere.

An export is a folder of ``manifest.json`` (every other file's sha256 and size), ``config.json``,
``weights.safetensors`` and, for LightGBM, ``lgbm_<j>.txt``; docs/predict.md lists their content.
Loading reads only these files, through parsers that cannot run code (``json``, ``safetensors``,
LightGBM's text parser), refuses any file the manifest does not list or whose size or sha256 differs,
and checks every tensor's shape against the config.
"""

from __future__ import annotations

from probekit.errors import ProbekitError

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from scipy.special import expit, softmax  # what sklearn's probabilities use: no overflow for large scores
from sklearn.base import clone

from probekit import __version__
from probekit.cache import EmbeddingCache
from probekit.identity import file_sha256
from probekit.probe.calibration import fit_inner
from probekit.probe.evaluate import EvalProtocol, Prepared, evaluate_layer, layer_row, prepare, read_X
from probekit.probe.params import resolve_params
from probekit.probe.probes import fit_probe, make_probe
from probekit.probe.probes.fast_lgbm import FittedTrees, PartFeatures, Projection
from probekit.probe.tasks import TaskSpec
from probekit.results import load_results, strict_json

FORMAT = "probekit-scorer"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CONFIG = "config.json"
WEIGHTS = "weights.safetensors"
_MAX_JSON_BYTES = 16 * 2**20
# The hidden-layer activations of scikit-learn's MLP, by the name it stores in ``activation``.
_ACTIVATIONS = {"identity": lambda h: h, "logistic": expit, "tanh": np.tanh, "relu": lambda h: np.maximum(h, 0)}


class ExportError(ProbekitError, RuntimeError):
    """An export folder is missing, tampered with, truncated or of an unknown format. The message names the file."""


# --------------------------------------------------------------------------------------------- heads
@dataclass(frozen=True)
class Part:
    """One output head: a standardiser ``mean``/``scale`` ``(dim,)`` then either ``layers`` (``(W (in, out),
    b (out,))`` pairs; one pair for a linear model), a LightGBM ``booster`` text, or a ``constant``
    probability (a multi-label label that had a single class in training)."""

    mean: np.ndarray
    scale: np.ndarray
    layers: tuple = ()
    booster: str | None = None
    constant: float | None = None
    _cache: list = field(default_factory=list, compare=False, repr=False)

    def raw(self, x: np.ndarray, activation: str) -> np.ndarray:
        """``(n, k)`` logits; for a booster or a constant, probabilities."""
        if self.constant is not None:
            return np.full((len(x), 1), self.constant)
        z = (x - self.mean) / self.scale
        if self.booster is not None:
            if not self._cache:
                import lightgbm as lgb

                self._cache.append(lgb.Booster(model_str=self.booster))
            return np.asarray(self._cache[0].predict(z), dtype=np.float64).reshape(len(z), -1)
        h = z
        for i, (w, b) in enumerate(self.layers):
            h = h @ w + b
            if i < len(self.layers) - 1:
                h = _ACTIVATIONS[activation](h)
        return h


@dataclass(frozen=True)
class Head:
    """The scoring function of one fitted probe, as plain arrays.

    ``kind``: ``"linear"``, ``"mlp"`` or ``"lgbm"``. ``output``: ``"softmax"`` (multi-class: one part giving
    every class) or ``"sigmoid"`` (binary: one part; multi-label: one independent part per label).
    """

    kind: str
    # Also "sigmoid_joint" (multi-label: one part, a sigmoid per output unit) and, read from older exports
    # only, "ovr" (multi-class: a sigmoid per class, normalised to sum to one).
    output: str
    n_outputs: int
    dim: int
    parts: tuple[Part, ...]
    activation: str = "relu"
    # The fast LightGBM probe's features (raw columns and a PCA, in float32 as the probe computed them), which
    # every part's trees read instead of the embedding; None for every other probe.
    features: PartFeatures | None = None

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """``x``: ``(n, dim)`` pooled embeddings -> ``(n, n_outputs)`` probabilities (float64)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected embeddings of shape (n, {self.dim}), got {x.shape}")
        if self.features is not None:
            # float32 exactly as the probe fed its trees: float64 arithmetic could move a value across a split.
            x = self.features.transform(x.astype(np.float32)).astype(np.float64)
        if self.output == "softmax":
            raw = self.parts[0].raw(x, self.activation)
            return raw if self.kind == "lgbm" else softmax(raw, axis=1)
        if self.output == "sigmoid_joint":
            return expit(self.parts[0].raw(x, self.activation))
        if self.output == "ovr":
            s = expit(self.parts[0].raw(x, self.activation))
            return s / s.sum(axis=1, keepdims=True)
        cols = []
        for part in self.parts:
            raw = part.raw(x, self.activation)
            if part.constant is not None or part.booster is not None:
                cols.append(raw[:, -1])
            elif raw.shape[1] == 2:
                cols.append(softmax(raw, axis=1)[:, 1])
            else:
                cols.append(expit(raw[:, 0]))
        return np.stack(cols, axis=1)


# ---------------------------------------------------------------------- fitted estimator -> Head
def _unwrap(est):
    """``(scaler or None, final classifier)`` through Pipelines and probe wrappers (``estimator_``, ...)."""
    from sklearn.pipeline import Pipeline

    if isinstance(est, Pipeline):
        scaler = None
        for _, step in est.steps[:-1]:
            if hasattr(step, "mean_") and hasattr(step, "scale_"):
                if scaler is not None:
                    raise ExportError("cannot export a pipeline with two standardisers")
                scaler = step
            elif step not in (None, "passthrough"):
                raise ExportError(f"cannot export pipeline step {type(step).__name__}: only a standardiser and a classifier are supported")
        inner_scaler, final = _unwrap(est.steps[-1][1])
        if scaler is not None and inner_scaler is not None:
            raise ExportError("cannot export a pipeline with two standardisers")
        return scaler or inner_scaler, final
    for attr in ("estimator_", "model_"):
        inner = getattr(est, attr, None)
        if inner is not None and inner is not est and not isinstance(inner, (list, tuple, float)):
            return _unwrap(inner)
    return None, est


def _scaler_arrays(scaler, dim: int) -> tuple[np.ndarray, np.ndarray]:
    if scaler is None:
        return np.zeros(dim), np.ones(dim)
    mean = getattr(scaler, "mean_", None)
    scale = getattr(scaler, "scale_", None)
    return (np.zeros(dim) if mean is None else np.asarray(mean, np.float64),
            np.ones(dim) if scale is None else np.asarray(scale, np.float64))


def _part(est, dim: int) -> tuple[str | None, Part, str]:
    """One fitted binary or multi-class (pipeline of) classifier -> (kind, Part, activation)."""
    if isinstance(est, (float, int, np.floating)):  # probekit stores a constant rate for a one-class label
        return None, Part(np.zeros(dim), np.ones(dim), constant=float(est)), "relu"
    if type(est).__name__ == "_ConstantPredictor":  # sklearn's one-vs-rest, for a label with one class in training
        return None, Part(np.zeros(dim), np.ones(dim), constant=float(np.ravel(est.y_)[0])), "relu"
    scaler, final = _unwrap(est)
    mean, scale = _scaler_arrays(scaler, dim)
    if hasattr(final, "booster_"):
        return "lgbm", Part(mean, scale, booster=final.booster_.model_to_string()), "relu"
    if hasattr(final, "coefs_") and hasattr(final, "intercepts_"):
        act = getattr(final, "activation", "relu")
        if act not in _ACTIVATIONS:
            raise ExportError(f"cannot export MLP activation {act!r}")
        pairs = tuple((np.asarray(w, np.float64), np.asarray(b, np.float64)) for w, b in zip(final.coefs_, final.intercepts_))
        return "mlp", Part(mean, scale, layers=pairs), act
    if hasattr(final, "coef_") and hasattr(final, "intercept_"):
        pair = (np.asarray(final.coef_, np.float64).T.copy(), np.atleast_1d(np.asarray(final.intercept_, np.float64)))
        return "linear", Part(mean, scale, layers=(pair,)), "relu"
    raise ExportError(f"cannot export a {type(final).__name__}: only logistic regression, MLP and LightGBM probes are supported")


def head_from_estimator(est, task: str, n_labels: int, dim: int) -> Head:
    """Read a fitted probe's internals into a :class:`Head`.

    ``task``: ``binary`` | ``multiclass`` | ``multilabel``; ``n_labels``: output columns (1 for binary).
    Handles a Pipeline(StandardScaler, clf), probekit probes (``estimator_`` / per-label ``estimators_``),
    and sklearn one-vs-rest ensembles behind a shared standardiser.
    """
    trees = getattr(est, "model_", None)
    if isinstance(trees, FittedTrees):
        return _head_from_trees(trees, task, n_labels, dim)
    if task == "multilabel":
        scaler, final = _unwrap(est)
        subs = getattr(final, "estimators_", None) if getattr(est, "estimators_", None) is None else est.estimators_
        if subs is None:
            # One model with a sigmoid output per label (probekit's MLP fits all labels at once).
            kind, part, act = _part(est, dim)
            width = part.layers[-1][1].shape[0] if part.layers else 0
            if kind not in ("linear", "mlp") or width != n_labels or getattr(final, "out_activation_", "logistic") != "logistic":
                raise ExportError(f"a multi-label probe must hold one estimator per label (estimators_) or one model with "
                                  f"{n_labels} sigmoid outputs; got {type(final).__name__}")
            return Head(kind, "sigmoid_joint", n_labels, dim, (part,), act)
        subs = list(subs)
        if len(subs) != n_labels:
            raise ExportError(f"multi-label probe has {len(subs)} heads for {n_labels} labels")
        found = [_part(sub, dim) for sub in subs]
        if scaler is not None:  # a shared standardiser in front of a one-vs-rest ensemble
            mean, scale = _scaler_arrays(scaler, dim)
            found = [(k, p if p.constant is not None else Part(mean, scale, p.layers, p.booster), a) for k, p, a in found]
        kinds = {k for k, _, _ in found if k is not None}
        if len(kinds) > 1:
            raise ExportError(f"mixed head kinds {sorted(kinds)}")
        kind = kinds.pop() if kinds else "linear"
        act = next((a for k, _, a in found if k is not None), "relu")
        return Head(kind, "sigmoid", n_labels, dim, tuple(p for _, p, _ in found), act)
    kind, part, act = _part(est, dim)
    if kind is None:
        raise ExportError("a binary or multi-class probe cannot be a constant")
    return Head(kind, "sigmoid" if task == "binary" else "softmax", n_labels, dim, (part,), act)


def _head_from_trees(trees: FittedTrees, task: str, n_labels: int, dim: int) -> Head:
    """The fast LightGBM probe: its feature map, then one booster (binary, multi-class) or one per label."""
    width = trees.features.n_raw + trees.features.pca_dims
    plain = (np.zeros(width), np.ones(width))
    parts = []
    for b in trees.boosters:
        if isinstance(b, float):
            parts.append(Part(*plain, constant=float(b)))
        else:
            # Only the rounds the probe predicts with (its early-stopping round).
            parts.append(Part(*plain, booster=b.model_to_string(num_iteration=b.best_iteration or None)))
    output = "softmax" if trees.objective == "multiclass" else "sigmoid"
    if (task == "multilabel") != trees.multilabel or (task == "multilabel" and len(parts) != n_labels):
        raise ExportError(f"a fast LightGBM probe with {len(parts)} booster(s) does not fit a {task} task with {n_labels} output(s)")
    return Head("lgbm", output, n_labels, dim, tuple(parts), features=trees.features)


# --------------------------------------------------------------------------------- write and read
def _tensors(head: Head) -> dict[str, np.ndarray]:
    out = {}
    if head.features is not None:
        f = head.features
        out["features.columns"] = np.asarray(f.columns, np.float64)
        if f.proj is not None:
            out["features.pca.weight"], out["features.pca.offset"] = f.proj.weight, f.proj.offset
    for j, part in enumerate(head.parts):
        if part.constant is not None:
            continue
        out[f"head{j}.scaler.mean"], out[f"head{j}.scaler.scale"] = part.mean, part.scale
        for i, (w, b) in enumerate(part.layers):
            out[f"head{j}.layer{i}.weight"], out[f"head{j}.layer{i}.bias"] = w, b
    return {k: np.ascontiguousarray(v, dtype=np.float64) for k, v in out.items()}


def save_export(out_dir: str | Path, head: Head, config: Mapping) -> Path:
    """Write ``head`` and ``config`` (task, labels, thresholds, encoder, cache, metrics) into ``out_dir``.

    The folder must be empty or absent, so that a stale file can never sit beside a new manifest.
    """
    from safetensors.numpy import save_file

    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise ExportError(f"{out}: folder is not empty; choose a new --out folder")
    out.mkdir(parents=True, exist_ok=True)
    tensors = _tensors(head)
    parts = []
    for j, p in enumerate(head.parts):
        if p.constant is not None:
            parts.append({"type": "constant", "value": p.constant})
        elif p.booster is not None:
            parts.append({"type": "lgbm", "file": f"lgbm_{j}.txt"})
        else:
            parts.append({"type": "layers", "depth": len(p.layers)})
    cfg = strict_json(dict(config))  # NaN (an undefined metric) is written as null, so the file is strict JSON
    cfg["head"] = {"kind": head.kind, "output": head.output, "n_outputs": head.n_outputs, "dim": head.dim,
                   "activation": head.activation, "parts": parts,
                   "features": None if head.features is None else {"raw_columns": head.features.n_raw, "pca_dims": head.features.pca_dims},
                   "tensors": {k: list(v.shape) for k, v in tensors.items()}}
    boosters = [(p["file"], head.parts[j].booster) for j, p in enumerate(parts) if p["type"] == "lgbm"]
    files = [CONFIG, WEIGHTS, *(name for name, _ in boosters)]
    (out / CONFIG).write_text(json.dumps(cfg, indent=2, sort_keys=True, default=_jsonable) + "\n", encoding="utf-8")
    save_file(tensors, str(out / WEIGHTS), metadata={"format": FORMAT})
    for name, text in boosters:
        (out / name).write_text(text, encoding="utf-8")
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "files": {name: {"sha256": file_sha256(out / name), "bytes": (out / name).stat().st_size} for name in files},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out


def _jsonable(value):
    # strict_json has made numpy scalars Python's, and the head section holds Python numbers only: a Path is left.
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def _read_json(path: Path) -> dict:
    if path.stat().st_size > _MAX_JSON_BYTES:
        raise ExportError(f"{path}: implausibly large ({path.stat().st_size} bytes)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ExportError(f"{path}: expected a JSON object")
    return data


def verify_export(model_dir: str | Path) -> dict:
    """Check the folder against its manifest; return the manifest. Raises :class:`ExportError` naming the bad file."""
    root = Path(model_dir)
    if not root.is_dir():
        raise ExportError(f"{root}: not a folder (expected a `probekit export` output folder)")
    mpath = root / MANIFEST
    if not mpath.is_file():
        raise ExportError(f"{mpath}: missing; this is not a probekit export")
    manifest = _read_json(mpath)
    if manifest.get("format") != FORMAT:
        raise ExportError(f"{mpath}: format {manifest.get('format')!r} is not {FORMAT!r}")
    version = manifest.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise ExportError(f"{mpath}: unknown format_version {version!r} (this probekit reads 1..{FORMAT_VERSION}); upgrade probekit")
    files = manifest.get("files")
    if not isinstance(files, dict) or CONFIG not in files or WEIGHTS not in files:
        raise ExportError(f"{mpath}: 'files' must list {CONFIG} and {WEIGHTS}")
    present = {p.name for p in root.iterdir()}
    for extra in sorted(present - set(files) - {MANIFEST}):
        raise ExportError(f"{root / extra}: file not listed in {MANIFEST}; refusing a folder with unexpected content")
    for name, entry in files.items():
        if not isinstance(name, str) or "/" in name or "\\" in name or name.startswith(".") or not isinstance(entry, dict):
            raise ExportError(f"{mpath}: bad entry {name!r}")
        path = root / name
        if path.is_symlink() or not path.is_file():
            raise ExportError(f"{path}: listed in {MANIFEST} but missing (or not a plain file)")
        size = path.stat().st_size
        if size != entry.get("bytes"):
            raise ExportError(f"{path}: {size} bytes, manifest says {entry.get('bytes')} (truncated or modified)")
        if file_sha256(path) != entry.get("sha256"):
            raise ExportError(f"{path}: sha256 does not match {MANIFEST} (the file was modified)")
    return manifest


def load_export(model_dir: str | Path) -> tuple[dict, Head]:
    """Verify and read an export: ``(config, head)``. Never unpickles, evals or imports anything from the folder."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    root = Path(model_dir)
    listed = set(verify_export(root)["files"])
    cfg = _read_json(root / CONFIG)
    bad = f"{root / CONFIG}"
    spec = cfg.get("head")
    if not isinstance(spec, dict):
        raise ExportError(f"{bad}: missing 'head' section")
    kind, output, act = spec.get("kind"), spec.get("output"), spec.get("activation")
    if kind not in ("linear", "mlp", "lgbm") or output not in ("sigmoid", "softmax", "sigmoid_joint", "ovr") or act not in _ACTIVATIONS:
        raise ExportError(f"{bad}: unknown head kind/output/activation {kind!r}/{output!r}/{act!r}")
    try:
        tensors = load_file(str(root / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ExportError(f"{root / WEIGHTS}: not a valid safetensors file ({exc})") from exc
    expected = {k: tuple(v) for k, v in (spec.get("tensors") or {}).items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected != got:
        raise ExportError(f"{root / WEIGHTS}: tensors {got} do not match the shapes in {CONFIG} {expected}")
    for k, v in tensors.items():
        if v.dtype != np.float64 or not np.all(np.isfinite(v)):
            raise ExportError(f"{root / WEIGHTS}: tensor {k} is not finite float64")
    dim = spec.get("dim")
    enc_dim = (cfg.get("encoder") or {}).get("dim", dim)
    if not isinstance(dim, int) or dim != enc_dim:
        raise ExportError(f"{bad}: head dim {dim!r} does not match the encoder dim {enc_dim!r}")
    labels, n_out = cfg.get("labels"), spec.get("n_outputs")
    if not isinstance(labels, list) or len(labels) != n_out:
        raise ExportError(f"{bad}: {n_out} outputs but labels {labels!r}")
    features = _read_features(spec.get("features"), tensors, dim, kind, root)
    width = dim if features is None else features.n_raw + features.pca_dims
    specs = spec.get("parts")
    want_parts = 1 if output in ("softmax", "sigmoid_joint", "ovr") or n_out == 1 else n_out
    if not isinstance(specs, list) or len(specs) != want_parts:
        raise ExportError(f"{bad}: {len(specs) if isinstance(specs, list) else specs!r} head parts, expected {want_parts}")
    parts = []
    for j, ps in enumerate(specs):
        t = ps.get("type") if isinstance(ps, dict) else None
        if t == "constant":
            value = ps.get("value")
            if not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise ExportError(f"{bad}: part {j} constant {value!r} is not a probability")
            parts.append(Part(np.zeros(width), np.ones(width), constant=float(value)))
            continue
        mean, scale = tensors.get(f"head{j}.scaler.mean"), tensors.get(f"head{j}.scaler.scale")
        if mean is None or scale is None or mean.shape != (width,) or scale.shape != (width,):
            raise ExportError(f"{root / WEIGHTS}: part {j} has no standardiser of shape ({width},)")
        if t == "lgbm":
            name = ps.get("file")
            if kind != "lgbm" or name not in listed or name in (CONFIG, WEIGHTS):
                raise ExportError(f"{bad}: part {j} names booster {name!r}, which is not a listed model file")
            try:
                text = (root / name).read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                raise ExportError(f"{root / name}: not a LightGBM text model ({exc})") from exc
            parts.append(Part(mean, scale, booster=text))
        elif t == "layers":
            depth = ps.get("depth")
            if not isinstance(depth, int) or depth < 1 or (kind == "linear" and depth != 1):
                raise ExportError(f"{bad}: part {j} depth {depth!r}")
            pairs, fan_in = [], dim
            for i in range(depth):
                w, b = tensors.get(f"head{j}.layer{i}.weight"), tensors.get(f"head{j}.layer{i}.bias")
                if w is None or b is None or w.ndim != 2 or w.shape[0] != fan_in or b.shape != (w.shape[1],):
                    raise ExportError(f"{root / WEIGHTS}: head{j}.layer{i} is missing or has input width other than {fan_in}")
                fan_in = w.shape[1]
                pairs.append((w, b))
            parts.append(Part(mean, scale, layers=tuple(pairs)))
        else:
            raise ExportError(f"{bad}: part {j} has unknown type {t!r}")
    head = Head(kind, output, n_out, dim, tuple(parts), act, features)
    try:
        p = head.predict_proba(np.zeros((2, dim)))
    except Exception as exc:  # noqa: BLE001 - LightGBM raises its own error type for a malformed model text
        raise ExportError(f"{root}: model files do not load ({exc})") from exc
    if p.shape != (2, n_out) or not np.all((p >= 0) & (p <= 1)):
        raise ExportError(f"{root}: model produces {p.shape} outputs, expected (2, {n_out}) probabilities")
    return cfg, head


def _read_features(spec, tensors: dict, dim: int, kind: str, root: Path) -> PartFeatures | None:
    """The head's feature map from ``features.*`` tensors (``spec``: the config's ``head.features``), checked."""
    if spec is None:
        if any(k.startswith("features.") for k in tensors):
            raise ExportError(f"{root / WEIGHTS}: feature tensors without a 'features' entry in {CONFIG}")
        return None
    where = f"{root / WEIGHTS}"
    if kind != "lgbm" or not isinstance(spec, dict):
        raise ExportError(f"{root / CONFIG}: a feature map belongs to a LightGBM head only")
    cols = tensors.get("features.columns")
    if cols is None or cols.ndim != 1 or len(cols) != spec.get("raw_columns"):
        raise ExportError(f"{where}: features.columns is missing or does not hold {spec.get('raw_columns')!r} columns")
    columns = cols.astype(np.int64)
    if not np.array_equal(columns, cols) or (len(columns) and (columns.min() < 0 or columns.max() >= dim or np.any(np.diff(columns) <= 0))):
        raise ExportError(f"{where}: features.columns must be increasing column numbers below {dim}")
    proj = None
    if spec.get("pca_dims"):
        w, off = tensors.get("features.pca.weight"), tensors.get("features.pca.offset")
        r = spec["pca_dims"]
        if w is None or off is None or w.shape != (dim, r) or off.shape != (r,):
            raise ExportError(f"{where}: features.pca.weight/offset missing or not of shape ({dim}, {r}) / ({r},)")
        # Stored as float64 copies of the probe's float32 arrays: the round trip is exact.
        proj = Projection(w.astype(np.float32), off.astype(np.float32), float("nan"))
    if not len(columns) and proj is None:
        raise ExportError(f"{root / CONFIG}: the feature map keeps no column")
    return PartFeatures(columns, proj)


def thresholds_for(config: Mapping, n: int) -> np.ndarray:
    """Decision thresholds ``(n,)`` from a config (0.5 where none were tuned)."""
    t = config.get("thresholds")
    if t is None:
        return np.full(n, 0.5)
    arr = np.asarray(t, dtype=np.float64).reshape(-1)
    if arr.shape != (n,):
        raise ExportError(f"thresholds {t!r} do not match {n} labels")
    return arr


# ------------------------------------------------------------------------ fit on a cache, export
def predict_proba_columns(est, x: np.ndarray, task: str) -> np.ndarray:
    """A fitted estimator's probabilities as output columns: ``(n, 1)`` binary, ``(n, K)`` otherwise."""
    p = est.predict_proba(x)
    if isinstance(p, list):  # some multi-output estimators return one (n, 2) array per label
        p = np.stack([q[:, 1] for q in p], axis=1)
    p = np.asarray(p, dtype=np.float64)
    return p[:, 1:2] if task == "binary" else p


@dataclass(frozen=True)
class ExportPlan:
    """Everything an export is made from, settled before any fitting: the task, probe, parameters and
    protocol, either as given or as read from a ``results.json`` (``source``). ``thresholds``: fixed
    decision thresholds; ``tune``: F1-optimal thresholds and ``calibrate``: a calibration map, both fitted
    on inner speaker folds of the training rows, as ``probe`` does per outer fold."""

    task: TaskSpec
    probe: str
    params: dict
    protocol: EvalProtocol
    exact: bool = False
    manifest: str | None = None
    thresholds: tuple[float, ...] | None = None
    tune: bool = False
    calibrate: str | None = None
    source: dict = field(default_factory=dict)


def plan_from_results(results: str | Path, cache: EmbeddingCache, layer: int, probe: str | None = None) -> ExportPlan:
    """The winner's settings from a ``probe`` or ``sweep`` results.json: its task, the probe's parameters
    (a sweep's most often selected ones at ``layer``), the protocol (a sweep's outer folds), and whether
    thresholds were tuned and probabilities calibrated. The cache is matched by fingerprint."""
    doc = load_results(results)
    entry = next((c for c in doc["caches"] if c.get("fingerprint") == cache.fingerprint), None)
    if entry is None:
        raise ExportError(f"{results}: no results for {cache.path} (its fingerprint {cache.fingerprint[:12]} is not among the document's caches)")
    rows = [r for r in doc["rows"] if r["encoder"] == entry["encoder"] and r["layer"] == layer and (probe is None or r["probe"] == probe)]
    if not rows:
        have = sorted({(r["probe"], r["layer"]) for r in doc["rows"] if r["encoder"] == entry["encoder"]})
        raise ExportError(f"{results}: no row for encoder {entry['encoder']!r}, layer {layer}" + (f", probe {probe!r}" if probe else "") + f"; it has (probe, layer) {have}")
    if len(rows) > 1:
        raise ExportError(f"{results}: layer {layer} was probed with {', '.join(r['probe'] for r in rows)}; choose one with --probe")
    row, cfg = rows[0], doc["config"]
    t = doc["task"]
    task = TaskSpec(t["kind"], t["target"], t.get("positive"), tuple(t["labels"]) if t.get("labels") else None, int(t.get("min_support", 1)))
    if "sweep" in doc:
        params = dict(row["best_params"])
        protocol = EvalProtocol(cv=cfg["cv"], folds=int(cfg["outer_folds"]), seed=int(cfg["seed"]))
    else:
        params = dict(cfg.get("probe_params", {}).get(row["probe"], {}))
        protocol = EvalProtocol(cv=cfg["cv"], folds=int(cfg["folds"]), seed=int(cfg["seed"]), speaker_column=cfg.get("speaker_column", "speaker"))
    labels = entry.get("labels_from") or {}
    return ExportPlan(task, row["probe"], params, protocol, exact=bool(cfg.get("exact", False)),
                      manifest=labels.get("path") if labels.get("source") == "manifest" else None,
                      tune=bool(cfg.get("tune_thresholds", False)), calibrate=cfg.get("calibrate"),
                      source={"results": str(results), "row": row})


@dataclass(frozen=True)
class Evaluated:
    """What :func:`evaluate_export` fitted and measured: the final estimator (all used rows), its
    calibrator and thresholds (from inner folds of all used rows, or as given), the core's preparation,
    its results row (the numbers ``probe`` reports) and the out-of-fold outcome."""

    estimator: object
    calibrator: object | None
    thresholds: tuple[float, ...] | None
    prepared: Prepared
    row: dict | None
    outcome: object | None


def evaluate_export(cache: EmbeddingCache, layer: int, plan: ExportPlan, exclude_speakers: Sequence[str] = (), evaluate: bool = True) -> Evaluated:
    """Cross-validate ``plan`` on ``layer`` through the core (:mod:`probekit.probe.evaluate`, so the
    numbers equal ``probe``'s for the same settings), then fit it on every used row."""
    probe = make_probe(plan.probe, exact=plan.exact, **plan.params)
    if getattr(probe, "input_layers", None) == "all":
        # An export runs the encoder only up to one hidden state; a probe over all of them needs the full pass.
        raise ExportError(f"probe '{plan.probe}' reads every hidden state at once, and an export scores one: "
                          "export the best single-layer probe instead (results.json 'best' names its layer)")
    prepared = prepare(cache, plan.task, plan.protocol, manifest=plan.manifest, exclude_speakers=exclude_speakers)
    X = read_X(prepared, layer)
    row = outcome = None
    if evaluate:
        outcome = evaluate_layer(prepared, X, probe, tune=plan.tune, calibrate=plan.calibrate)
        row = layer_row(prepared, layer, plan.probe, outcome, n_boot=0)
    kind, y = plan.task.kind, prepared.targets.y
    calibrator, thresholds = (None, None) if kind == "multiclass" else fit_inner(
        probe, X, y, prepared.groups, kind, calibrate=plan.calibrate, tune=plan.tune and plan.thresholds is None, seed=plan.protocol.seed)
    thresholds = plan.thresholds if plan.thresholds is not None else (None if thresholds is None else tuple(float(v) for v in thresholds))
    return Evaluated(fit_probe(clone(probe), X, y, prepared.groups), calibrator, thresholds, prepared, row, outcome)


def export_probe(cache_path: str | Path, layer: int, out_dir: str | Path, *, task: str | TaskSpec | None = None, target: str | None = None,
                 positive: str | None = None, labels: Sequence[str] | None = None, probe: str | None = None,
                 params: Mapping | None = None, exact: bool = False, protocol: EvalProtocol | None = None,
                 manifest: str | Path | None = None, thresholds: Sequence[float] | None = None, tune: bool = False,
                 calibrate: str | None = None, results: str | Path | None = None, exclude_speakers: Sequence[str] = (),
                 evaluate: bool = True) -> Path:
    """Fit ``probe`` on hidden state ``layer`` of every used cache row (minus ``exclude_speakers``) and export it.

    The settings come from ``results`` (a ``probe`` or ``sweep`` results.json: task, parameters, protocol,
    tuned thresholds) or from the arguments (``task`` as a :class:`TaskSpec` or a kind with ``target``,
    ``positive``, ``labels``). Labels, folds and the cross-validated metrics come from the same core as
    ``probe`` (``evaluate=False`` skips the cross-validation). Returns the export folder.
    """
    cache = EmbeddingCache(cache_path)
    if results is not None:
        plan = plan_from_results(results, cache, layer, probe)
        if params:
            plan = replace(plan, params={**plan.params, **dict(params)})
    else:
        if task is None:
            raise ExportError("give the task (--task, --target, ...) or a results.json (--results) to take it from")
        spec = task if isinstance(task, TaskSpec) else TaskSpec(str(task), str(target or ""), positive, tuple(labels) if labels else None)
        name = probe or "logreg"
        resolved = resolve_params((name,), tuple(dict(params or {}).items()), (protocol or EvalProtocol()).seed, exact=exact)[name]
        plan = ExportPlan(spec, name, resolved, protocol or EvalProtocol(), exact=exact, manifest=str(manifest) if manifest else None,
                          tune=tune, calibrate=calibrate)
    if thresholds is not None:
        plan = replace(plan, thresholds=tuple(float(v) for v in thresholds))
    done = evaluate_export(cache, layer, plan, exclude_speakers, evaluate=evaluate)
    kind, classes = plan.task.kind, done.prepared.targets.classes
    names = [classes[1]] if kind == "binary" else list(classes)
    if done.thresholds is not None and len(done.thresholds) != len(names):
        raise ExportError(f"{len(done.thresholds)} threshold(s) given for {len(names)} output label(s) {names}")
    x = read_X(done.prepared, layer)[:64].astype(np.float64)
    head = head_from_estimator(done.estimator, kind, len(names), cache.dim)
    gap = float(np.max(np.abs(head.predict_proba(x) - predict_proba_columns(done.estimator, x, kind)), initial=0.0))
    # The fast probes score in float32 (their training precision) and the head in float64: over hundreds of
    # dimensions that alone moves a probability by a few 1e-6, so the bound is float32's, not float64's.
    if not gap <= 1e-5:
        raise ExportError(f"exported head does not reproduce the fitted probe's probabilities (max difference {gap:.2e}); refusing to export")
    attrs = cache.attrs
    config = {
        "probekit_version": __version__,
        "task": {"kind": kind, "target": plan.task.target, "positive": plan.task.positive,
                 "labels": list(plan.task.labels) if plan.task.labels else None, "min_support": plan.task.min_support},
        "labels": names,
        "thresholds": None if (done.thresholds is None or kind == "multiclass") else list(done.thresholds),
        # Plain numbers (temperature or isotonic breakpoints), applied by the scorer before the thresholds.
        "calibration": done.calibrator.to_config() if done.calibrator is not None else None,
        "layer": int(layer),
        "probe": {"kind": plan.probe, "params": plan.params, "exact": plan.exact, "tune_thresholds": plan.tune, "calibrate": plan.calibrate},
        "protocol": plan.protocol.as_dict(),
        "encoder": {
            "name": done.prepared.encoder, "model": str(attrs.get("encoder", "")), "revision": str(attrs.get("revision", "") or ""),
            "commit": str(attrs.get("commit", "") or ""), "config_hash": str(attrs.get("config_hash", "") or ""),
            "pooling": str(attrs.get("pooling", "mean")), "whisper_mode": str(attrs.get("whisper_mode", "padded") or "padded"),
            "sample_rate": int(attrs.get("sample_rate", 16000)), "num_hidden_states": cache.num_layers, "dim": cache.dim,
        },
        "cache": {"path": str(cache.path), "fingerprint": cache.fingerprint, "n_rows": int(len(done.prepared.rows)),
                  "excluded_speakers": sorted(exclude_speakers), "labels_from": done.prepared.labels_from},
        "metrics": {"cross_validated": done.row, "selected_by": plan.source or None},
    }
    return save_export(out_dir, head, config)


__all__ = ["ExportError", "ExportPlan", "Evaluated", "Head", "Part", "head_from_estimator", "save_export", "verify_export", "load_export",
           "thresholds_for", "predict_proba_columns", "plan_from_results", "evaluate_export", "export_probe"]

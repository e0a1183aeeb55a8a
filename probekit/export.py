"""Safe export of a fitted probe, and safe loading of it back, with no pickle anywhere.

An export is a folder::

    manifest.json        {"format": "probekit-scorer", "format_version": 1,
                          "files": {name: {"sha256": hex, "bytes": n}}}
    config.json          task, labels, thresholds, layer, probe kind and params, encoder identity
                         (id, revision, commit, config hash, pooling, whisper_mode, sample rate),
                         source cache fingerprint, cross-validated metrics, tensor shapes
    weights.safetensors  standardiser mean/scale and, for logreg/MLP, every weight matrix
    lgbm_<j>.txt         LightGBM's own text model format, one per output head (lgbm only)

Loading reads only these files, through parsers that cannot run code (``json``, ``safetensors``,
LightGBM's text parser). Every file's size and sha256 are checked against the manifest, any file the
manifest does not list is refused, and every tensor's shape is checked against the config.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

FORMAT = "probekit-scorer"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
CONFIG = "config.json"
WEIGHTS = "weights.safetensors"
_MAX_JSON_BYTES = 16 * 2**20
_ACTIVATIONS = ("identity", "logistic", "tanh", "relu")


class ExportError(RuntimeError):
    """An export folder is missing, tampered with, truncated or of an unknown format. The message names the file."""


# --------------------------------------------------------------------------------------------- heads
@dataclass(frozen=True)
class Head:
    """The scoring function of one fitted probe, as plain arrays.

    ``kind``: ``"linear"``, ``"mlp"`` or ``"lgbm"``. ``output``: ``"sigmoid"`` (binary: one column, or
    multi-label: one independent head per label) or ``"softmax"`` (multi-class). ``mean``/``scale``:
    ``(dim,)`` standardiser. ``layers``: per output head, a list of ``(W (in, out), b (out,))`` pairs
    (one pair for linear). ``boosters``: per output head, LightGBM model text.
    """

    kind: str
    output: str
    n_outputs: int
    mean: np.ndarray
    scale: np.ndarray
    layers: tuple = ()
    activation: str = "relu"
    boosters: tuple = ()
    _loaded: list = field(default_factory=list, compare=False, repr=False)

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    def _booster(self, j: int):
        if not self._loaded:
            import lightgbm as lgb

            self._loaded.extend(lgb.Booster(model_str=text) for text in self.boosters)
        return self._loaded[j]

    def _raw(self, z: np.ndarray, j: int) -> np.ndarray:
        """Head ``j``'s output before the final link: logits ``(n, k)``; for lgbm, probabilities."""
        if self.kind == "lgbm":
            p = np.asarray(self._booster(j).predict(z), dtype=np.float64)
            return p.reshape(len(z), -1)
        h = z
        pairs = self.layers[j]
        for i, (w, b) in enumerate(pairs):
            h = h @ w + b
            if i < len(pairs) - 1:
                h = _activate(h, self.activation)
        return h

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """``x``: ``(n, dim)`` pooled embeddings -> ``(n, n_outputs)`` probabilities (float64)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"expected embeddings of shape (n, {self.dim}), got {x.shape}")
        z = (x - self.mean) / self.scale
        if self.output == "softmax":
            raw = self._raw(z, 0)
            if self.kind == "lgbm":
                return raw
            return _softmax(raw)
        cols = []
        for j in range(len(self.layers) or len(self.boosters)):
            raw = self._raw(z, j)
            if self.kind == "lgbm":
                cols.append(raw[:, -1])
            elif raw.shape[1] == 2:  # a two-unit softmax head (sklearn never emits one, but be exact if it does)
                cols.append(_softmax(raw)[:, 1])
            else:
                cols.append(_sigmoid(raw[:, 0]))
        return np.stack(cols, axis=1)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # Written like scipy.special.expit so that results match sklearn's to the last few ulps.
    out = np.empty_like(x)
    pos = x >= 0
    out[pos] = 1.0 / (1.0 + np.exp(-x[pos]))
    ex = np.exp(x[~pos])
    out[~pos] = ex / (1.0 + ex)
    return out


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _activate(h: np.ndarray, name: str) -> np.ndarray:
    if name == "relu":
        return np.maximum(h, 0)
    if name == "tanh":
        return np.tanh(h)
    if name == "logistic":
        return _sigmoid(h)
    return h


# ---------------------------------------------------------------------- fitted estimator -> Head
def _unwrap(est):
    """Yield ``(scaler or None, final estimator)`` through Pipelines and probe wrappers."""
    from sklearn.pipeline import Pipeline

    if isinstance(est, Pipeline):
        scaler = None
        for _, step in est.steps[:-1]:
            if hasattr(step, "mean_") and hasattr(step, "scale_"):
                scaler = step
            elif step not in (None, "passthrough"):
                raise ExportError(f"cannot export pipeline step {type(step).__name__}: only a standardiser and a classifier are supported")
        inner_scaler, final = _unwrap(est.steps[-1][1])
        return scaler or inner_scaler, final
    # probekit probe wrappers keep their fitted pipeline / estimator in an attribute ending in "_".
    for attr in ("pipeline_", "model_", "estimator_", "clf_", "classifier_"):
        inner = getattr(est, attr, None)
        if inner is not None and inner is not est and not isinstance(inner, (list, tuple)):
            scaler, final = _unwrap(inner)
            own = getattr(est, "scaler_", None)
            return scaler or own, final
    return getattr(est, "scaler_", None), est


def _scaler_arrays(scaler, dim: int) -> tuple[np.ndarray, np.ndarray]:
    if scaler is None:
        return np.zeros(dim), np.ones(dim)
    mean = np.asarray(getattr(scaler, "mean_", None) if getattr(scaler, "mean_", None) is not None else np.zeros(dim), dtype=np.float64)
    scale = np.asarray(getattr(scaler, "scale_", None) if getattr(scaler, "scale_", None) is not None else np.ones(dim), dtype=np.float64)
    return mean, scale


def _single_head(final) -> tuple[str, list | str, str]:
    """One binary or multi-class classifier -> (kind, pairs or booster text, activation)."""
    name = type(final).__name__
    if hasattr(final, "booster_"):
        return "lgbm", final.booster_.model_to_string(), "relu"
    if hasattr(final, "coefs_") and hasattr(final, "intercepts_"):
        act = getattr(final, "activation", "relu")
        if act not in _ACTIVATIONS:
            raise ExportError(f"cannot export MLP activation {act!r}")
        pairs = [(np.asarray(w, np.float64), np.asarray(b, np.float64)) for w, b in zip(final.coefs_, final.intercepts_)]
        return "mlp", pairs, act
    if hasattr(final, "coef_") and hasattr(final, "intercept_"):
        return "linear", [(np.asarray(final.coef_, np.float64).T.copy(), np.atleast_1d(np.asarray(final.intercept_, np.float64)))], "relu"
    raise ExportError(f"cannot export a {name}: only logistic regression, MLP and LightGBM probes are supported")


def head_from_estimator(est, task: str, n_labels: int, dim: int) -> Head:
    """Read a fitted probe's internals into a :class:`Head`.

    ``task``: ``binary`` | ``multiclass`` | ``multilabel``; ``n_labels``: output columns (1 for binary).
    Handles a Pipeline(StandardScaler, clf), probe wrappers holding one, and one-vs-rest ensembles.
    """
    scaler, final = _unwrap(est)
    if task == "multilabel":
        subs = getattr(final, "estimators_", None)
        if subs is None:
            raise ExportError(f"a multi-label probe must be one-vs-rest with estimators_, got {type(final).__name__}")
        subs = list(subs)
        if len(subs) != n_labels:
            raise ExportError(f"multi-label probe has {len(subs)} heads for {n_labels} labels")
        parts = []
        for sub in subs:
            s_scaler, s_final = _unwrap(sub)
            if s_scaler is not None and scaler is None:
                raise ExportError("per-label standardisers are not supported: standardise before the one-vs-rest split")
            if not hasattr(s_final, "coef_") and not hasattr(s_final, "coefs_") and not hasattr(s_final, "booster_"):
                # sklearn's OneVsRest stores a _ConstantPredictor for a label with one class only.
                raise ExportError(f"label head {type(s_final).__name__} has nothing to export (a label with a single class in training?)")
            parts.append(_single_head(s_final))
        kinds = {p[0] for p in parts}
        if len(kinds) != 1:
            raise ExportError(f"mixed head kinds {sorted(kinds)}")
        kind = kinds.pop()
        mean, scale = _scaler_arrays(scaler, dim)
        if kind == "lgbm":
            return Head(kind, "sigmoid", n_labels, mean, scale, boosters=tuple(p[1] for p in parts))
        return Head(kind, "sigmoid", n_labels, mean, scale, layers=tuple(tuple(p[1]) for p in parts), activation=parts[0][2])
    kind, body, act = _single_head(final)
    mean, scale = _scaler_arrays(scaler, dim)
    output = "sigmoid" if task == "binary" else "softmax"
    if kind == "lgbm":
        return Head(kind, output, n_labels, mean, scale, boosters=(body,))
    return Head(kind, output, n_labels, mean, scale, layers=(tuple(body),), activation=act)


# --------------------------------------------------------------------------------- write and read
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):
            h.update(block)
    return h.hexdigest()


def _tensors(head: Head) -> dict[str, np.ndarray]:
    out = {"scaler.mean": head.mean, "scaler.scale": head.scale}
    for j, pairs in enumerate(head.layers):
        for i, (w, b) in enumerate(pairs):
            out[f"head{j}.layer{i}.weight"] = w
            out[f"head{j}.layer{i}.bias"] = b
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
    cfg = dict(config)
    cfg["head"] = {
        "kind": head.kind,
        "output": head.output,
        "n_outputs": head.n_outputs,
        "activation": head.activation,
        "n_heads": len(head.layers) or len(head.boosters),
        "depth": [len(p) for p in head.layers],
        "tensors": {k: list(v.shape) for k, v in tensors.items()},
        "boosters": [f"lgbm_{j}.txt" for j in range(len(head.boosters))],
    }
    files = [CONFIG, WEIGHTS, *cfg["head"]["boosters"]]
    (out / CONFIG).write_text(json.dumps(cfg, indent=2, sort_keys=True, default=_jsonable) + "\n", encoding="utf-8")
    save_file(tensors, str(out / WEIGHTS), metadata={"format": FORMAT})
    for j, text in enumerate(head.boosters):
        (out / f"lgbm_{j}.txt").write_text(text, encoding="utf-8")
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "files": {name: {"sha256": _sha256(out / name), "bytes": (out / name).stat().st_size} for name in files},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return out


def _jsonable(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
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
        if "/" in name or "\\" in name or name.startswith("."):
            raise ExportError(f"{mpath}: bad file name {name!r}")
        path = root / name
        if not path.is_file() or path.is_symlink():
            raise ExportError(f"{path}: listed in {MANIFEST} but missing (or not a plain file)")
        size = path.stat().st_size
        if size != entry.get("bytes"):
            raise ExportError(f"{path}: {size} bytes, manifest says {entry.get('bytes')} (truncated or modified)")
        if _sha256(path) != entry.get("sha256"):
            raise ExportError(f"{path}: sha256 does not match {MANIFEST} (the file was modified)")
    return manifest


def load_export(model_dir: str | Path) -> tuple[dict, Head]:
    """Verify and read an export: ``(config, head)``. Never unpickles, evals or imports anything from the folder."""
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    root = Path(model_dir)
    verify_export(root)
    cfg = _read_json(root / CONFIG)
    spec = cfg.get("head")
    if not isinstance(spec, dict):
        raise ExportError(f"{root / CONFIG}: missing 'head' section")
    kind, output = spec.get("kind"), spec.get("output")
    if kind not in ("linear", "mlp", "lgbm") or output not in ("sigmoid", "softmax"):
        raise ExportError(f"{root / CONFIG}: unknown head kind/output {kind!r}/{output!r}")
    if spec.get("activation") not in _ACTIVATIONS:
        raise ExportError(f"{root / CONFIG}: unknown activation {spec.get('activation')!r}")
    try:
        tensors = load_file(str(root / WEIGHTS))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ExportError(f"{root / WEIGHTS}: not a valid safetensors file ({exc})") from exc
    expected = {k: tuple(v) for k, v in spec.get("tensors", {}).items()}
    got = {k: tuple(v.shape) for k, v in tensors.items()}
    if expected != got:
        raise ExportError(f"{root / WEIGHTS}: tensors {got} do not match the shapes in {CONFIG} {expected}")
    for k, v in tensors.items():
        if v.dtype != np.float64 or not np.all(np.isfinite(v)):
            raise ExportError(f"{root / WEIGHTS}: tensor {k} is not finite float64")
    dim = int(cfg.get("encoder", {}).get("dim", tensors["scaler.mean"].shape[0]))
    if tensors["scaler.mean"].shape != (dim,) or tensors["scaler.scale"].shape != (dim,):
        raise ExportError(f"{root / WEIGHTS}: standardiser shape does not match the encoder dimension {dim}")
    labels = cfg.get("labels")
    n_out = int(spec.get("n_outputs", -1))
    if not isinstance(labels, list) or len(labels) != n_out:
        raise ExportError(f"{root / CONFIG}: {n_out} outputs but labels {labels!r}")
    n_heads = int(spec.get("n_heads", 0))
    layers: list = []
    boosters: list = []
    if kind == "lgbm":
        names = spec.get("boosters", [])
        if len(names) != n_heads:
            raise ExportError(f"{root / CONFIG}: {n_heads} heads but boosters {names}")
        for name in names:
            if name not in _listed(root):
                raise ExportError(f"{root / name}: booster not listed in {MANIFEST}")
            boosters.append((root / name).read_text(encoding="utf-8"))
    else:
        depth = spec.get("depth", [])
        if len(depth) != n_heads:
            raise ExportError(f"{root / CONFIG}: depth {depth} for {n_heads} heads")
        for j in range(n_heads):
            pairs = []
            width = dim
            for i in range(int(depth[j])):
                w, b = tensors[f"head{j}.layer{i}.weight"], tensors[f"head{j}.layer{i}.bias"]
                if w.ndim != 2 or w.shape[0] != width or b.shape != (w.shape[1],):
                    raise ExportError(f"{root / WEIGHTS}: head{j}.layer{i} has shape {w.shape}/{b.shape}, expected input width {width}")
                width = w.shape[1]
                pairs.append((w, b))
            layers.append(tuple(pairs))
    head = Head(kind, output, n_out, tensors["scaler.mean"], tensors["scaler.scale"], tuple(layers), spec["activation"], tuple(boosters))
    try:
        _check_head(head, root)
    except ExportError:
        raise
    except Exception as exc:  # noqa: BLE001  # a malformed LightGBM text model raises its own error type
        raise ExportError(f"{root}: model files do not load ({exc})") from exc
    return cfg, head


def _listed(root: Path) -> set[str]:
    return set(_read_json(root / MANIFEST).get("files", {}))


def _check_head(head: Head, root: Path) -> None:
    """Run the head once on zeros: every output must be a probability, with the promised width."""
    p = head.predict_proba(np.zeros((1, head.dim)))
    if p.shape != (1, head.n_outputs) or not np.all((p >= 0) & (p <= 1)):
        raise ExportError(f"{root}: model produces {p.shape} outputs, expected (1, {head.n_outputs}) probabilities")


def thresholds_for(config: Mapping, n: int) -> np.ndarray:
    """Decision thresholds ``(n,)`` from a config (0.5 where none were tuned)."""
    t = config.get("thresholds")
    if t is None:
        return np.full(n, 0.5)
    arr = np.asarray(t, dtype=np.float64).reshape(-1)
    if arr.shape != (n,):
        raise ExportError(f"thresholds {t!r} do not match {n} labels")
    return arr


__all__ = ["ExportError", "Head", "head_from_estimator", "save_export", "verify_export", "load_export", "thresholds_for", "export_probe", "build_targets"]


# ------------------------------------------------------------------------ fit on a cache, export
def build_targets(metadata: Mapping[str, np.ndarray], task: str, target: str, positive: str | None = None,
                  labels: Sequence[str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Targets from cache metadata: ``(y, label_names)``.

    binary: ``y (n,)`` 0/1, rows whose ``;``-set in ``target`` contains ``positive``; names ``[positive]``.
    multiclass: ``y (n,)`` int indices into the sorted names. multilabel: ``y (n, L)`` 0/1 indicator.
    """
    if target not in metadata:
        raise ValueError(f"column {target!r} is not in the cache metadata (have: {', '.join(sorted(metadata))})")
    values = [str(v) for v in metadata[target]]
    sets = [{p.strip() for p in v.split(";") if p.strip()} for v in values]
    if task == "binary":
        if not positive:
            raise ValueError("binary task needs --positive VALUE")
        y = np.array([positive in s for s in sets], dtype=np.int64)
        if y.min() == y.max():
            raise ValueError(f"--positive {positive!r}: every row is in the same class")
        return y, [positive]
    if task == "multiclass":
        names = sorted(set(values))
        index = {n: i for i, n in enumerate(names)}
        return np.array([index[v] for v in values], dtype=np.int64), names
    if task == "multilabel":
        names = list(labels) if labels else sorted(set().union(*sets))
        unknown = [n for n in names if not any(n in s for s in sets)]
        if unknown:
            raise ValueError(f"labels {unknown} never occur in column {target!r}")
        return np.array([[n in s for n in names] for s in sets], dtype=np.int64), names
    raise ValueError(f"unknown task {task!r}: use binary, multiclass or multilabel")


def make_estimator(probe: str, task: str, params: Mapping | None = None, seed: int = 0):
    """The probe to fit: probekit's own probes when available, else the same plain recipe
    (standardise, then C=1 logistic regression / a small MLP / LightGBM; one-vs-rest for multi-label)."""
    params = dict(params or {})
    try:
        from probekit.probes import make_probe
    except ImportError:
        make_probe = None
    if make_probe is not None:
        return make_probe(probe, **params)
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    if probe == "logreg":
        from sklearn.linear_model import LogisticRegression

        clf = LogisticRegression(**{"C": 1.0, "max_iter": 2000, **params})
    elif probe == "mlp":
        from sklearn.neural_network import MLPClassifier

        clf = MLPClassifier(**{"hidden_layer_sizes": (128,), "max_iter": 500, "random_state": seed, **params})
    elif probe == "lgbm":
        from lightgbm import LGBMClassifier

        clf = LGBMClassifier(**{"n_estimators": 200, "random_state": seed, "verbose": -1, **params})
    else:
        raise ValueError(f"unknown probe {probe!r}: use logreg, mlp or lgbm")
    if task == "multilabel":
        from sklearn.pipeline import Pipeline

        return Pipeline([("scaler", StandardScaler()), ("ovr", OneVsRestClassifier(clf))])
    return make_pipeline(StandardScaler(), clf)


def _metrics(task: str, y: np.ndarray, proba: np.ndarray, thresholds: np.ndarray) -> dict[str, float]:
    from sklearn import metrics as m

    if task == "binary":
        pred = (proba[:, 0] >= thresholds[0]).astype(int)
        return {
            "f1": m.f1_score(y, pred), "precision": m.precision_score(y, pred, zero_division=0),
            "recall": m.recall_score(y, pred), "accuracy": m.accuracy_score(y, pred),
            "balanced_accuracy": m.balanced_accuracy_score(y, pred), "roc_auc": m.roc_auc_score(y, proba[:, 0]),
            "pr_auc": m.average_precision_score(y, proba[:, 0]),
        }
    if task == "multiclass":
        pred = proba.argmax(axis=1)
        return {
            "accuracy": m.accuracy_score(y, pred), "uar": m.balanced_accuracy_score(y, pred),
            "macro_f1": m.f1_score(y, pred, average="macro"), "weighted_f1": m.f1_score(y, pred, average="weighted"),
        }
    pred = (proba >= thresholds).astype(int)
    return {
        "weighted_f1": m.f1_score(y, pred, average="weighted", zero_division=0),
        "macro_f1": m.f1_score(y, pred, average="macro", zero_division=0),
        "micro_f1": m.f1_score(y, pred, average="micro", zero_division=0),
        "subset_accuracy": m.accuracy_score(y, pred),
    }


def predict_proba_columns(est, x: np.ndarray, task: str) -> np.ndarray:
    """A fitted estimator's probabilities as output columns: ``(n, 1)`` binary, ``(n, K)`` otherwise."""
    p = est.predict_proba(x)
    if isinstance(p, list):  # some multi-output estimators return one (n, 2) array per label
        p = np.stack([q[:, 1] for q in p], axis=1)
    p = np.asarray(p, dtype=np.float64)
    return p[:, 1:2] if task == "binary" else p


def cross_validate(x: np.ndarray, y: np.ndarray, groups: np.ndarray, task: str, probe: str,
                   params: Mapping | None = None, thresholds: np.ndarray | None = None, seed: int = 0) -> dict:
    """Speaker-grouped CV (leave-one-speaker-out up to 12 speakers, else 5 grouped folds) of one layer.

    Returns ``{"protocol", "n_folds", "pooled": {metric: value}}``, metrics over pooled out-of-fold predictions.
    """
    from sklearn.base import clone
    from sklearn.model_selection import GroupKFold, LeaveOneGroupOut

    n_groups = len(set(groups))
    if n_groups < 2:
        raise ValueError("cross-validation needs at least two speakers")
    splitter = LeaveOneGroupOut() if n_groups <= 12 else GroupKFold(n_splits=5)
    proto = "loso" if n_groups <= 12 else "speaker-kfold-5"
    n_out = 1 if task == "binary" else (y.shape[1] if task == "multilabel" else int(y.max()) + 1)
    oof = np.zeros((len(x), n_out))
    template = make_estimator(probe, task, params, seed)
    for train, test in splitter.split(x, y, groups):
        est = clone(template).fit(x[train], y[train])
        oof[test] = predict_proba_columns(est, x[test], task)
    t = thresholds if thresholds is not None else np.full(n_out, 0.5)
    return {"protocol": proto, "n_folds": int(splitter.get_n_splits(x, y, groups)),
            "pooled": {k: float(v) for k, v in _metrics(task, y, oof, t).items()}}


def _metrics_from_results(results_path: Path, encoder: str, layer: int, probe: str) -> dict:
    data = _read_json(Path(results_path))
    rows = data.get("rows") or data.get("results") or []
    for row in rows:
        if int(row.get("layer", -1)) == layer and row.get("probe") == probe and (
            not row.get("encoder") or str(row.get("encoder")) in (encoder, Path(encoder).name) or Path(str(row.get("encoder"))).name == Path(encoder).name
        ):
            return {"source": str(results_path), "row": row}
    raise ValueError(f"{results_path}: no row for encoder {encoder!r}, layer {layer}, probe {probe!r}")


def export_probe(cache_path: str | Path, layer: int, out_dir: str | Path, *, task: str, target: str,
                 positive: str | None = None, labels: Sequence[str] | None = None, probe: str = "logreg",
                 params: Mapping | None = None, thresholds: Sequence[float] | None = None,
                 results: str | Path | None = None, exclude_speakers: Sequence[str] = (), seed: int = 0,
                 cv: bool = True) -> Path:
    """Fit ``probe`` on hidden state ``layer`` of every cache row (minus ``exclude_speakers``) and export it.

    Metrics come from ``results`` (a probekit results.json) when given, else from a speaker-grouped CV run
    here (``cv=False`` skips it). Returns the export folder.
    """
    from sklearn.base import clone

    from probekit.cache import EmbeddingCache

    cache = EmbeddingCache(cache_path)
    x = cache.read_layer(layer, dtype=np.float32)
    keep = np.ones(len(x), dtype=bool)
    speakers = np.asarray(cache.metadata.get("speaker", np.array([""] * len(x))), dtype=object)
    if exclude_speakers:
        unknown = set(exclude_speakers) - set(speakers)
        if unknown:
            raise ValueError(f"--exclude-speaker {sorted(unknown)}: not in the cache's speaker column")
        keep &= ~np.isin(speakers, list(exclude_speakers))
    meta = {k: v[keep] for k, v in cache.metadata.items()}
    x, speakers = x[keep], speakers[keep]
    y, names = build_targets(meta, task, target, positive, labels)
    n_out = len(names)
    t = np.asarray(thresholds, dtype=np.float64) if thresholds is not None else None
    if t is not None and t.shape != (n_out,):
        raise ValueError(f"{len(t)} thresholds given for {n_out} labels {names}")
    est = clone(make_estimator(probe, task, params, seed)).fit(x, y)
    head = head_from_estimator(est, task, n_out, cache.dim)
    if not np.allclose(head.predict_proba(x[:64]), predict_proba_columns(est, x[:64], task), atol=1e-6, rtol=0):
        raise ExportError("exported head does not reproduce the fitted probe's probabilities; refusing to export")
    if t is None and hasattr(est, "thresholds_"):
        t = np.asarray(est.thresholds_, dtype=np.float64).reshape(-1)
    if results is not None:
        metrics = _metrics_from_results(Path(results), cache.encoder, layer, probe)
    elif cv and len(set(speakers)) >= 2:
        metrics = {"source": "computed at export", **cross_validate(x, y, speakers, task, probe, params, t, seed)}
    else:
        metrics = {}
    attrs = cache.attrs
    config = {
        "probekit_version": _version(),
        "task": {"kind": task, "target": target, "positive": positive},
        "labels": names,
        "thresholds": None if (t is None or task == "multiclass") else [float(v) for v in t],
        "layer": int(layer),
        "probe": {"kind": probe, "params": dict(params or {}), "seed": seed},
        "encoder": {
            "model": str(attrs.get("encoder", "")), "revision": str(attrs.get("revision", "") or ""),
            "commit": str(attrs.get("commit", "") or ""), "config_hash": str(attrs.get("config_hash", "") or ""),
            "pooling": str(attrs.get("pooling", "mean")), "whisper_mode": str(attrs.get("whisper_mode", "padded") or "padded"),
            "sample_rate": int(attrs.get("sample_rate", 16000)), "num_hidden_states": cache.num_layers, "dim": cache.dim,
        },
        "cache": {"path": str(cache.path), "fingerprint": cache.fingerprint, "n_rows": int(keep.sum()),
                  "excluded_speakers": sorted(exclude_speakers)},
        "metrics": metrics,
    }
    return save_export(out_dir, head, config)


def _version() -> str:
    from probekit import __version__

    return __version__

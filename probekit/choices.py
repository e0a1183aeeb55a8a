"""Every closed set of choices, defined once and used directly by the library, recipes and Typer.

Each is a ``str`` Enum: ``Pooling("mean") == "mean"``, so values read from TOML or JSON compare
equal to members, and Typer shows the members as the option's choices.
"""

from __future__ import annotations

from enum import Enum


class Choice(str, Enum):
    """Base: a member prints as its value, and :meth:`names` lists the values for messages."""

    def __str__(self) -> str:
        return self.value

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(m.value for m in cls)

    @classmethod
    def check(cls, value: str, what: str, error: type[Exception] = ValueError) -> str:
        """``value`` as a plain string if it is one of the choices; else ``error`` naming ``what`` and the choices."""
        if value not in cls.names():
            raise error(f"unknown {what} {value!r}: choose one of {', '.join(cls.names())}")
        return str(value)


class TaskKind(Choice):
    binary = "binary"
    multiclass = "multiclass"
    multilabel = "multilabel"


class Protocol(Choice):
    """Speaker-independent evaluation protocols (see :mod:`probekit.probe.splits`)."""

    speaker_kfold = "speaker-kfold"
    loso = "loso"
    split = "split"


class Pooling(Choice):
    mean = "mean"
    mean_std = "mean+std"


class DType(Choice):
    float16 = "float16"
    float32 = "float32"


class WhisperMode(Choice):
    padded = "padded"
    fast = "fast"


class Device(Choice):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class ClassWeight(Choice):
    """How a probe weights classes when set (unset: every row weighs 1)."""

    balanced = "balanced"


class Calibration(Choice):
    """Probability calibrators fitted on inner speaker folds (see :mod:`probekit.probe.calibration`)."""

    temperature = "temperature"
    isotonic = "isotonic"


# The metric set, per task kind: every command reports exactly these, under these names.
SCALAR_METRICS: dict[str, tuple[str, ...]] = {
    "binary": ("f1", "precision", "recall", "accuracy", "balanced_accuracy", "roc_auc", "pr_auc"),
    "multiclass": ("uar", "accuracy", "macro_f1", "weighted_f1"),
    "multilabel": ("weighted_f1", "macro_f1", "micro_f1", "hamming_loss", "subset_accuracy", "lrap"),
}
# The metric a layer is ranked by, per task kind.
HEADLINE: dict[str, str] = {"binary": "f1", "multiclass": "uar", "multilabel": "weighted_f1"}
LOWER_IS_BETTER = frozenset({"hamming_loss"})

__all__ = ["Choice", "TaskKind", "Protocol", "Pooling", "DType", "WhisperMode", "Device", "ClassWeight", "Calibration",
           "SCALAR_METRICS", "HEADLINE", "LOWER_IS_BETTER"]

"""probekit: which speech encoder, and which layer of it, carries a caller's emotion.

One GPU pass extracts every layer's pooled hidden states into HDF5 (``probekit extract``);
cheap CPU probes then score each layer (``probekit probe``).
"""

from __future__ import annotations

__version__ = "0.1.0"

# Lazy exports keep `import probekit` light: torch and transformers load only when needed.
# The public Python API (docs/api.md): one function per stage, as the README's workflow names them.
_EXPORTS = {
    "read_manifest": ("probekit.manifest", "read_manifest"),
    "EncoderSpec": ("probekit.extract.encoders", "EncoderSpec"),
    "extract_cache": ("probekit.extract._extract", "extract_cache"),
    "EmbeddingCache": ("probekit.cache", "EmbeddingCache"),
    "TaskSpec": ("probekit.probe.tasks", "TaskSpec"),
    "ProbeConfig": ("probekit.probe.probing", "ProbeConfig"),
    "run_probe": ("probekit.probe.probing", "run_probe"),
    "SweepSpec": ("probekit.probe.sweep", "SweepSpec"),
    "run_sweep": ("probekit.probe.sweep", "run_sweep"),
    "export_probe": ("probekit.deploy.export", "export_probe"),
    "load_scorer": ("probekit.deploy.scorer", "load_scorer"),
    "ProbekitError": ("probekit.errors", "ProbekitError"),
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        module, attr = _EXPORTS[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'probekit' has no attribute {name!r}")

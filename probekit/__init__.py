"""probekit: which speech encoder, and which layer of it, carries a caller's emotion.

One GPU pass extracts every layer's pooled hidden states into HDF5 (``probekit extract``);
cheap CPU probes then score each layer (``probekit probe``).
"""

from __future__ import annotations

__version__ = "0.1.0"

# Lazy exports keep `import probekit` light: torch and transformers load only when needed.
_EXPORTS = {
    "EmbeddingCache": ("probekit.cache", "EmbeddingCache"),
    "read_manifest": ("probekit.manifest", "read_manifest"),
    "load_scorer": ("probekit.deploy.scorer", "load_scorer"),
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        module, attr = _EXPORTS[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'probekit' has no attribute {name!r}")

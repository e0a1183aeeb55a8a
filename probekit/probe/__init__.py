"""Stage 2, probing: cache file -> targets and speaker folds -> per-layer probes -> results document."""

"""Stage 4, deployment: a chosen (encoder, layer, probe) -> a safe export folder -> scores for new audio."""

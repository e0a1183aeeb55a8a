"""Stage 1, extraction: manifest rows -> audio -> encoder -> pooled hidden states -> cache file."""

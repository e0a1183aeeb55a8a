"""Recipes: a whole study as plain TOML, checked before any work, run stage after stage."""

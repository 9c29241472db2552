"""Corpus readers, the bracket-annotation parser and the synthetic corpus."""

"""Hypothesis emission, cross-fitting, the Parquet schema and prepare()."""

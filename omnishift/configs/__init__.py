"""Experiment configs and data shipped with the package (``builtin:NAME`` in experiment YAML)."""

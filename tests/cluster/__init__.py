"""Tests against a real SLURM cluster (a package, so its conftest does not shadow tests/conftest.py)."""

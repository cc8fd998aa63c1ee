"""Deterministic synthetic multi-payer claim files with planted defects (see generator.py)."""

"""Evaluation: benchmarks, answer extraction and verification, reports."""

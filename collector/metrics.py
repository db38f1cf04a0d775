"""Prometheus metrics (being written)."""

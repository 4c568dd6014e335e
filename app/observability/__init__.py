"""Metrics the service exposes (Prometheus)."""

"""Virtuoso: real-time crypto market dashboards."""

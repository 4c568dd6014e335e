"""Virtuoso's Grafana boards as code (grafana-foundation-sdk, Grafana 11.6)."""

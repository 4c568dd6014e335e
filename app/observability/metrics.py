"""The service's Prometheus registry and the metrics defined on it.

One module-level registry (not prometheus-client's global one) so tests and the
later ``/metrics`` endpoint see exactly the service's own metrics.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram

REGISTRY = CollectorRegistry()

# Bucket bounds at the page-load KPI thresholds, in seconds.
PAGE_LOAD_BUCKETS = (0.05, 0.1, 0.25, 0.3, 0.5, 0.8, 1.0, 1.5, 2.5, 5.0, 10.0)

PAGE_LOAD_SECONDS = Histogram(
    "virtuoso_page_load_seconds",
    "Page load phases measured in the browser (real user monitoring)",
    labelnames=("device", "phase"),
    buckets=PAGE_LOAD_BUCKETS,
    registry=REGISTRY,
)

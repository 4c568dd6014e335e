"""A collector process's scrape-time metrics: leadership and its own refreshes."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from app.main.collector_telemetry import CollectorProcessMetrics
from app.services.collector_link import CollectorStatus


def scrape(status: CollectorStatus, leading: bool) -> str:
    registry = CollectorRegistry()
    registry.register(CollectorProcessMetrics(lambda: status, lambda: leading))
    return generate_latest(registry).decode()


def test_a_leader_reports_one_and_its_refreshes() -> None:
    status = CollectorStatus(refreshes={"ok": 7, "error": 1}, views_built=70)
    text = scrape(status, leading=True)
    assert "virtuoso_collector_leading 1.0" in text
    assert 'virtuoso_pipeline_refreshes_total{outcome="ok"} 7.0' in text
    assert 'virtuoso_pipeline_refreshes_total{outcome="error"} 1.0' in text
    assert 'virtuoso_pipeline_refreshes_total{outcome="skipped"} 0.0' in text  # from zero
    assert "virtuoso_views_built_total 70.0" in text


def test_a_standby_reports_zero() -> None:
    text = scrape(CollectorStatus(), leading=False)
    assert "virtuoso_collector_leading 0.0" in text
    assert 'virtuoso_pipeline_refreshes_total{outcome="ok"} 0.0' in text


def test_bad_data_and_refused_webhooks_are_reported_where_they_happen() -> None:
    registry = CollectorRegistry()
    counts = {"SOLUSDT": {"candles_filled": 3}, "BTCUSDT": {"ticker_missing": 1}}
    registry.register(
        CollectorProcessMetrics(CollectorStatus, lambda: True, lambda: counts, lambda: 2)
    )
    text = generate_latest(registry).decode()
    family = "virtuoso_exchange_data_quality_total"
    assert f'{family}{{kind="candles_filled",symbol="SOLUSDT"}} 3.0' in text
    assert f'{family}{{kind="ticker_missing",symbol="BTCUSDT"}} 1.0' in text
    assert "virtuoso_webhook_refused_total 2.0" in text

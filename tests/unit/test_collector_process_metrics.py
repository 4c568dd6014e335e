"""A collector process's scrape-time metrics: leadership, its own refreshes, what it
counts where it happens (bad data, failed alert templates), refused deliveries."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from app.main.collector_telemetry import CollectorProcessMetrics, delivery_observer
from app.observability.metrics import Metrics
from app.services.alerts.engine import AlertEngine, MarketFacts
from app.services.alerts.rules import validate_rule
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


def test_bad_data_is_reported_where_it_happens() -> None:
    registry = CollectorRegistry()
    counts = {"SOLUSDT": {"candles_filled": 3}, "BTCUSDT": {"ticker_missing": 1}}
    registry.register(CollectorProcessMetrics(CollectorStatus, lambda: True, lambda: counts))
    text = generate_latest(registry).decode()
    family = "virtuoso_exchange_data_quality_total"
    assert f'{family}{{kind="candles_filled",symbol="SOLUSDT"}} 3.0' in text
    assert f'{family}{{kind="ticker_missing",symbol="BTCUSDT"}} 1.0' in text


def test_alert_templates_that_failed_to_render_are_counted() -> None:
    """The engine's own count, scraped: each alert sent with the default message because
    its rule's template failed on the real values is one more."""
    rule = validate_rule(
        {"kind": "price_above", "threshold": 100, "cooldown_seconds": 0, "template": "{{ price }}"},
        ("BTCUSDT",),
    )
    # A template that fails only on real values (it divides by zero at 101.5).
    broken = rule.model_copy(update={"template": "{{ values.price / (values.price - 101.5) }}"})
    engine = AlertEngine()
    registry = CollectorRegistry()
    registry.register(
        CollectorProcessMetrics(
            CollectorStatus, lambda: True, template_failures=lambda: engine.template_failures
        )
    )
    assert "virtuoso_alert_template_failures_total 0.0" in generate_latest(registry).decode()
    state = None
    for price in (101.5, 90.0, 101.5):
        _, state = engine.evaluate([broken], [MarketFacts("BTCUSDT", price, 0.0)], state)
    assert "virtuoso_alert_template_failures_total 2.0" in generate_latest(registry).decode()


def test_refused_deliveries_are_counted_by_the_outbox_listener() -> None:
    """Where the outbox's worker runs (the collector), a delivery the destination policy
    refused is one ``virtuoso_alert_deliveries_total{outcome="refused"}``."""
    metrics = Metrics()
    observe = delivery_observer(metrics)
    observe("webhook", "refused", None)
    observe("webhook", "refused", None)
    observe("json", "refused", None)
    text = generate_latest(metrics.registry).decode()
    family = "virtuoso_alert_deliveries_total"
    assert f'{family}{{channel_type="webhook",outcome="refused"}} 2.0' in text
    assert f'{family}{{channel_type="json",outcome="refused"}} 1.0' in text

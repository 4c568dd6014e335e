"""A collector process's scrape-time metrics: leadership, its own refreshes, what it
counts where it happens (bad data, refused webhooks, failed alert templates)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from app.main.collector_telemetry import CollectorProcessMetrics
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

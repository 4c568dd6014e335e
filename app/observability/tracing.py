"""OpenTelemetry traces: the provider built from the standard ``OTEL_*`` variables,
and the spans the service makes (cache lookups, exchange calls and their waits in the
client-side rate limiter, pipeline steps).

With no OTLP endpoint configured (``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``), or with ``OTEL_SDK_DISABLED=true`` or
``OTEL_TRACES_EXPORTER=none``, nothing is exported and the API's no-op tracer
keeps the cost of every span near zero. The tracer is process-wide, like the
exporter: ``use(provider)`` switches it (tests pass an explicit provider with an
in-memory exporter)."""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator, Mapping

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.semconv.attributes.db_attributes import DB_SYSTEM_NAME
from opentelemetry.trace import Span, Status, StatusCode, Tracer

log = logging.getLogger(__name__)

SERVICE_NAME = "virtuoso"
INSTRUMENTATION = "virtuoso"

# db.system.name of each cache tier (the in-process tier has no standard name).
TIER_SYSTEMS = {"l1": "in-process", "memcached": "memcached", "redis": "redis"}

_provider: trace.TracerProvider | None = None
_tracer: Tracer = trace.NoOpTracer()


def provider_from_env(environ: Mapping[str, str] = os.environ) -> TracerProvider | None:
    """An SDK provider exporting over OTLP/HTTP when the ``OTEL_*`` variables ask for
    it; None otherwise. Resource, sampler, endpoint, headers and timeouts all come
    from the standard variables (``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
    ``OTEL_TRACES_SAMPLER``, ``OTEL_EXPORTER_OTLP_*``)."""
    if environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return None
    if environ.get("OTEL_TRACES_EXPORTER", "otlp").lower() != "otlp":
        return None
    endpoint = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    )
    if not endpoint:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    resource = Resource.create({"service.name": environ.get("OTEL_SERVICE_NAME", SERVICE_NAME)})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    log.info("tracing: exporting spans over OTLP/HTTP to %s", endpoint)
    return provider


def use(provider: trace.TracerProvider | None) -> None:
    """Makes ``provider`` the source of the service's spans (None: no spans)."""
    global _provider, _tracer
    _provider = provider
    _tracer = provider.get_tracer(INSTRUMENTATION) if provider else trace.NoOpTracer()


def current_provider() -> trace.TracerProvider | None:
    return _provider


def tracer() -> Tracer:
    return _tracer


def current_trace_id() -> str | None:
    """The hex trace id of the current span when it is sampled (for exemplars)."""
    context = trace.get_current_span().get_span_context()
    if not context.is_valid or not context.trace_flags.sampled:
        return None
    return format(context.trace_id, "032x")


@contextlib.contextmanager
def cache_lookup_span(tier: str, family: str) -> Iterator[Span]:
    """One lookup in one cache tier; the caller sets ``cache.hit`` (and ``cache.result``).

    Without a provider the no-op span is yielded directly: a lookup happens on every
    request, and the API's no-op tracer still builds the attributes and switches the
    context (about 5% of the serving process's CPU under the polling benchmark)."""
    if _provider is None:
        yield trace.INVALID_SPAN
        return
    with _tracer.start_as_current_span(
        f"cache get {tier}",
        kind=trace.SpanKind.CLIENT,
        attributes={
            DB_SYSTEM_NAME: TIER_SYSTEMS.get(tier, tier),
            "cache.tier": tier,
            "cache.family": family,
        },
    ) as span:
        yield span


def record_cache_result(span: Span, result: str) -> None:
    span.set_attribute("cache.result", result)
    span.set_attribute("cache.hit", result in ("hit", "stale"))
    if result == "error":
        span.set_status(Status(StatusCode.ERROR))


@contextlib.contextmanager
def exchange_call_span(exchange: str, endpoint: str) -> Iterator[Span]:
    """One call to the exchange; the caller sets the outcome."""
    with _tracer.start_as_current_span(
        f"exchange {endpoint}",
        kind=trace.SpanKind.CLIENT,
        attributes={"exchange.name": exchange, "exchange.endpoint": endpoint},
        record_exception=True,
    ) as span:
        yield span


RATELIMIT_WAIT_SPAN = "exchange ratelimit wait"


@contextlib.contextmanager
def ratelimit_wait_span(exchange: str, cost: float | None) -> Iterator[Span]:
    """The wait in the client-side rate limiter before one HTTP request to the exchange
    (a child of the ``exchange <endpoint>`` span when there is one). Internal: no request
    is on the wire while it lasts."""
    attributes: dict[str, str | float] = {"exchange.name": exchange}
    if cost is not None:
        attributes["ratelimit.cost"] = float(cost)
    with _tracer.start_as_current_span(
        RATELIMIT_WAIT_SPAN, kind=trace.SpanKind.INTERNAL, attributes=attributes
    ) as span:
        yield span


def record_timing(span: Span, request_seconds: float, wait_seconds: float) -> None:
    """On an exchange call span: how much of it was the request itself and how much
    the wait in the client-side rate limiter."""
    span.set_attribute("exchange.request_seconds", request_seconds)
    span.set_attribute("exchange.ratelimit_wait_seconds", wait_seconds)


def record_outcome(span: Span, outcome: str) -> None:
    span.set_attribute("exchange.outcome", outcome)
    if outcome != "ok":
        span.set_status(Status(StatusCode.ERROR, outcome))


@contextlib.contextmanager
def step_span(name: str, **attributes: str | int | float | bool) -> Iterator[Span]:
    """A step of the service's own work (pipeline refresh and its parts)."""
    with _tracer.start_as_current_span(name, attributes=attributes) as span:
        yield span

"""Composition roots: where the service's parts are chosen from the settings and wired
together — ``collector`` (source, refresher, warming), ``server`` (the Quart app, its
routes, realtime and alert service), ``embedded`` (both in one process, the default),
``telemetry`` (the metrics wiring) and ``cli``. No other package of ``app`` imports it."""

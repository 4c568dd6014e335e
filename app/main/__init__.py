"""Composition roots: where the service's parts are chosen from the settings and wired
together — ``collector`` (source, refresher, warming; ``sources`` picks the market
source), ``server`` (the Quart app, its routes, realtime and alert service),
``embedded`` (both in one process, the default), ``telemetry`` (the metrics wiring, with
the scrape-time ``collectors`` and the backend ``poller``), ``sections`` (the part of
the settings each package receives) and ``cli``. No other package of ``app`` imports
it."""

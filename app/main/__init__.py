"""Composition roots: where the service's parts are chosen from the settings and wired
together — ``collector`` (source, refresher, warming; ``sources`` picks the market
source) and ``collector_process`` (it as ``virtuoso collect``), ``server`` (the Quart
app, its routes, realtime and alert service) and ``server_app`` (serving alone),
``embedded`` (both in one process, the default), ``supervisor`` (a server's collector
child), ``alerting`` (the alert service both roles build), ``telemetry`` and
``collector_telemetry`` (the metrics wiring, with the scrape-time ``collectors`` and the
backend ``poller``), ``sections`` (the part of the settings each package receives) and
``cli``. No other package of ``app`` imports it."""

"""Market data sources: the :class:`~app.market.sources.base.MarketSource` interface
and its implementations (``simulated``, ``ccxt``), plus ``guarded``, a source that wraps
another with timeouts, retries and breakers. Which one runs is chosen by the
composition root (``app.main.sources.make_source``)."""

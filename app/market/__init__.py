"""Market data: where it comes from and what is derived from it.

Two rooms and what they share. ``sources/`` fetches tickers, candles and order books
(the interface, the simulated market, ccxt, and the guarded wrapper); ``analytics/``
derives indicators, confluence, beta and the overview from them, purely. Both use the
value types of ``models`` (one a module; those without numpy are all a serving process
loads of the market), and sources raise the errors of ``errors``; ``listing`` tracks
which configured symbols a source still serves; ``simulated_universe`` lists the
simulated market's pairs as data. Analytics never import sources, and nothing here
imports the cache, the settings, the services or the web.
"""

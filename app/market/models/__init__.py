"""Market value types, one concept a module, shared by the sources, the analytics, the
services and the web.

The numpy-free ones (``symbols``, ``timeframes``, ``ticker``, ``confluence_weights``)
are what a serving process may import; ``candles`` and ``order_book`` hold numpy arrays
and belong to the collecting side (sources, analytics, the snapshot pipeline).
"""

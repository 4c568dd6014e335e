"""Pure market analytics: candles, tickers and order books in (numpy arrays, TA-Lib),
frozen dataclasses out. No I/O, no clock, no cache or settings: what varies (weights,
windows) is an argument."""

"""The symbols the benchmark trades: the service's 25 defaults."""

SYMBOLS = [
    "BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "BNBUSDT", "DOGEUSDT", "ADAUSDT", "AVAXUSDT",
    "LINKUSDT", "DOTUSDT", "TRXUSDT", "TONUSDT", "LTCUSDT", "BCHUSDT", "NEARUSDT", "APTUSDT",
    "SUIUSDT", "ARBUSDT", "OPUSDT", "PEPEUSDT", "ATOMUSDT", "FILUSDT", "INJUSDT", "SEIUSDT",
    "WLDUSDT",
]  # fmt: skip

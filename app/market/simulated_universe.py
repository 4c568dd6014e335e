"""The simulated market's pairs as plain data: start price, true beta to BTC,
idiosyncratic volatility and daily turnover of each. The simulated source
(``app.market.sources.simulated``) trades them; the settings check configured symbols
against them without loading the source (or numpy)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SimulatedAsset:
    """One simulated pair: start price, true beta to BTC, idiosyncratic annual
    volatility and typical daily quote (USD) turnover."""

    symbol: str
    price: float
    beta: float
    idio_vol: float
    daily_turnover: float


SIMULATED_UNIVERSE: tuple[SimulatedAsset, ...] = (
    SimulatedAsset("BTCUSDT", 97_000.0, 1.0, 0.0, 1.2e9),
    SimulatedAsset("ETHUSDT", 3_400.0, 1.15, 0.35, 5.0e8),
    SimulatedAsset("SOLUSDT", 190.0, 1.35, 0.50, 2.5e8),
    SimulatedAsset("XRPUSDT", 2.30, 0.95, 0.55, 2.0e8),
    SimulatedAsset("BNBUSDT", 650.0, 0.75, 0.30, 8.0e7),
    SimulatedAsset("DOGEUSDT", 0.32, 1.45, 0.60, 1.2e8),
    SimulatedAsset("ADAUSDT", 0.90, 1.20, 0.50, 6.0e7),
    SimulatedAsset("AVAXUSDT", 38.0, 1.50, 0.55, 5.0e7),
    SimulatedAsset("LINKUSDT", 22.0, 1.30, 0.50, 4.0e7),
    SimulatedAsset("DOTUSDT", 6.5, 1.25, 0.50, 2.5e7),
    SimulatedAsset("TRXUSDT", 0.24, 0.45, 0.35, 2.0e7),
    SimulatedAsset("TONUSDT", 5.2, 0.80, 0.50, 2.0e7),
    SimulatedAsset("LTCUSDT", 105.0, 0.95, 0.45, 2.5e7),
    SimulatedAsset("BCHUSDT", 450.0, 1.00, 0.45, 1.5e7),
    SimulatedAsset("NEARUSDT", 5.5, 1.35, 0.60, 2.0e7),
    SimulatedAsset("APTUSDT", 9.5, 1.40, 0.60, 1.5e7),
    SimulatedAsset("SUIUSDT", 4.2, 1.60, 0.70, 6.0e7),
    SimulatedAsset("ARBUSDT", 0.75, 1.45, 0.60, 1.5e7),
    SimulatedAsset("OPUSDT", 1.9, 1.50, 0.60, 1.2e7),
    SimulatedAsset("PEPEUSDT", 0.000018, 1.80, 0.90, 5.0e7),
    SimulatedAsset("ATOMUSDT", 6.8, 1.10, 0.50, 8.0e6),
    SimulatedAsset("FILUSDT", 5.3, 1.20, 0.55, 6.0e6),
    SimulatedAsset("INJUSDT", 24.0, 1.55, 0.70, 5.0e6),
    SimulatedAsset("SEIUSDT", 0.45, 1.60, 0.75, 8.0e5),
    SimulatedAsset("WLDUSDT", 2.1, 1.40, 0.80, 6.0e5),
)

TRUE_BETAS: dict[str, float] = {asset.symbol: asset.beta for asset in SIMULATED_UNIVERSE}

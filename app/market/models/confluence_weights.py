"""The confluence score's configuration as plain data: the six components' names,
their weights and the timeframes' weights, and the signal thresholds (score points,
0-100). Validated here, so the settings can check a configuration without the
analytics (``app.market.analytics.confluence`` takes a ``ConfluenceWeights``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from app.market.models.timeframes import TIMEFRAME_SECONDS

COMPONENTS: tuple[str, ...] = (
    "technical",
    "volume",
    "orderflow",
    "sentiment",
    "orderbook",
    "price_structure",
)

DEFAULT_COMPONENT_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {
        "orderflow": 0.30,
        "orderbook": 0.20,
        "volume": 0.18,
        "price_structure": 0.15,
        "technical": 0.10,
        "sentiment": 0.07,
    }
)
DEFAULT_TIMEFRAME_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {"1m": 0.4, "5m": 0.3, "30m": 0.2, "4h": 0.1}
)
LONG_THRESHOLD = 70.0
SHORT_THRESHOLD = 35.0


@dataclass(frozen=True)
class ConfluenceWeights:
    """Component and timeframe weights plus signal thresholds.

    Weights need not sum to 1 (they are normalised at use, over what is available);
    they must be finite and non-negative with at least one positive. Missing
    components / timeframes weigh 0; unknown names are rejected.
    """

    components: Mapping[str, float] = field(default_factory=lambda: DEFAULT_COMPONENT_WEIGHTS)
    timeframes: Mapping[str, float] = field(default_factory=lambda: DEFAULT_TIMEFRAME_WEIGHTS)
    long_threshold: float = LONG_THRESHOLD
    short_threshold: float = SHORT_THRESHOLD

    def __post_init__(self) -> None:
        object.__setattr__(self, "components", _checked(self.components, COMPONENTS, "component"))
        object.__setattr__(
            self, "timeframes", _checked(self.timeframes, tuple(TIMEFRAME_SECONDS), "timeframe")
        )
        low, high = self.short_threshold, self.long_threshold
        if not (math.isfinite(low) and math.isfinite(high) and 0 <= low < high <= 100):
            raise ValueError(f"need 0 <= short < long threshold <= 100, got {low}, {high}")

    @classmethod
    def default(cls) -> ConfluenceWeights:
        return cls()


def _checked(
    weights: Mapping[str, float], known: tuple[str, ...], kind: str
) -> Mapping[str, float]:
    unknown = set(weights) - set(known)
    if unknown:
        raise ValueError(
            f"unknown {kind}(s): {', '.join(sorted(unknown))}; valid: {', '.join(known)}"
        )
    values = {name: float(weights[name]) for name in known if name in weights}
    if any(not math.isfinite(w) or w < 0 for w in values.values()):
        raise ValueError(f"{kind} weights must be finite and non-negative: {values}")
    if not any(w > 0 for w in values.values()):
        raise ValueError(f"at least one {kind} weight must be positive")
    return MappingProxyType(values)

"""An alert's words and numbers: the message a threshold rule's alert carries and the
``values`` recorded with it, each value with its unit.

Messages follow one pattern per family, e.g. ``BTCUSDT at or above 61000: 61500 (1m
high; last 60000)``, ``BTCUSDT 24h change at or below -5%: -5.2%``, ``BTCUSDT confluence
72 at or above the long threshold 70``, ``BTCUSDT funding 0.0612 % at or above 0.0500 %
per interval``, ``BTCUSDT 1h open interest change 6.2 % at or above 5 %``,
``BTCUSDT long/short ratio 2.35 at or above 2``, ``BTCUSDT orderflow component 82.5 at
or above 80``.
"""

from __future__ import annotations

from typing import Any

from app.services.alerts.conditions import Condition, fixed, number

LAST = "last price"


def threshold_alert(
    condition: Condition, symbol: str, price: float, value: float, where: str
) -> tuple[dict[str, Any], str]:
    """The ``values`` and message of an alert that fired at ``value`` (seen at
    ``where``: "last price", "1m high", …) for ``symbol`` whose last price is ``price``."""
    side = "above" if condition.direction > 0 else "below"
    t, s, family = condition.threshold, symbol, condition.family
    values: dict[str, Any] = {"threshold": t, "hysteresis": condition.hysteresis}
    if family == "price":
        values.update(price=value, last_price=price, observed=where)
        message = f"{s} at or {side} {number(t)}: {number(value)}"
        if where != LAST:
            last = "" if value == price else f"; last {number(price)}"
            message += f" ({where}{last})"
    elif family == "change":
        values.update(change_24h_pct=value, last_price=price, observed=where)
        message = f"{s} 24h change at or {side} {number(t)}%: {number(round(value, 4))}%"
        if where != LAST:
            message += f" ({where})"
    elif family == "confluence":
        values.update(confluence_score=value)
        target = "long" if condition.direction > 0 else "short"
        message = f"{s} confluence {number(value)} at or {side} the {target} threshold {number(t)}"
    elif family == "funding":
        values.update(funding_rate=value, funding_rate_pct=round(value * 100, 10))
        message = f"{s} funding {percent(value)} % at or {side} {percent(t)} % per interval"
    elif family == "open_interest_change":
        values.update(open_interest_change_pct_1h=value)
        message = (
            f"{s} 1h open interest change {number(round(value, 4))} % at or {side} {number(t)} %"
        )
    elif family == "long_short":
        values.update(long_short_ratio=value)
        message = f"{s} long/short ratio {number(round(value, 6))} at or {side} {number(t)}"
    else:
        values.update(component=condition.component, component_score=value)
        message = (
            f"{s} {condition.component} component {number(round(value, 2))} "
            f"at or {side} {number(t)}"
        )
    return values, message


def percent(fraction: float) -> str:
    """A fraction in percent with at least 4 decimals and no digit lost: 0.000612 →
    "0.0612", 0.0005 → "0.0500", 0.00012345 → "0.012345"."""
    pct = round(fraction * 100, 10)
    text = f"{pct:.4f}"
    if float(text) == pct:
        return text
    return fixed(pct)

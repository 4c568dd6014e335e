"""The desktop dashboard view, computed the way the service's pipeline computes it.

One fresh snapshot (a new SnapshotCollector, so every candle is fetched), the analysis
and the views, in worker threads like the pipeline's: the expensive computation
(50–100 ms) every baseline repeats on its cache misses.
"""

from __future__ import annotations

import argparse
import asyncio
import weakref

import orjson

from app.main.collector import pipeline_settings
from app.market.sources.simulated import SimulatedMarket
from app.services.analysis import analyse
from app.services.catalogue import DESKTOP
from app.services.snapshot import SnapshotCollector
from app.services.views import ViewSettings, build_views
from app.settings import Settings, load_settings

VIEW = DESKTOP.name
PATH = DESKTOP.route

# The start of each market (its history, about half a second), shared by concurrent callers.
_starts: weakref.WeakKeyDictionary[SimulatedMarket, asyncio.Task[None]] = (
    weakref.WeakKeyDictionary()
)


def make_market(settings: Settings) -> SimulatedMarket:
    """The service's simulated market for these settings (not started yet)."""
    return SimulatedMarket(seed=settings.seed)


async def start_market(market: SimulatedMarket) -> None:
    """Builds the market's history once, however many callers ask at the same time."""
    task = _starts.get(market)
    if task is None or (task.done() and (task.cancelled() or task.exception())):
        task = asyncio.ensure_future(market.start())
        _starts[market] = task
    await asyncio.shield(task)


async def compute_desktop_view(settings: Settings, market: SimulatedMarket) -> dict:
    """The ``dashboard:desktop`` payload of one fresh snapshot, as plain JSON types
    (what the service publishes: orjson with numpy values, NaN as null)."""
    await start_market(market)
    symbols = [s for s in settings.symbols if s in market.listed_symbols()]
    collector = SnapshotCollector(
        market,
        symbols,
        settings.candle_limits,
        settings.refresh_seconds,
        settings.order_book_depth,
        clock=market.clock,
    )
    snapshot = await collector.collect()
    sections = pipeline_settings(settings)
    analysis = await asyncio.to_thread(analyse, snapshot, sections.analysis)
    return await asyncio.to_thread(_desktop, snapshot, analysis, sections.views)


def _desktop(snapshot, analysis, settings: ViewSettings) -> dict:
    payload = build_views(snapshot, analysis, settings, [])[VIEW]
    # The service's encoding, read back: plain dicts, lists, floats, ints, str and None.
    return orjson.loads(orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY))


def baseline_settings(symbols: str | None = None) -> Settings:
    """The service's defaults (25 symbols, seed 7), or these comma-separated symbols."""
    environ = {"VIRTUOSO_SYMBOLS": symbols} if symbols else {}
    return load_settings(environ=environ)


def parser(description: str | None) -> argparse.ArgumentParser:
    """The baselines' common flags: --port and --symbols."""
    arguments = argparse.ArgumentParser(description=description)
    arguments.add_argument("--port", type=int, required=True, help="port on 127.0.0.1")
    arguments.add_argument("--symbols", help="comma-separated symbols (default: the 25)")
    return arguments

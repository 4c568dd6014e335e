"""The audit's baseline: the caching pattern the audits criticised, done faithfully.

Per request to ``GET /api/dashboard/data``: a NEW Memcached client (closed after the
request), a ``get``; on a hit the stored JSON is parsed and serialized again with the
stdlib ``json``; on a miss the view is computed (no single-flight: every concurrent
missing request computes it), serialized with ``json.dumps`` and stored for 5 seconds.
Quart on hypercorn, configured as the service (one worker, uvloop, access log off).

``python -m bench.baselines.naive --port P --memcached HOST:PORT [--symbols A,B]``
"""

from __future__ import annotations

import argparse
import json
import sys

import aiomcache
from quart import Quart, Response

from app.market.sources.simulated import SimulatedMarket
from app.settings import Settings, parse_bind
from bench.baselines.ceiling import run_quart
from bench.baselines.views import (
    PATH,
    VIEW,
    baseline_settings,
    compute_desktop_view,
    make_market,
    parser,
    start_market,
)

KEY = f"bench:naive:{VIEW}".encode()  # apart from the service's keys (namespaced)
TTL_SECONDS = 5


def create_app(settings: Settings, market: SimulatedMarket, memcached: str) -> Quart:
    host, port = parse_bind(memcached)
    app = Quart(__name__)

    @app.get(PATH)
    async def dashboard_data() -> Response:
        client = aiomcache.Client(host, port)
        try:
            stored = await client.get(KEY)
            if stored is not None:
                body = json.dumps(json.loads(stored))
            else:
                body = json.dumps(await compute_desktop_view(settings, market))
                await client.set(KEY, body.encode(), exptime=TTL_SECONDS)
        finally:
            await client.close()
        return Response(body, status=200, content_type="application/json")

    return app


def _address(value: str) -> str:
    try:
        parse_bind(value)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return value


def main(argv: list[str] | None = None) -> int:
    arguments = parser(__doc__)
    arguments.add_argument("--memcached", required=True, type=_address, help="host:port")
    args = arguments.parse_args(argv)
    settings = baseline_settings(args.symbols)

    async def build() -> Quart:
        market = make_market(settings)
        await start_market(market)  # the history, once: misses then cost the view only
        return create_app(settings, market, args.memcached)

    return run_quart(args.port, build)


if __name__ == "__main__":
    sys.exit(main())

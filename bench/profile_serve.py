"""Where the external server's time goes under the polling load: ``virtuoso serve``
(VIRTUOSO_COLLECTOR=external) under cProfile, a separate ``virtuoso collect`` on the
fake exchange, both on Memcached + Redis, and 800 req/s (open loop) of the desktop view.

    python -m bench.profile_serve [--seconds 20] [--rate 800] [--refresh 5] [--out DIR]

Prints the top functions by own time and by cumulative time; the raw profile is
DIR/serve.prof (read it with ``python -m pstats``). cProfile slows Python code down
(every call is counted), so read the shares, not the absolute times.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import pstats
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from bench import procs
from bench.loadgen.http import Request, open_loop

DESKTOP = "/api/dashboard/data"


async def wait_ready(base: str, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                async with session.get(f"{base}/health/ready") as response:
                    if response.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError(f"{base} did not become ready")


async def profile(seconds: float, rate: float, refresh: float, out: Path) -> str:
    exchange = procs.exchange()
    memcached, redis = procs.memcached(out), procs.redis(out)
    env = procs.tier_env(f"127.0.0.1:{memcached.port}", f"127.0.0.1:{redis.port}")
    env["VIRTUOSO_REFRESH_SECONDS"] = str(refresh)
    started: list = [memcached, redis]
    prof = out / "serve.prof"
    try:
        started.append(procs.collector(out, "collector", exchange.url, env))
        cprofile = (sys.executable, "-m", "cProfile", "-o", str(prof))
        server = procs.external_server(out, "server", env, cprofile)
        started.append(server)
        base = f"http://127.0.0.1:{server.port}"
        await wait_ready(base)
        await open_loop(base, lambda _i: Request(DESKTOP), 100, 2)  # warm
        result = await open_loop(base, lambda _i: Request(DESKTOP), rate, seconds,
                                 max_in_flight=200)  # fmt: skip
        summary = result.summary()
        server.stop()  # SIGTERM: a clean exit writes the profile
    finally:
        for process in reversed(started):
            process.stop()
        exchange.stop()
    text = io.StringIO()
    text.write(f"load: {summary['throughput_rps']} req/s, latency {summary['latency_ms']}\n")
    stats = pstats.Stats(str(prof), stream=text)
    stats.sort_stats("tottime").print_stats(35)
    stats.sort_stats("cumulative").print_stats(45)
    return text.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--rate", type=float, default=800)
    parser.add_argument("--refresh", type=float, default=5)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp(prefix="virtuoso-profile-"))
    out.mkdir(parents=True, exist_ok=True)
    print(asyncio.run(profile(args.seconds, args.rate, args.refresh, out)))
    print(f"profile: {out / 'serve.prof'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

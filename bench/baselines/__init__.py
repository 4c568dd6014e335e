"""The servers ``make bench`` compares ours with, all serving the same view from the same data.

``GET /api/dashboard/data`` (the desktop dashboard, ~17 KB of JSON) computed from the
simulated market exactly as the service computes it (``bench.baselines.views``):

- ``ceiling``: a bare Quart app on hypercorn answering constant bytes: the upper bound
  of any cache on this stack.
- ``naive``: the pattern the audits criticised: a new Memcached client per request,
  JSON parsed and re-serialized per request, a 5 s TTL, no single-flight on misses.
- ``fastapi_cashews``: what a user would pick instead: FastAPI on uvicorn with cashews
  caching on Redis (20 s TTL, the dict serialized by FastAPI per request).

Each runs as ``python -m bench.baselines.<name> --port P [...]`` on 127.0.0.1:P until
SIGTERM or SIGINT, and exits 0.
"""

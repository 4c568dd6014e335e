"""Load generators of the benchmark suite (``make bench``).

They run in their own process next to the server under test, so they are lean
(one event loop, one HTTP session, orjson, no per-message objects beyond what is
counted), bounded in time and count, and report the CPU time they used themselves:

* :mod:`bench.loadgen.http` — closed- and open-loop HTTP load (the open loop measures
  latency from each request's scheduled time, so queueing is not hidden), the
  standard dashboard workload, and a ``wrk`` runner with its output parser;
* :mod:`bench.loadgen.ws` — WebSocket fan-out: many reading clients (reach, delivery
  latency from the server's ``published_at``) and clients that stop reading;
* :mod:`bench.loadgen.stats` — nearest-rank percentiles, latency summaries, CPU time.
"""

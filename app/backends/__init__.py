"""The bottom layer: plumbing to the service's backing servers, with no cache, session or
rate-limit semantics and no imports from the rest of ``app``.

Read it one way down, as redis-py reads client → connection → exceptions:

* ``connection.py``: the process's one Redis client (``connect_redis``);
* ``guard.py``: every Redis call's time bound, circuit breaker (any object with the
  ``Breaker`` shape; the service passes ``app.resilience``'s) and error mapping;
* ``subscriber.py``: a pub/sub listener that reconnects by itself and names its channel;
* ``locks.py``: fenced distributed locks, handed their client and guard;
* ``errors.py``: what every backend raises (``TierUnavailable``) and how Redis and socket
  errors map to it.

The cache, sessions, alert store, refresh coordination, rate limits and live updates
build on these; none of them imports another's internals for its Redis plumbing.
"""

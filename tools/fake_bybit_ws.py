"""Bybit v5 public WebSocket streams for the loopback fake exchange (``FakeBybit``).

Served on the fake's own port at ``/v5/public/spot`` and ``/v5/public/linear``, speaking
the protocol as Bybit sends it and as ``ccxt.pro.bybit`` parses it:

- client → server: ``{"op": "subscribe" | "unsubscribe", "args": [topic, ...],
  "req_id": ...}`` and ``{"op": "ping", "req_id": ...}``;
- server → client: the ack ``{"success": true, "ret_msg": "", "conn_id": ..., "req_id":
  ..., "op": "subscribe"}`` (``success: false`` and Bybit's ``ret_msg`` for a refusal:
  more than 10 args in one request on spot, an unknown topic or symbol, a topic already
  subscribed, the per-connection topic bound), the pong ``{"success": true, "ret_msg":
  "pong", "conn_id": ..., "req_id": ..., "op": "ping"}``, and data messages
  ``{"topic", "type", "ts", "data", ...}`` for the topics ``tickers.<SYMBOL>``,
  ``kline.<interval>.<SYMBOL>`` (``confirm`` false while forming, true once closed),
  ``orderbook.<depth>.<SYMBOL>`` (a snapshot, then deltas with increasing ``u`` and
  ``seq``), ``publicTrade.<SYMBOL>`` and, on the linear stream,
  ``allLiquidation.<SYMBOL>`` (sent by ``send_liquidation``). Times (``ts``, ``cts``,
  a trade's ``T``) are epoch milliseconds from the fake's clock.

Data comes from the REST fake's state, so a ticker or candle on a stream equals what
``/v5/market/...`` serves at that moment. Each new subscription gets the topic's
current state at once (ticker, forming candle, book snapshot; trades wait for the next
trade). Spot tickers carry no best bid/ask (Bybit's spot stream does not either);
linear tickers are a snapshot, then deltas holding only the fields that changed.

Controls for tests (all coroutines send before they return): ``set_price`` (a price at
once: ticker, trade, candle and book update), ``tick`` / ``start_ticking`` (move every
symbol a little, several times a second), ``drop_all`` (close every connection),
``silence`` / ``resume`` (the socket stays open, no data flows; pongs and
subscription requests optionally go unanswered too), ``forget`` (the server drops
subscriptions without telling the client), ``close_after_subscribe`` (each
subscription is answered, then the connection closed: a reconnect storm),
``skip_update`` (the next book update of a symbol is lost, so the one after jumps
``u`` by 2), ``send_trade`` (one public trade with the fields given, e.g. a bad price
or a time from the future), ``send_ticker`` (one ticker with fields overridden, e.g.
``lastPrice="0"``, or a ``ts`` from the future), ``send_book_delta`` (one book delta
with the levels given and the next update id, e.g. one that crosses the book),
``send_raw`` (any data message on a topic, as given), ``send_liquidation`` (one
liquidation on the linear stream), ``resnapshot`` (a fresh book snapshot, as Bybit
sends after a restart). The ``send_*`` controls leave the fake's own prices alone.
``received`` records every client message, ``sent`` the recent server messages.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import random
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from tools.fake_bybit import INTERVAL_MS, LINEAR_QUOTES

if TYPE_CHECKING:
    from tools.fake_bybit import FakeBybit

SPOT_PATH = "/v5/public/spot"
LINEAR_PATH = "/v5/public/linear"
PATHS: dict[str, str] = {SPOT_PATH: "spot", LINEAR_PATH: "linear"}

LIQUIDATION_KIND = "allLiquidation"
"""The linear stream's liquidation topic kind (``allLiquidation.<SYMBOL>``)."""
SPOT_MAX_ARGS = 10
"""Bybit's spot public stream refuses a subscribe request with more args than this."""
ARGS_TOO_MANY = "args size >10"
DEFAULT_MAX_TOPICS = 200
"""Topics one connection may hold in this fake (Bybit bounds it; the number is ours)."""
BOOK_DEPTHS: dict[str, tuple[int, ...]] = {"spot": (1, 50, 200), "linear": (1, 50, 200)}
"""Depths served (Bybit also has 1000; the REST fake's book has 200 levels)."""
_TICKER_FIELDS_SPOT = (
    "symbol",
    "lastPrice",
    "highPrice24h",
    "lowPrice24h",
    "prevPrice24h",
    "volume24h",
    "turnover24h",
    "price24hPcnt",
    "usdIndexPrice",
)


@dataclass
class ReceivedMessage:
    """One message a client sent: which endpoint, which connection, and the JSON."""

    category: str
    conn_id: str
    message: dict[str, Any]


@dataclass(eq=False)
class _Conn:
    ws: web.WebSocketResponse
    request: web.Request
    category: str
    conn_id: str
    topics: set[str] = field(default_factory=set)
    book_views: dict[str, dict[str, dict[str, str]]] = field(default_factory=dict)
    tickers: dict[str, dict[str, str]] = field(default_factory=dict)
    kline_buckets: dict[str, int] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    ended: asyncio.Event = field(default_factory=asyncio.Event)

    async def send(self, message: dict[str, Any]) -> bool:
        """Send ``message``; False if the connection is gone."""
        if self.ws.closed:
            return False
        async with self.lock:
            try:
                await self.ws.send_str(json.dumps(message))
            except (ConnectionError, RuntimeError):
                return False
        return True


class BybitStreams:
    """The public WebSocket side of a ``FakeBybit`` (see the module docstring)."""

    def __init__(self, fake: FakeBybit, *, max_topics: int = DEFAULT_MAX_TOPICS) -> None:
        """``max_topics``: how many topics one connection may hold."""
        self.fake = fake
        self.max_topics = max_topics
        self.received: list[ReceivedMessage] = []
        """Every message clients sent, in arrival order (pings included)."""
        self.sent: deque[dict[str, Any]] = deque(maxlen=5_000)
        """The server's most recent messages (acks, pongs and data), oldest first."""
        self.connections_opened = 0
        self.silent = False
        self.answer_pings = True
        self.answer_requests = True
        self.close_after_subscribe = False
        self._conns: set[_Conn] = set()
        self._ids = itertools.count(1)
        self._update_ids: dict[tuple[str, str, int], int] = {}  # (category, symbol, depth) → u
        self._seq: dict[str, int] = {}
        self._skips: dict[str, int] = {}
        self._trade_ids = itertools.count(1)
        self._rng = random.Random(f"{fake.seed}:streams")
        self._ticker_task: asyncio.Task[None] | None = None
        self._stop_ticking = asyncio.Event()

    # ----- wiring ----------------------------------------------------------------

    def install(self, app: web.Application) -> None:
        """Route the stream paths of ``app`` here."""
        for path in PATHS:
            app.router.add_get(path, self._handle)

    @staticmethod
    def serves(path: str) -> bool:
        """Whether ``path`` is one of the stream endpoints."""
        return path in PATHS

    def url(self, category: str = "spot") -> str:
        """The stream URL of ``category`` (``spot`` or ``linear``) on the started fake."""
        path = {value: key for key, value in PATHS.items()}[category]
        return self.fake.ws_url + path

    @property
    def connections(self) -> int:
        """Open connections."""
        return sum(1 for conn in self._conns if not conn.ws.closed)

    def subscribed(self, category: str | None = None) -> set[str]:
        """Topics held by open connections (of ``category``, or all)."""
        return {
            topic
            for conn in self._conns
            if category in (None, conn.category)
            for topic in conn.topics
        }

    async def close(self) -> None:
        """Stop ticking and close every connection (the fake is stopping)."""
        await self.stop_ticking()
        await self.drop_all()

    # ----- controls --------------------------------------------------------------

    async def set_price(self, symbol: str, price: float) -> None:
        """``symbol`` trades at ``price`` now: the REST fake's ticker, candles and book
        follow (``FakeBybit.pin``), and subscribers get a ticker, a trade, the forming
        candle of each subscribed interval and a book update."""
        self.fake.pin(symbol, price)
        self.fake.rebuild_book(symbol)
        await self._publish(symbol, with_trade=True)

    async def tick(self, symbols: Iterable[str] | None = None, *, max_move: float = 5e-4) -> None:
        """Move each of ``symbols`` (default: all served) by a seeded random step of at
        most ``max_move`` (a fraction; at least one price tick) and publish it."""
        for symbol in list(symbols or self.fake.symbols):
            if not self.fake.is_served(symbol):
                continue
            last = float(self.fake.tickers[symbol]["lastPrice"])
            decimals = _decimals(self.fake.tickers[symbol]["lastPrice"])
            step = 10.0**-decimals
            moved = round(last * (1 + self._rng.uniform(-max_move, max_move)), decimals)
            if moved == last:
                moved = round(last + step * self._rng.choice((-1, 1)), decimals)
            await self.set_price(symbol, moved)

    async def start_ticking(self, per_second: float = 5.0) -> None:
        """``tick`` all symbols ``per_second`` times a second until ``stop_ticking``."""
        await self.stop_ticking()
        stop = self._stop_ticking = asyncio.Event()

        async def loop() -> None:
            while not stop.is_set():
                await self.tick()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 1.0 / per_second)

        self._ticker_task = asyncio.create_task(loop())

    async def stop_ticking(self) -> None:
        """End ``start_ticking``'s loop once its current tick is sent (no-op when not
        ticking): every price the REST fake holds has then been published."""
        task, self._ticker_task = self._ticker_task, None
        if task is not None:
            self._stop_ticking.set()
            await task

    async def drop_all(self, *, abrupt: bool = False) -> int:
        """Close every connection: a close frame (code 1001, "going away"; returns once
        each client has answered it, or after 5 s), or with ``abrupt`` the TCP
        connection cut without one. Returns how many were open."""
        conns = [conn for conn in self._conns if not conn.ws.closed]
        for conn in conns:
            if abrupt:
                transport = conn.request.transport
                if transport is not None:
                    transport.abort()
            else:
                with contextlib.suppress(ConnectionError, RuntimeError):
                    await conn.ws.close(code=1001, message=b"going away")
        waits = [asyncio.create_task(conn.ended.wait()) for conn in conns]
        if waits:
            _, late = await asyncio.wait(waits, timeout=5)
            for wait in late:
                wait.cancel()
        return len(conns)

    def silence(self, *, pongs: bool = True, requests: bool = True) -> None:
        """Stop sending data (sockets stay open; acks still answered). ``pongs=False``
        also leaves pings unanswered, so a client's keepalive can notice;
        ``requests=False`` leaves subscribe and unsubscribe requests unanswered and
        without effect (a connection dead to everything but pings)."""
        self.silent = True
        self.answer_pings = pongs
        self.answer_requests = requests

    def resume(self) -> None:
        """Undo ``silence``: the next update flows again (books as deltas against what
        each connection last received, so they stay consistent)."""
        self.silent = False
        self.answer_pings = True
        self.answer_requests = True

    def forget(self, symbols: Iterable[str] | None = None) -> int:
        """Drop every connection's subscriptions to the topics of ``symbols`` (default:
        all) without a word to the client, as a gateway that lost its state would: no
        data flows on them until the client subscribes again. Returns how many
        subscriptions were dropped."""
        wanted = None if symbols is None else set(symbols)
        dropped = 0
        for conn in list(self._conns):
            for topic in sorted(conn.topics):
                if wanted is None or _parse(topic)[2] in wanted:
                    self._drop_topic(conn, topic)
                    dropped += 1
        return dropped

    def skip_update(self, symbol: str, times: int = 1) -> None:
        """Lose the next ``times`` order-book updates of ``symbol`` (on every depth and
        connection): generated and counted in ``u``/``seq`` but never sent, so the next
        delta that arrives has ``u`` more than 1 above the previous one."""
        self._skips[symbol] = self._skips.get(symbol, 0) + times

    async def resnapshot(self, symbol: str) -> None:
        """Send a fresh ``snapshot`` to every order-book subscriber of ``symbol``."""
        for conn in list(self._conns):
            for topic in sorted(conn.topics):
                kind, depth, topic_symbol = _parse(topic)
                if kind == "orderbook" and topic_symbol == symbol:
                    await self._send_book(conn, topic, symbol, int(depth), snapshot=True)

    async def send_trade(
        self,
        symbol: str,
        *,
        price: str,
        size: str,
        side: str = "Buy",
        at_ms: int | None = None,
    ) -> dict[str, Any]:
        """Send one public trade of ``symbol`` with exactly these fields (strings as
        Bybit sends them, e.g. a bad ``price="0"`` or ``size="-1"``; ``at_ms``: its
        time ``T``, default now) to its trade subscribers, leaving the fake's prices
        alone; returns the trade sent."""
        trade = self._trade(symbol) | {"p": price, "v": size, "S": side}
        if at_ms is not None:
            trade["T"] = at_ms
        await self.send_raw(f"publicTrade.{symbol}", [trade])
        return trade

    async def send_liquidation(
        self, symbol: str, side: str, price: str, size: str, *, at_ms: int | None = None
    ) -> dict[str, Any]:
        """Send one liquidation of ``symbol``'s perpetual on the linear stream's
        ``allLiquidation.<SYMBOL>`` topic, as Bybit does: ``S`` is the side of the
        liquidated position (``"Buy"``: a long was liquidated), ``v`` its size
        (contracts), ``p`` the price, ``T`` the time (default the fake's now); strings
        are sent verbatim (a bad ``price="0"``). Returns the entry sent."""
        entry = {
            "T": self.fake.now_ms() if at_ms is None else at_ms,
            "s": symbol,
            "S": side,
            "v": size,
            "p": price,
        }
        if not self.silent:
            topic = f"{LIQUIDATION_KIND}.{symbol}"
            for conn in list(self._conns):
                if conn.category == "linear" and topic in conn.topics:
                    await self._send(conn, self._envelope(topic, "snapshot", [entry]))
        return entry

    async def send_ticker(
        self, symbol: str, *, ts: int | None = None, **fields: str | None
    ) -> dict[str, Any]:
        """Send one spot ticker of ``symbol``: its current fields with ``fields``
        overridden exactly as given (``lastPrice="0"``, ``lastPrice=None`` for null,
        ``lastPrice="1e308"``), stamped ``ts`` (default now), to its ticker
        subscribers; returns the data sent."""
        ticker = self.fake.tickers[symbol]
        data = {name: ticker.get(name, "") for name in _TICKER_FIELDS_SPOT} | fields
        await self.send_raw(f"tickers.{symbol}", data, ts=ts, cs=self._next_seq(symbol))
        return data

    async def send_book_delta(
        self,
        symbol: str,
        *,
        bids: Sequence[Sequence[str]] = (),
        asks: Sequence[Sequence[str]] = (),
        ts: int | None = None,
    ) -> None:
        """Send one order-book delta of ``symbol`` with these levels (``[price, size]``
        strings; size ``"0"`` deletes) and the next update id to every order-book
        subscriber (each connection's view takes the levels, so the deltas after it
        stay consistent with what it received), stamped ``ts`` (default now)."""
        if self.silent:
            return
        for conn in list(self._conns):
            for topic in sorted(conn.topics):
                kind, depth, topic_symbol = _parse(topic)
                view = conn.book_views.get(topic)
                if kind != "orderbook" or topic_symbol != symbol or view is None:
                    continue
                key = (conn.category, symbol, int(depth))
                self._update_ids[key] = self._update_ids.get(key, 1) + 1
                for side, levels in (("b", bids), ("a", asks)):
                    for price, size in levels:
                        if float(size) == 0:
                            view[side].pop(price, None)
                        else:
                            view[side][price] = size
                data = {"s": symbol, "b": [list(b) for b in bids], "a": [list(a) for a in asks]}
                data |= {"u": self._update_ids[key], "seq": self._next_seq(symbol)}
                message = self._envelope(topic, "delta", data, cts=self.fake.now_ms() - 1)
                if ts is not None:
                    message["ts"] = ts
                await self._send(conn, message)

    async def send_raw(
        self, topic: str, data: Any, *, kind: str = "snapshot", ts: int | None = None, **extra: Any
    ) -> int:
        """Send one data message ``{"topic", "type": kind, "ts", "data", **extra}`` with
        ``data`` exactly as given to every subscriber of ``topic`` (``ts`` default now);
        nothing while silenced. Returns how many connections it was sent to."""
        if self.silent:
            return 0
        message = self._envelope(topic, kind, data, **extra)
        if ts is not None:
            message["ts"] = ts
        sent = 0
        for conn in list(self._conns):
            if topic in conn.topics:
                await self._send(conn, message)
                sent += 1
        return sent

    def book_update_id(self, symbol: str, depth: int, category: str = "spot") -> int:
        """The last ``u`` of ``symbol``'s book at ``depth`` (0: none yet)."""
        return self._update_ids.get((category, symbol, depth), 0)

    # ----- connection handling ----------------------------------------------------

    async def _handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(autoping=True, heartbeat=None)
        await ws.prepare(request)
        conn_id = f"fake-{next(self._ids)}-{self.fake.seed}"
        conn = _Conn(ws, request, PATHS[request.path], conn_id)
        self._conns.add(conn)
        self.connections_opened += 1
        try:
            async for frame in ws:
                if frame.type != WSMsgType.TEXT:
                    continue
                await self._on_text(conn, frame.data)
        finally:
            self._conns.discard(conn)
            conn.ended.set()
        return ws

    async def _on_text(self, conn: _Conn, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            await self._reply(conn, self._invalid_op(conn, {"op": "", "args": None}))
            return
        self.received.append(ReceivedMessage(conn.category, conn.conn_id, message))
        op = message.get("op")
        if op == "ping":
            if self.answer_pings:
                await self._reply(conn, self._ack(conn, message, "pong", op="ping"))
        elif op in ("subscribe", "unsubscribe") and not self.answer_requests:
            return
        elif op == "subscribe":
            await self._subscribe(conn, message)
        elif op == "unsubscribe":
            await self._unsubscribe(conn, message)
        else:
            await self._reply(conn, self._invalid_op(conn, message))

    async def _reply(self, conn: _Conn, message: dict[str, Any]) -> None:
        self.sent.append(message)
        await conn.send(message)

    @staticmethod
    def _ack(
        conn: _Conn, request: dict[str, Any], ret_msg: str = "", *, op: str, success: bool = True
    ) -> dict[str, Any]:
        reply: dict[str, Any] = {"success": success, "ret_msg": ret_msg, "conn_id": conn.conn_id}
        if "req_id" in request:
            reply["req_id"] = str(request["req_id"])
        reply["op"] = op
        return reply

    @staticmethod
    def _invalid_op(conn: _Conn, request: dict[str, Any]) -> dict[str, Any]:
        return {
            "success": False,
            "ret_msg": "error:invalid op",
            "conn_id": conn.conn_id,
            "request": {"op": request.get("op", ""), "args": request.get("args")},
        }

    async def _subscribe(self, conn: _Conn, request: dict[str, Any]) -> None:
        args = request.get("args")
        refusal = self._refusal(conn, args)
        if refusal is not None:
            refused = self._ack(conn, request, refusal, op="subscribe", success=False)
            await self._reply(conn, refused)
            return
        assert isinstance(args, list)
        conn.topics.update(args)
        await self._reply(conn, self._ack(conn, request, op="subscribe"))
        if not self.silent:
            for topic in args:
                await self._send_current(conn, topic)
        if self.close_after_subscribe:  # a flapping gateway: one answer, then gone
            await conn.ws.close(code=1011, message=b"internal error")

    def _refusal(self, conn: _Conn, args: Any) -> str | None:
        """Bybit's ``ret_msg`` refusing a subscribe with ``args``, or None (accepted).
        A request is accepted or refused as a whole."""
        if not isinstance(args, list) or not args or not all(isinstance(a, str) for a in args):
            return "error:args invalid"
        if conn.category == "spot" and len(args) > SPOT_MAX_ARGS:
            return ARGS_TOO_MANY
        for topic in args:
            problem = self._topic_problem(conn.category, topic)
            if problem is not None:
                return problem
            if topic in conn.topics:
                return f"error:already subscribed,topic:{topic}"
        if len(conn.topics | set(args)) > self.max_topics:
            return f"error:topics exceed limit {self.max_topics}"
        return None

    def _topic_problem(self, category: str, topic: str) -> str | None:
        kind, param, symbol = _parse(topic)
        known = (
            (kind in ("tickers", "publicTrade") and param == "")
            or (kind == "kline" and param in INTERVAL_MS)
            or (kind == "orderbook" and param.isdigit() and int(param) in BOOK_DEPTHS[category])
            or (kind == LIQUIDATION_KIND and param == "" and category == "linear")
        )
        if not known:
            return f"error:handler not found,topic:{topic}"
        linear_ok = category != "linear" or symbol.endswith(LINEAR_QUOTES)
        if not self.fake.is_served(symbol) or not linear_ok:
            return f"Invalid symbol :[{topic}]"
        return None

    async def _unsubscribe(self, conn: _Conn, request: dict[str, Any]) -> None:
        args = request.get("args")
        if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
            invalid = self._ack(
                conn, request, "error:args invalid", op="unsubscribe", success=False
            )
            await self._reply(conn, invalid)
            return
        for topic in args:
            self._drop_topic(conn, topic)
        await self._reply(conn, self._ack(conn, request, op="unsubscribe"))

    @staticmethod
    def _drop_topic(conn: _Conn, topic: str) -> None:
        conn.topics.discard(topic)
        conn.book_views.pop(topic, None)
        conn.tickers.pop(topic, None)
        conn.kline_buckets.pop(topic, None)

    # ----- data messages -------------------------------------------------------------

    async def _send_current(self, conn: _Conn, topic: str) -> None:
        """The state a fresh subscriber of ``topic`` gets at once."""
        kind, param, symbol = _parse(topic)
        if kind == "tickers":
            await self._send_ticker(conn, topic, symbol)
        elif kind == "kline":
            await self._send_kline(conn, topic, symbol, param)
        elif kind == "orderbook":
            await self._send_book(conn, topic, symbol, int(param), snapshot=True)

    async def _publish(self, symbol: str, *, with_trade: bool) -> None:
        """Send ``symbol``'s current state to every subscriber of its topics."""
        skipped = self._skips.get(symbol, 0) > 0
        if skipped:
            self._skips[symbol] -= 1
        if self.silent:
            return
        trade = self._trade(symbol) if with_trade else None
        for key in {
            (conn.category, symbol, int(param))
            for conn in self._conns
            for kind, param, topic_symbol in map(_parse, conn.topics)
            if kind == "orderbook" and topic_symbol == symbol
        }:
            self._update_ids[key] = self._update_ids.get(key, 0) + 1
        self._next_seq(symbol)
        for conn in list(self._conns):
            for topic in sorted(conn.topics):
                kind, param, topic_symbol = _parse(topic)
                if topic_symbol != symbol:
                    continue
                if kind == "tickers":
                    await self._send_ticker(conn, topic, symbol)
                elif kind == "kline":
                    await self._send_kline(conn, topic, symbol, param)
                elif kind == "publicTrade" and trade is not None:
                    await self._send(conn, self._envelope(topic, "snapshot", [trade]))
                elif kind == "orderbook":
                    depth = int(param)
                    await self._send_book(
                        conn, topic, symbol, depth, snapshot=depth == 1, lost=skipped
                    )

    async def _send(self, conn: _Conn, message: dict[str, Any]) -> None:
        self.sent.append(message)
        await conn.send(message)

    def _envelope(self, topic: str, kind: str, data: Any, **extra: Any) -> dict[str, Any]:
        return {"topic": topic, "type": kind, "ts": self.fake.now_ms(), "data": data, **extra}

    async def _send_ticker(self, conn: _Conn, topic: str, symbol: str) -> None:
        ticker = dict(self.fake.tickers[symbol])
        cs = self._next_seq(symbol)
        if conn.category == "spot":
            data = {name: ticker.get(name, "") for name in _TICKER_FIELDS_SPOT}
            await self._send(conn, self._envelope(topic, "snapshot", data, cs=cs))
            return
        ticker.pop("usdIndexPrice", None)
        ticker |= {"markPrice": ticker["lastPrice"], "indexPrice": ticker["lastPrice"]}
        previous = conn.tickers.get(topic)
        conn.tickers[topic] = ticker
        if previous is None:
            await self._send(conn, self._envelope(topic, "snapshot", ticker, cs=cs))
            return
        changed = {k: v for k, v in ticker.items() if previous.get(k) != v}
        if changed:
            await self._send(
                conn, self._envelope(topic, "delta", {"symbol": symbol, **changed}, cs=cs)
            )

    async def _send_kline(self, conn: _Conn, topic: str, symbol: str, interval: str) -> None:
        step = INTERVAL_MS[interval]
        now = self.fake.now_ms()
        bucket = now // step
        rows: list[tuple[list[str], bool]] = []
        last = conn.kline_buckets.get(topic)
        if last is not None and last < bucket:  # the candle we last showed has closed
            closed = self.fake.kline_rows(symbol, interval, limit=1, end=last * step)
            rows.extend((row, True) for row in closed)
        rows.extend((row, False) for row in self.fake.kline_rows(symbol, interval, limit=1))
        conn.kline_buckets[topic] = bucket
        for row, confirm in rows:
            start = int(row[0])
            candle = {
                "start": start,
                "end": start + step - 1,
                "interval": interval,
                "open": row[1],
                "close": row[4],
                "high": row[2],
                "low": row[3],
                "volume": row[5],
                "turnover": row[6],
                "confirm": confirm,
                "timestamp": now,
            }
            await self._send(conn, self._envelope(topic, "snapshot", [candle]))

    async def _send_book(
        self,
        conn: _Conn,
        topic: str,
        symbol: str,
        depth: int,
        *,
        snapshot: bool,
        lost: bool = False,
    ) -> None:
        """A snapshot, or a delta against what ``conn`` last received on ``topic``, with
        the book's current ``u`` (``_publish`` counts updates). ``lost``: remembered as
        sent, but not sent (a gap)."""
        book = self.fake.order_books[symbol]
        view = {
            "b": dict((p, s) for p, s in book["b"][:depth]),
            "a": dict((p, s) for p, s in book["a"][:depth]),
        }
        key = (conn.category, symbol, depth)
        self._update_ids.setdefault(key, 1)
        self._seq.setdefault(symbol, 50_000_000_000)
        previous = conn.book_views.get(topic)
        conn.book_views[topic] = view
        if lost:
            return
        now = self.fake.now_ms()
        if snapshot or previous is None:
            kind = "snapshot"
            bids = [[p, s] for p, s in view["b"].items()]
            asks = [[p, s] for p, s in view["a"].items()]
        else:
            kind = "delta"
            bids, asks = _diff(previous["b"], view["b"]), _diff(previous["a"], view["a"])
        data = {"s": symbol, "b": bids, "a": asks, "u": self._update_ids[key]}
        data["seq"] = self._seq[symbol]
        await self._send(conn, self._envelope(topic, kind, data, cts=now - 1))

    def _trade(self, symbol: str) -> dict[str, Any]:
        now = self.fake.now_ms()
        ticker = self.fake.tickers[symbol]
        size = self._rng.uniform(0.001, 1.0)
        return {
            "T": now,
            "s": symbol,
            "S": self._rng.choice(("Buy", "Sell")),
            "v": f"{size:.6f}",
            "p": ticker["lastPrice"],
            "L": "PlusTick",
            "i": f"{self.fake.seed}-{next(self._trade_ids)}",
            "BT": False,
            "seq": self._next_seq(symbol),
        }

    def _next_seq(self, symbol: str) -> int:
        self._seq[symbol] = self._seq.get(symbol, 50_000_000_000) + self._rng.randint(1, 9)
        return self._seq[symbol]


def _parse(topic: str) -> tuple[str, str, str]:
    """``(kind, parameter, symbol)`` of a topic: ``kline.1.BTCUSDT`` → ``("kline", "1",
    "BTCUSDT")``, ``tickers.BTCUSDT`` → ``("tickers", "", "BTCUSDT")``."""
    parts = topic.split(".")
    if len(parts) == 2:
        return parts[0], "", parts[1]
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    return topic, "", ""


def _diff(before: dict[str, str], after: dict[str, str]) -> list[list[str]]:
    """Bybit delta levels turning ``before`` into ``after``: changed or new levels with
    their size, removed ones with size ``"0"``."""
    gone = [[price, "0"] for price in before if price not in after]
    changed = [[price, size] for price, size in after.items() if before.get(price) != size]
    return gone + changed


def _decimals(text: str) -> int:
    return len(text.split(".")[1]) if "." in text else 0


def topics_for(kind: str, symbols: Sequence[str], param: str = "") -> list[str]:
    """Topic names of ``kind`` for ``symbols`` (``param``: interval or depth)."""
    middle = f".{param}" if param else ""
    return [f"{kind}{middle}.{symbol}" for symbol in symbols]

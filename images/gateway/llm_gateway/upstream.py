"""The HTTP/1.1 client the gateway uses to talk to model servers: keep-alive pools, one write per request.

Built on httptools (llhttp, the parser uvicorn serves with) over the event loop's transports instead of aiohttp's
client: every request pays aiohttp's per-request machinery (request/response objects, header multidicts, payload
registry, timer contexts, a stream reader) and on this path that cost is the gateway's latency. Measured with
``bench/upstream_client_bench.py`` (one 2-vCPU host, loopback, same fake server): 0.69x aiohttp's time per request
one at a time, 0.70x with 32 concurrent callers; in the full gateway, −0.32 ms added p50 at 300 RPS (paired A/B,
``bench/gateway_ab.py``). What a model server needs is small: POST a JSON
body, read a JSON body or an SSE stream, reuse connections, time out, and tell a retryable failure (the request
never reached a server) from one that is not.

Errors: ``UpstreamConnectError`` and ``UpstreamDisconnected`` (nothing came back: safe to try another backend),
``UpstreamProtocolError`` (a malformed answer) — all ``UpstreamError`` — and ``TimeoutError``.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from urllib.parse import urlsplit

import httptools

RETRYABLE_STATUSES = frozenset({502, 503, 504})

# vLLM's server (uvicorn) closes idle keep-alive connections after 5 s. A connection idle for longer than this is
# not reused: the server may be closing it at the moment we write, and that request would fail for nothing.
DEFAULT_MAX_IDLE_S = 4.0
# a slow reader of a stream must not make the gateway buffer the model's whole answer
_PAUSE_READING_BYTES = 1 << 20


class UpstreamError(Exception):
    """The model server exchange failed (not a timeout)."""


class UpstreamConnectError(UpstreamError):
    """No connection to the model server (refused, unresolvable, connect timeout): the request never left."""


class UpstreamDisconnected(UpstreamError):
    """The connection closed before any byte of a response arrived."""


class UpstreamProtocolError(UpstreamError):
    """The model server sent something that is not HTTP/1.1, or closed the connection mid-response."""


# Failures where the model server answered nothing: the exchange may be retried on another backend.
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (UpstreamConnectError, UpstreamDisconnected)


@dataclass(frozen=True, slots=True)
class Timeouts:
    """``connect_s`` bounds opening a connection, ``total_s`` the whole exchange, ``idle_s`` (streams) each wait
    for the next bytes, the response headers included; None = unbounded."""

    connect_s: float
    total_s: float | None
    idle_s: float | None = None


@dataclass(frozen=True, slots=True)
class _Origin:
    host: str
    port: int
    tls: bool
    base_path: str
    host_header: bytes


class _Connection(asyncio.Protocol):
    """One TCP connection and the response being read on it (one exchange at a time; no HTTP pipelining)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.in_use = False  # an exchange is under way (False while pooled)
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.keep_alive = False
        self.complete = False
        self.received_any = False
        self.body: deque[bytes] = deque()
        self.buffered = 0
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.paused = False
        self.streaming = False  # only a stream's reader drains the buffer as it goes: only then pause reading

    # --- asyncio.Protocol ---
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's TCPTransport isn't an asyncio.Transport

    def data_received(self, data: bytes) -> None:
        if not self.in_use:  # bytes nobody asked for, on a pooled connection: its framing can't be trusted
            self.abort()
            return
        self.received_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(UpstreamProtocolError(f"malformed HTTP response from the model server: {exc}"))
            self.abort()
            return
        if self.streaming and self.buffered > _PAUSE_READING_BYTES and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.complete:
            return
        if self.headers_done and not self._has_framing():
            self.complete = True  # a body delimited by the connection's end (HTTP/1.0 style) has ended
            self._wake()
        elif not self.received_any:
            self._fail(UpstreamDisconnected("the model server closed the connection before answering"))
        else:
            self._fail(UpstreamProtocolError("the model server closed the connection mid-response"))

    # --- httptools callbacks ---
    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if self.status < 200:  # an interim 1xx response: the real one follows
            self.headers = []
            return
        self.headers_done = True
        self.keep_alive = self.parser.should_keep_alive()  # llhttp forgets it once the message is complete
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.body.append(body)
        self.buffered += len(body)
        self._wake()

    def on_message_complete(self) -> None:
        if self.status < 200:
            return
        self.complete = True
        self._wake()

    # --- helpers ---
    def _has_framing(self) -> bool:
        return any(name in (b"content-length", b"transfer-encoding") for name, _ in self.headers)

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)

    def abort(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.abort()

    async def wait(self, deadline: float | None) -> None:
        """Until the parser reports progress, the connection fails, or ``deadline`` (loop time) passes."""
        if self.error is not None:
            raise self.error
        waiter = self.waiter = self.loop.create_future()
        timer = None if deadline is None else self.loop.call_at(deadline, self._on_timeout, waiter)
        try:
            await waiter
        except BaseException:
            if not self.complete:  # timed out or cancelled mid-exchange: the connection is unusable
                self.abort()
            raise
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()

    def _on_timeout(self, waiter: asyncio.Future[None]) -> None:
        if not waiter.done():
            waiter.set_exception(TimeoutError())

    def take_body(self) -> bytes:
        data = b"".join(self.body) if len(self.body) != 1 else self.body[0]
        self.body.clear()
        self.buffered = 0
        if self.paused and self.transport is not None:
            self.paused = False
            self.transport.resume_reading()
        return data


def _next_deadline(loop: asyncio.AbstractEventLoop, deadline: float | None, idle_s: float | None) -> float | None:
    """When the wait for the next bytes gives up: the exchange's deadline, or sooner for a stream's idle bound."""
    if idle_s is None:
        return deadline
    idle = loop.time() + idle_s
    return idle if deadline is None else min(idle, deadline)


class UpstreamResponse:
    """A response whose status and headers have arrived; read the body with ``read()`` or ``chunks()``, then
    ``release()`` (the connection goes back to the pool when the body was read whole) or ``close()``."""

    __slots__ = ("status", "headers", "_conn", "_client", "_key", "_deadline", "_idle_s", "_done")

    def __init__(self, conn: _Connection, client: UpstreamClient, key: _Origin, deadline: float | None,
                 idle_s: float | None) -> None:
        self.status = conn.status
        self.headers = conn.headers
        self._conn = conn
        self._client = client
        self._key = key
        self._deadline = deadline
        self._idle_s = idle_s
        self._done = False

    def header(self, name: bytes, default: bytes = b"") -> bytes:
        for key, value in self.headers:
            if key == name:
                return value
        return default

    async def read(self) -> bytes:
        conn = self._conn
        while not conn.complete:
            await conn.wait(_next_deadline(conn.loop, self._deadline, self._idle_s))
        return conn.take_body()

    async def chunks(self) -> AsyncIterator[bytes]:
        """The body as it arrives (each item: whatever came in since the last one)."""
        conn = self._conn
        conn.streaming = True
        while True:
            if conn.body:
                yield conn.take_body()
                continue
            if conn.complete:
                return
            await conn.wait(_next_deadline(conn.loop, self._deadline, self._idle_s))

    def release(self) -> None:
        """Done with this response: a fully read one returns its connection to the pool."""
        if self._done:
            return
        self._done = True
        conn = self._conn
        if conn.complete and not conn.body and not conn.closed and conn.keep_alive:
            self._client._put_back(self._key, conn)
        else:
            conn.abort()

    def close(self) -> None:
        """Abort the exchange (the client left mid-stream): a reader waiting in ``chunks()`` gets an error."""
        self._done = True
        conn = self._conn
        if not conn.complete:
            conn._fail(UpstreamProtocolError("the exchange was aborted"))
        conn.abort()


class UpstreamClient:
    """Keep-alive connection pools per model server origin. No limit on connections: the gateway's own limits
    bound concurrency, so there is no second, hidden queue here."""

    def __init__(self, max_idle_s: float = DEFAULT_MAX_IDLE_S, tls: ssl.SSLContext | None = None) -> None:
        self.max_idle_s = max_idle_s
        self._idle: dict[_Origin, list[_Connection]] = {}
        self._origins: dict[str, _Origin] = {}
        self._tls = tls  # https backends: the system's trust store (certificates verified) unless given
        self._closed = False

    # --- the exchange ---
    async def request(self, method: str, base_url: str, path: str, body: bytes | None, timeouts: Timeouts,
                      headers: tuple[tuple[str, str], ...] = ()) -> UpstreamResponse:
        """Send one request; return once the status and headers have arrived."""
        origin = self._origin(base_url)
        loop = asyncio.get_running_loop()
        deadline = None if timeouts.total_s is None else loop.time() + timeouts.total_s
        lines = [f"{method} {origin.base_path}{path} HTTP/1.1\r\n".encode(), b"host: ", origin.host_header, b"\r\n"]
        for name, value in headers:
            lines.append(f"{name}: {value}\r\n".encode("latin-1"))
        if body is not None:
            lines.append(b"content-length: " + str(len(body)).encode() + b"\r\n\r\n")
            lines.append(body)
        else:
            lines.append(b"\r\n")
        message = b"".join(lines)

        conn = self._take(origin, loop)
        if conn is None:
            conn = await self._connect(origin, loop, timeouts.connect_s)
        conn._reset()
        conn.in_use = True
        assert conn.transport is not None
        conn.transport.write(message)
        while not conn.headers_done:
            await conn.wait(_next_deadline(loop, deadline, timeouts.idle_s))
        return UpstreamResponse(conn, self, origin, deadline, timeouts.idle_s)

    async def get_status(self, base_url: str, path: str, timeouts: Timeouts) -> int:
        """Status of a GET whose body is not needed (health probes)."""
        response = await self.request("GET", base_url, path, None, timeouts)
        try:
            await response.read()
        finally:
            response.release()
        return response.status

    # --- pooling ---
    def _origin(self, base_url: str) -> _Origin:
        origin = self._origins.get(base_url)
        if origin is None:
            parts = urlsplit(base_url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise UpstreamConnectError(f"backend URL {base_url!r} is not an http(s) URL with a host")
            tls = parts.scheme == "https"
            port = parts.port or (443 if tls else 80)
            default_port = port == (443 if tls else 80)
            host_header = parts.hostname if default_port else f"{parts.hostname}:{port}"
            if ":" in parts.hostname:  # an IPv6 literal goes back into brackets
                host_header = f"[{parts.hostname}]" + ("" if default_port else f":{port}")
            origin = _Origin(parts.hostname, port, tls, parts.path.rstrip("/"), host_header.encode("idna"))
            self._origins[base_url] = origin
        return origin

    def _take(self, origin: _Origin, loop: asyncio.AbstractEventLoop) -> _Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        fresh_after = loop.time() - self.max_idle_s
        while idle:
            conn = idle.pop()  # most recently used first: the likeliest still open
            if not conn.closed and conn.idle_since >= fresh_after and conn.transport is not None \
                    and not conn.transport.is_closing():
                return conn
            conn.abort()
        return None

    def _put_back(self, origin: _Origin, conn: _Connection) -> None:
        if self._closed:
            conn.abort()
            return
        conn.in_use = False
        conn.idle_since = conn.loop.time()
        idle = self._idle.setdefault(origin, [])
        # drop the stale ones here, so a burst's worth of connections doesn't linger once the burst is over
        fresh_after = conn.idle_since - self.max_idle_s
        if idle and (idle[0].closed or idle[0].idle_since < fresh_after):
            keep = [c for c in idle if not c.closed and c.idle_since >= fresh_after]
            for stale in idle:
                if stale.closed or stale.idle_since < fresh_after:
                    stale.abort()
            idle[:] = keep
        idle.append(conn)

    async def _connect(self, origin: _Origin, loop: asyncio.AbstractEventLoop, timeout_s: float) -> _Connection:
        if self._closed:
            raise UpstreamConnectError("the upstream client is closed")
        context = None
        if origin.tls:
            if self._tls is None:
                self._tls = ssl.create_default_context()
            context = self._tls
        try:
            async with asyncio.timeout(timeout_s):
                _, conn = await loop.create_connection(
                    lambda: _Connection(loop), origin.host, origin.port, ssl=context,
                    server_hostname=origin.host if context else None)
        except TimeoutError:
            raise UpstreamConnectError(f"connect to {origin.host}:{origin.port} timed out after {timeout_s}s") \
                from None
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamConnectError(f"cannot connect to {origin.host}:{origin.port}: {exc}") from None
        sock = conn.transport.get_extra_info("socket") if conn.transport is not None else None
        if sock is not None:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        return conn

    def idle_connections(self) -> int:
        return sum(len(idle) for idle in self._idle.values())

    async def close(self) -> None:
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                conn.abort()
        self._idle.clear()

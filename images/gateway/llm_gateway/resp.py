"""A lean, pipelined Redis connection for the limiter's per-request scripts (standalone Redis only).

Why not redis-py here: every admission is one EVALSHA with 8 keys and 17 arguments on the response's critical
path, and redis-py's layers (script object → client → pool → retry → connection → parser) cost more Python than
the round trip itself. One asyncio protocol that writes ``hiredis.pack_command`` and resolves futures in FIFO order
from ``hiredis.Reader`` takes ~0.6-0.7x the time per sequential admission (~80-100 µs less on the 2-core dev
machine) and ~0.5x per call with 32 concurrent callers (``bench/redis_client_bench.py``). Everything else (response
cache, the degraded-mode recovery ping, cluster mode) stays on redis-py.

Contract (what the limiter relies on):
- One connection, commands pipelined: concurrent callers share it and replies resolve in the order written.
- Every failure is a ``redis.exceptions.RedisError``: ``ConnectionError`` (incl. ``AuthenticationError``),
  ``TimeoutError``, ``ResponseError`` / ``NoScriptError`` / ``ReadOnlyError`` for error replies.
- A command that times out, or a connection error, closes the connection and fails every command in flight on it
  (their replies could no longer be matched); the next command reconnects.
- A command is sent again only if the connection was found dead *before* it was written (a stale connection after
  a restart or failover). A command that may have reached the server is never re-sent: admission is not idempotent.
- A cancelled caller leaves its slot in the FIFO: its reply is read and dropped, so later replies stay matched.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import select
import socket
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import hiredis
from redis.exceptions import (
    AuthenticationError, ConnectionError, NoScriptError, ReadOnlyError, RedisError, ResponseError, TimeoutError,
)

_INCOMPLETE = object()  # hiredis.Reader.gets() result while a reply is still partial (replies may be False/None)
_PEER_CLOSED = select.POLLHUP | select.POLLERR | select.POLLNVAL | getattr(select, "POLLRDHUP", 0)


def reply_error(error: hiredis.ReplyError) -> RedisError:
    """The redis-py exception for an error reply, so callers catch the same classes as with redis-py."""
    message = str(error)
    if message.startswith("NOSCRIPT"):
        return NoScriptError(message)
    if message.startswith("READONLY"):  # a failover turned this node into a replica
        return ReadOnlyError(message)
    if message.startswith(("NOAUTH", "WRONGPASS")):
        return AuthenticationError(message)
    return ResponseError(message)


@dataclass(frozen=True, slots=True)
class Script:
    """A Lua script known by its SHA1, loaded into Redis on first use (and again after a script-cache flush)."""

    source: str
    sha: str

    @classmethod
    def of(cls, source: str) -> Script:
        return cls(source, hashlib.sha1(source.encode()).hexdigest())


@dataclass(frozen=True, slots=True)
class RedisAddress:
    """Where and how to connect, parsed from a ``redis://`` or ``rediss://`` URL."""

    host: str
    port: int
    db: int
    username: str | None
    password: str | None
    tls: bool

    @classmethod
    def from_url(cls, url: str, password: str | None = None) -> RedisAddress:
        """Credentials in the URL win over ``password`` (as in redis-py's ``from_url``)."""
        parts = urlsplit(url)
        shown = _redacted(url)
        if parts.scheme not in ("redis", "rediss"):
            raise ValueError(f"redis URL {shown!r}: scheme {parts.scheme!r} is not supported; "
                             "use redis:// or rediss:// (TLS)")
        if not parts.hostname:
            raise ValueError(f"redis URL {shown!r}: no host; expected redis://[user:password@]host[:port][/db]")
        try:
            port = parts.port or 6379
        except ValueError:
            raise ValueError(f"redis URL {shown!r}: the port is not a number between 0 and 65535") from None
        db_text = parts.path.lstrip("/")
        if db_text and not db_text.isdigit():
            raise ValueError(f"redis URL {shown!r}: database {db_text!r} is not a non-negative integer "
                             "(the path is the database index, e.g. /0)")
        return cls(host=parts.hostname, port=port, db=int(db_text or 0),
                   username=unquote(parts.username) if parts.username else None,
                   password=unquote(parts.password) if parts.password else password,
                   tls=parts.scheme == "rediss")


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    user = f"{parts.username}:" if parts.username else ":"
    return parts._replace(netloc=f"{user}***@{netloc}").geturl()


class _RespProtocol(asyncio.Protocol):
    """One connection: writes packed commands, resolves the oldest waiting future with each complete reply."""

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float, sock: socket.socket) -> None:
        self._loop = loop
        self._timeout_s = timeout_s
        self._reader = hiredis.Reader(notEnoughData=_INCOMPLETE)
        # (future, reply deadline) per command written and not answered yet, oldest first; a cancelled caller's
        # future stays here until its reply arrives, so the replies after it keep their owners
        self._waiting: collections.deque[tuple[asyncio.Future[Any], float]] = collections.deque()
        # One timer for the oldest command's deadline (all share one timeout, so it is the earliest), re-armed
        # lazily when it fires: no timer per command on the hot path.
        self._watchdog: asyncio.TimerHandle | None = None
        self._transport: asyncio.Transport | None = None
        # a poll set of our own on the transport's socket, to look at it before a write (see found_dead)
        self._poll = select.poll()
        self._poll.register(sock.fileno(), select.POLLIN | _PEER_CLOSED)
        self.closed_by: RedisError | None = None

    # --- asyncio callbacks ---
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        reader = self._reader
        reader.feed(data)
        waiting = self._waiting
        while True:
            try:
                reply = reader.gets()
            except hiredis.ProtocolError as exc:
                self.fail(ConnectionError(f"Redis sent a malformed reply: {exc}"))
                return
            if reply is _INCOMPLETE:
                return
            if not waiting:
                self.fail(ConnectionError("Redis sent a reply to no command (unexpected push message?)"))
                return
            future = waiting.popleft()[0]
            if not future.done():  # done = its caller was cancelled: the reply is dropped
                future.set_result(reply)

    def connection_lost(self, exc: Exception | None) -> None:
        reason = f": {exc}" if exc else " (closed by the server)"
        self.fail(ConnectionError(f"Connection to Redis lost{reason}"))

    # --- used by PipelinedRedis ---
    @property
    def usable(self) -> bool:
        return self.closed_by is None and self._transport is not None and not self._transport.is_closing()

    def found_dead(self, tls: bool) -> bool:
        """Whether an idle connection has been closed by its peer even though the event loop has not noticed yet
        (e.g. Redis restarted while this process was busy): the kernel already holds the EOF."""
        if self._waiting:
            return False  # replies are due: whatever the socket holds is theirs
        ready = self._poll.poll(0)  # a zero-timeout poll(2): no exception on the (usual) nothing-to-read path
        if not ready:
            return False
        events = ready[0][1]
        # Bytes on an idle plain connection are a protocol violation; over TLS they may be a session ticket
        # the TLS layer has not read yet, so only the peer's close counts there.
        return bool(events & _PEER_CLOSED) or not tls

    def write(self, payload: bytes) -> asyncio.Future[Any]:
        """Send one packed command; the future of its reply."""
        assert self._transport is not None
        future = self._loop.create_future()
        self._expect(future)
        self._transport.write(payload)
        return future

    def write_many(self, payload: bytes, count: int) -> list[asyncio.Future[Any]]:
        """Send ``count`` packed commands in one write; one future per command, in order."""
        assert self._transport is not None
        futures = [self._loop.create_future() for _ in range(count)]
        for future in futures:
            self._expect(future)
        self._transport.write(payload)
        return futures

    def _expect(self, future: asyncio.Future[Any]) -> None:
        deadline = self._loop.time() + self._timeout_s
        self._waiting.append((future, deadline))
        if self._watchdog is None:
            self._watchdog = self._loop.call_at(deadline, self._check_deadline)

    def _check_deadline(self) -> None:
        self._watchdog = None
        if not self._waiting:
            return
        deadline = self._waiting[0][1]
        if self._loop.time() >= deadline:
            self.fail(TimeoutError(f"Redis did not answer within {self._timeout_s}s"))
        else:
            self._watchdog = self._loop.call_at(deadline, self._check_deadline)

    def fail(self, error: RedisError) -> None:
        """Close the connection and fail every command still waiting on it."""
        if self.closed_by is None:
            self.closed_by = error
        if self._transport is not None:
            self._transport.abort()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        waiting, self._waiting = self._waiting, collections.deque()
        for future, _ in waiting:
            if not future.done():
                future.set_exception(type(error)(*error.args))  # one instance each: tracebacks are per raise
                future.exception()  # a caller that was cancelled meanwhile will never retrieve it: no warning


class PipelinedRedis:
    """One pipelined connection to a standalone Redis, reconnected lazily after any failure.

    ``timeout_s`` bounds the connect (including AUTH/SELECT) and every command's reply."""

    def __init__(self, address: RedisAddress, timeout_s: float = 0.25, ssl_context: ssl.SSLContext | None = None
                 ) -> None:
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s!r}")
        self.address = address
        self.timeout_s = timeout_s
        # rediss:// verifies the server's certificate and host name against the system CAs unless told otherwise
        self._ssl = (ssl_context or ssl.create_default_context()) if address.tls else None
        self._protocol: _RespProtocol | None = None
        self._connecting: asyncio.Task[_RespProtocol] | None = None
        self._closed = False

    @classmethod
    def from_url(cls, url: str, password: str | None = None, timeout_s: float = 0.25,
                 ssl_context: ssl.SSLContext | None = None) -> PipelinedRedis:
        return cls(RedisAddress.from_url(url, password), timeout_s, ssl_context)

    # --- commands ---
    async def execute(self, *args: Any) -> Any:
        """One command; its reply, or the redis-py exception for an error reply."""
        payload = hiredis.pack_command(args)
        protocol = self._live_protocol() or await self._reconnect()
        reply = await protocol.write(payload)
        if isinstance(reply, hiredis.ReplyError):
            raise self._error_reply(protocol, reply)
        return reply

    async def execute_many(self, commands: Sequence[Sequence[Any]]) -> list[Any]:
        """Several commands in one write. Error replies are returned in place as exceptions, not raised."""
        if not commands:
            return []
        payload = b"".join(hiredis.pack_command(tuple(command)) for command in commands)
        protocol = self._live_protocol() or await self._reconnect()
        replies = await asyncio.gather(*protocol.write_many(payload, len(commands)))
        return [self._error_reply(protocol, reply) if isinstance(reply, hiredis.ReplyError) else reply
                for reply in replies]

    @staticmethod
    def _error_reply(protocol: _RespProtocol, reply: hiredis.ReplyError) -> RedisError:
        error = reply_error(reply)
        if isinstance(error, ReadOnlyError):
            # A failover demoted this node but kept our connection: only a new connection follows the endpoint's
            # DNS to the new primary (otherwise every admission would fail here until the process restarts).
            protocol.fail(ConnectionError("Redis node became a read-only replica: reconnecting"))
        return error

    async def ping(self) -> bool:
        return bool(await self.execute("PING") == b"PONG")

    async def evalsha(self, script: Script, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        """EVALSHA; on NOSCRIPT (script cache flushed by a restart or failover) SCRIPT LOAD and try once more."""
        try:
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)
        except NoScriptError:
            await self.execute("SCRIPT", "LOAD", script.source)
            return await self.execute("EVALSHA", script.sha, len(keys), *keys, *args)

    async def evalsha_many(self, script: Script, calls: Sequence[tuple[Sequence[Any], Sequence[Any]]]) -> list[Any]:
        """One EVALSHA per ``(keys, args)``, all in one write; replies (or error-reply exceptions) in order.
        NOSCRIPT answers are retried once, together, after one SCRIPT LOAD."""
        commands = [("EVALSHA", script.sha, len(keys), *keys, *args) for keys, args in calls]
        results = await self.execute_many(commands)
        missing = [index for index, result in enumerate(results) if isinstance(result, NoScriptError)]
        if missing:
            await self.execute("SCRIPT", "LOAD", script.source)
            retried = await self.execute_many([commands[index] for index in missing])
            for index, result in zip(missing, retried, strict=True):
                results[index] = result
        return results

    # --- connection ---
    def _live_protocol(self) -> _RespProtocol | None:
        """The current connection if it can take a command now, else None (``_reconnect`` then)."""
        protocol = self._protocol
        if protocol is not None and protocol.usable and not protocol.found_dead(self.address.tls):
            return protocol
        return None

    async def _reconnect(self) -> _RespProtocol:
        """A fresh connection. Nothing was written on the dead one by the caller, so sending on the new one
        cannot run the caller's command twice."""
        if self._protocol is not None:
            self._protocol.fail(ConnectionError("stale connection to Redis replaced"))
            self._protocol = None
        if self._closed:
            raise ConnectionError("this Redis connection was closed")
        if self._connecting is None:
            self._connecting = asyncio.create_task(self._connect())
            self._connecting.add_done_callback(self._connect_done)
        # shielded: a caller that gives up must not abort the connect the other callers are waiting for
        return await asyncio.shield(self._connecting)

    def _connect_done(self, task: asyncio.Task[_RespProtocol]) -> None:
        self._connecting = None
        if task.cancelled() or task.exception() is not None:
            return
        if self._closed:  # closed while this connect was finishing: do not keep it open
            task.result().fail(ConnectionError("this Redis connection was closed"))
        else:
            self._protocol = task.result()

    async def _connect(self) -> _RespProtocol:
        address = self.address
        where = f"{address.host}:{address.port}"
        try:
            return await asyncio.wait_for(self._open(), self.timeout_s)
        except asyncio.TimeoutError:
            raise TimeoutError(f"connecting to Redis at {where} took longer than {self.timeout_s}s") from None
        except ssl.SSLError as exc:
            raise ConnectionError(f"TLS handshake with Redis at {where} failed: {exc}") from None
        except OSError as exc:
            raise ConnectionError(f"cannot connect to Redis at {where}: {exc.strerror or exc}") from None

    async def _open(self) -> _RespProtocol:
        loop = asyncio.get_running_loop()
        address = self.address
        # Our own socket (not the transport's wrapper), so found_dead can poll it before a write.
        infos = await loop.getaddrinfo(address.host, address.port, type=socket.SOCK_STREAM)
        family, kind, proto, _, sockaddr = infos[0]
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            await loop.sock_connect(sock, sockaddr)
            _, protocol = await loop.create_connection(
                lambda: _RespProtocol(loop, self.timeout_s, sock), sock=sock, ssl=self._ssl,
                server_hostname=address.host if self._ssl else None)
        except BaseException:
            sock.close()
            raise
        setup: list[tuple[Any, ...]] = []
        if address.password is not None:
            setup.append(("AUTH", address.username, address.password) if address.username
                         else ("AUTH", address.password))
        if address.db:
            setup.append(("SELECT", address.db))
        if setup:
            futures = protocol.write_many(b"".join(hiredis.pack_command(command) for command in setup), len(setup))
            try:
                replies = await asyncio.gather(*futures)
            except BaseException:
                protocol.fail(ConnectionError("connection setup interrupted"))
                raise
            for command, reply in zip(setup, replies, strict=True):
                if isinstance(reply, hiredis.ReplyError):
                    protocol.fail(ConnectionError("connection setup failed"))
                    if command[0] == "AUTH":
                        user = f" as {address.username!r}" if address.username else ""
                        raise AuthenticationError(
                            f"Redis at {address.host}:{address.port} refused the password{user}: {reply}")
                    raise ResponseError(f"Redis at {address.host}:{address.port} refused SELECT {address.db}: {reply}")
        return protocol

    async def aclose(self) -> None:
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        if self._protocol is not None:
            self._protocol.fail(ConnectionError("this Redis connection was closed"))
            self._protocol = None

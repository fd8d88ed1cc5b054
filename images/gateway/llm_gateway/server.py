"""Process entry: build the gateway, serve :8080 (API) and :9090 (metrics) under uvicorn + uvloop, drain on SIGTERM.

Shutdown: SIGTERM (or SIGINT) flips readiness to 503 at once; requests keep being served while in-flight ones
finish (bounded by ``GATEWAY_DRAIN_TIMEOUT_S``); then the listeners close, reconciliations finish, the usage
meter flushes to Postgres (or spills to disk) and the process exits 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import os
import signal
import sys
import time
from collections.abc import Generator
from typing import Any

import uvicorn
import uvloop
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
import hiredis
from redis.asyncio import Redis, RedisCluster
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from llm_gateway import metrics
from llm_gateway.app import Gateway
from llm_gateway.cache import ResponseCache
from llm_gateway.catalog import CatalogError, load_catalog
from llm_gateway.http import Receive, Scope, Send, send_bytes, send_error
from llm_gateway.limits import Limiter
from llm_gateway.logs import JsonLogger
from llm_gateway.resp import PipelinedRedis
from llm_gateway.routing import Router
from llm_gateway.settings import Settings, SettingsError
from llm_gateway.upstream import UpstreamClient


class _Server(uvicorn.Server):
    """uvicorn server whose signals are ours (two servers share one process and one drain)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def metrics_app(gateway: Gateway) -> Any:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] != "/metrics":
            await send_error(send, 404, "only /metrics is served here", "invalid_request_error", code="not_found")
            return
        metrics.USAGE_BUFFER_DEPTH.set(gateway.meter.depth)
        await send_bytes(send, 200, metrics.render(), content_type=(b"content-type",
                                                                    metrics.CONTENT_TYPE_LATEST.encode()))
    return app


class _HeaderCoalescingTransport:
    """Holds uvicorn's status-line-and-headers write back until the body's write, so a response leaves in one
    send() instead of two: on this kind of host each send to a loopback or VPC peer can wake the reader (and
    the second one costs a second wake-up). Whatever is still held when the current loop step ends (a stream
    waiting for its first chunk, a HEAD response) is written then, so nothing is delayed past that."""

    __slots__ = ("_transport", "_held", "_loop")

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport
        self._held: bytes | None = None
        self._loop = asyncio.get_running_loop()

    def write(self, data: bytes) -> None:
        held = self._held
        if held is not None:
            self._held = None
            if len(data) <= 65536:
                self._transport.write(held + data)
            else:  # no copy of a large body just to prepend the headers
                self._transport.writelines((held, data))
        elif data.startswith(b"HTTP/1.1 ") and data.endswith(b"\r\n\r\n"):
            self._held = data
            self._loop.call_soon(self.flush)
        else:
            self._transport.write(data)

    def flush(self) -> None:
        held = self._held
        if held is not None:
            self._held = None
            self._transport.write(held)

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _CoalescingHttpToolsProtocol(HttpToolsProtocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(_HeaderCoalescingTransport(transport))  # type: ignore[arg-type]


class _HiredisPacking:
    """Serialise commands with hiredis' C packer instead of redis-py's pure-Python one (the limiter's script
    call has ~25 arguments per request; this saves ~20% of the Redis client's CPU)."""

    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        if isinstance(first, str) and " " in first:  # e.g. "SCRIPT LOAD": the server wants separate words
            args = (*first.split(), *args[1:])
        elif isinstance(first, bytes) and b" " in first:
            args = (*first.split(), *args[1:])
        return [hiredis.pack_command(args)]


class _FastConnection(_HiredisPacking, Connection):
    pass


def redis_client(settings: Settings) -> Any:
    options: dict[str, Any] = {
        "password": settings.read_secret(settings.redis_password_file),
        "socket_timeout": settings.redis_timeout_s,
        "socket_connect_timeout": settings.redis_timeout_s,
    }
    if settings.redis_cluster:
        return RedisCluster.from_url(settings.redis_url, **options)
    # one immediate reconnect (a pooled connection may be stale after a failover), never a backoff on the hot path
    # (for rediss:// URLs redis-py substitutes its own SSL connection class: TLS keeps the Python packer)
    return Redis.from_url(settings.redis_url, retry=Retry(NoBackoff(), 1), connection_class=_FastConnection,
                          **options)


async def build(settings: Settings, logger: JsonLogger) -> tuple[Gateway, list[Any]]:
    """The gateway and what to close afterwards (in order)."""
    # the data layer (asyncpg) is imported here, not at module level, so ``server`` stays cheap to import
    from llm_gateway.admin import AdminApp
    from llm_gateway.db import create_pool, dsn_file_password, dsn_for_user, migrate, rds_iam_token
    from llm_gateway.keys import KeyStore
    from llm_gateway.metering import UsageMeter
    from llm_gateway.usage import UsageApp

    catalog = load_catalog(settings.models_file)
    dsn = settings.database_dsn()
    if not dsn:
        raise SettingsError("GATEWAY_DATABASE_URL_FILE is not set: the gateway needs Postgres for keys and usage")
    # The master password is read again for each connection: RDS rotates it, the mounted secret follows.
    assert settings.database_url_file is not None
    password = dsn_file_password(settings.database_url_file)
    await migrate(dsn, password=password, gateway_role=settings.database_iam_user)
    if settings.database_iam_user:
        from urllib.parse import urlsplit

        master = urlsplit(dsn)
        region = settings.database_iam_region or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if not region:
            raise SettingsError("GATEWAY_DATABASE_IAM_REGION is not set (nor AWS_REGION): IAM database tokens are signed per region")
        dsn = dsn_for_user(dsn, settings.database_iam_user)
        password = rds_iam_token(master.hostname or "", master.port or 5432, settings.database_iam_user, region)
    pool = await create_pool(dsn, password=password)
    keystore = KeyStore(pool, cache_ttl_s=settings.key_cache_ttl_s)
    await keystore.start_listener()  # revocations from any replica reach this one at once (TTL is the bound)
    meter = UsageMeter(dsn, settings.spill_dir, password=password)
    await meter.start()
    redis = redis_client(settings)
    # the limiter's two scripts per request skip redis-py on a standalone Redis (see resp.py)
    pipelined = None if settings.redis_cluster else PipelinedRedis.from_url(
        settings.redis_url, settings.read_secret(settings.redis_password_file), settings.redis_timeout_s)
    limiter = Limiter(redis, settings.expected_replicas, settings.inflight_ttl_s,
                      settings.redis_reconnect_interval_s, logger, cluster=settings.redis_cluster,
                      pipelined=pipelined, heartbeat_s=settings.replica_heartbeat_s)
    await limiter.start_heartbeat()
    cache = ResponseCache(redis, settings.cache_ttl_s, settings.cache_max_entry_bytes, limiter)
    router = Router(catalog, breaker_failures=settings.breaker_failures, breaker_reset_s=settings.breaker_reset_s,
                    affinity_epsilon=settings.affinity_epsilon, health_interval_s=settings.health_interval_s,
                    health_timeout_s=settings.health_timeout_s,
                    wake_probe_interval_s=settings.wake_probe_interval_s)
    upstream = UpstreamClient()
    await router.check_once(upstream)
    router.start_health_checks(upstream)
    admin_token = settings.read_secret(settings.admin_token_file)
    public_names = [name for entry in catalog.models for name in (entry.name, *entry.aliases)]
    admin_app = AdminApp(keystore, pool, admin_token, model_names=lambda: public_names) if admin_token else None
    gateway = Gateway(settings, catalog, keystore, meter, limiter, cache, router, upstream, logger,
                      admin_app=admin_app, usage_app=UsageApp(pool), pool=pool)

    async def close_all() -> None:
        await router.close()
        await limiter.close()
        await upstream.close()
        await meter.close()
        with contextlib.suppress(Exception):
            await keystore.close()
        with contextlib.suppress(Exception):
            await keystore.flush_last_used()
        with contextlib.suppress(Exception):
            await redis.aclose()
        if pipelined is not None:
            await pipelined.aclose()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pool.close(), timeout=5)

    return gateway, [close_all]


async def serve(settings: Settings) -> int:
    logger = JsonLogger(level=settings.log_level)
    gateway, closers = await build(settings, logger)
    # Everything built so far lives until exit: keep it out of the collector's full passes (shorter GC pauses).
    gc.collect()
    gc.freeze()
    # httptools with headers and body in one write; no proxy-header rewriting (client addresses are not used) and
    # no "server: uvicorn" banner
    common: dict[str, Any] = {"http": _CoalescingHttpToolsProtocol, "loop": "none", "lifespan": "off",
              "access_log": False, "log_level": "warning", "timeout_graceful_shutdown": 5, "proxy_headers": False,
              "server_header": False}
    # keep-alive longer than the ALB's idle timeout (GATEWAY_KEEP_ALIVE_S), so the ALB never reuses a connection we
    # just closed
    api = _Server(uvicorn.Config(gateway, host=settings.host, port=settings.port,
                                 timeout_keep_alive=settings.keep_alive_s, backlog=4096, **common))
    servers = [api]
    if settings.metrics_port:
        servers.append(_Server(uvicorn.Config(metrics_app(gateway), host=settings.host,
                                              port=settings.metrics_port, **common)))

    loop = asyncio.get_running_loop()
    drain_started = asyncio.Event()

    def on_signal(signum: int) -> None:
        if gateway.draining:
            return
        gateway.begin_drain()
        metrics.DRAINING.set(1)
        logger.info("drain_started", reason=signal.Signals(signum).name)
        drain_started.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, on_signal, signum)

    async def drain() -> None:
        await drain_started.wait()
        deadline = time.monotonic() + settings.drain_timeout_s
        while gateway.inflight > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        logger.info("drain_listeners_closing", inflight=gateway.inflight)
        for server in servers:
            server.should_exit = True

    drainer = asyncio.create_task(drain())
    logger.info("started", port=settings.port, metrics_port=settings.metrics_port,
                models=[entry.name for entry in gateway.catalog.models])
    await asyncio.gather(*(server.serve() for server in servers))
    drainer.cancel()
    with contextlib.suppress(asyncio.TimeoutError):
        await asyncio.wait_for(gateway.wait_background(), timeout=5)
    for close in closers:
        await close()
    logger.info("stopped", usage_buffer_depth=gateway.meter.depth)
    logger.flush()
    return 0


def main() -> int:
    try:
        settings = Settings.from_env()
        load_catalog(settings.models_file)  # fail fast, before any connection, on a bad catalog
    except (SettingsError, CatalogError) as exc:
        print(f"gateway: configuration error: {exc}", file=sys.stderr)
        return 2
    try:
        return uvloop.run(serve(settings))
    except (SettingsError, CatalogError) as exc:
        print(f"gateway: configuration error: {exc}", file=sys.stderr)
        return 2

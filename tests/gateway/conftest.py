"""Real Redis and PostgreSQL 15 on loopback, shared by every gateway test (session-scoped servers).

Fixtures:
- ``redis_url``: URL of a FLUSHed Redis (the server is restarted first if a previous test stopped it).
- ``pg_dsn``: DSN of a fresh, empty database created for this test.
- ``redis_control`` / ``pg_control``: ``.stop()`` / ``.start()`` the server on the same port (outage tests).
- ``upstream``: four fake model servers (``fake_upstream.py``); ``gateway`` / ``gateway_factory``: gateway
  processes on this test's Redis and database; ``make_key``: an API key created through the KeyStore.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from tests.gateway.services import (
    FakeUpstream, GatewayProcess, PostgresServer, RedisServer, create_api_key, default_catalog,
)

_db_counter = itertools.count()


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def redis_control(redis_server: RedisServer) -> Iterator[RedisServer]:
    yield redis_server
    redis_server.start()  # leave it running for the next test even if this one stopped it


@pytest.fixture
def pg_control(postgres_server: PostgresServer) -> Iterator[PostgresServer]:
    yield postgres_server
    postgres_server.start()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    redis_server.start()
    redis_server.flush()
    return redis_server.url


@pytest.fixture
def pg_dsn(postgres_server: PostgresServer) -> str:
    postgres_server.start()
    return postgres_server.create_database(f"gwtest_{next(_db_counter)}")


# ---------------------------------------------------------------------------- gateway end-to-end fixtures


@pytest.fixture(scope="session")
def fake_fleet() -> Iterator[FakeUpstream]:
    fleet = FakeUpstream(4)
    try:
        yield fleet
    finally:
        fleet.close()


@pytest.fixture
def upstream(fake_fleet: FakeUpstream) -> FakeUpstream:
    """Four fake model servers (indexes 0-3), reset to defaults: up, no latency, no failures, empty logs."""
    fake_fleet.reset()
    return fake_fleet


@pytest.fixture
def gateway_factory(redis_url: str, pg_dsn: str, upstream: FakeUpstream) -> Iterator[Callable[..., GatewayProcess]]:
    """``start(catalog=None, **env)``: a gateway subprocess on this test's Redis and database."""
    started: list[GatewayProcess] = []

    def start(catalog: dict[str, Any] | None = None, **env: str) -> GatewayProcess:
        process = GatewayProcess(catalog or default_catalog(upstream), redis_url, pg_dsn,
                                 {f"GATEWAY_{name.upper()}": str(value) for name, value in env.items()})
        started.append(process)
        return process.start()

    try:
        yield start
    finally:
        for process in started:
            process.stop()


@pytest.fixture
def gateway(gateway_factory: Callable[..., GatewayProcess]) -> GatewayProcess:
    return gateway_factory()


@pytest.fixture
def make_key(pg_dsn: str) -> Callable[..., str]:
    """``make_key(org_id="org-a", org_limits=..., key_limits=..., allowed_models=...)`` → full API key."""
    orgs: set[str] = set()

    def make(org_id: str = "org-a", **options: Any) -> str:
        full_key, _ = asyncio.run(create_api_key(pg_dsn, org_id, create_org=org_id not in orgs, **options))
        orgs.add(org_id)
        return full_key

    return make

"""Real Redis and PostgreSQL 15 on loopback, shared by every gateway test (session-scoped servers).

Fixtures:
- ``redis_url``: URL of a FLUSHed Redis (the server is restarted first if a previous test stopped it).
- ``pg_dsn``: DSN of a fresh, empty database created for this test.
- ``redis_control`` / ``pg_control``: ``.stop()`` / ``.start()`` the server on the same port (outage tests).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest

from tests.gateway.services import PostgresServer, RedisServer

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
# (imports here so that the data-layer tests above need none of this)
import asyncio  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any  # noqa: E402

from tests.gateway.services import FakeUpstream, GatewayProcess, create_api_key  # noqa: E402


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


def default_catalog(upstream: FakeUpstream) -> dict[str, Any]:
    prices = {"prompt_per_1k": 0.5, "completion_per_1k": 1.5}
    return {"models": [
        {"name": "chat-a", "aliases": ["gpt-4o-mini"], "kind": "chat", "backends": [upstream.url(0), upstream.url(1)],
         "max_tokens_cap": 512, "max_context": 4096, "prices": prices, "fallbacks": ["chat-b"]},
        {"name": "chat-b", "kind": "chat", "backends": [upstream.url(2)], "max_tokens_cap": 512,
         "max_context": 4096, "prices": {"prompt_per_1k": 1.0, "completion_per_1k": 2.0}},
        {"name": "chat-affinity", "kind": "chat", "backends": [upstream.url(0), upstream.url(1), upstream.url(2)],
         "prefix_affinity": True},
        {"name": "text-1", "kind": "completion", "backends": [upstream.url(3)], "prices": prices},
        {"name": "embed-1", "kind": "embedding", "backends": [upstream.url(3)], "prices": prices},
        {"name": "rerank-1", "kind": "rerank", "backends": [upstream.url(3)]},
    ]}


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

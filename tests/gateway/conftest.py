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

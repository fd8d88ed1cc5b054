"""Database credentials against a real PostgreSQL with password authentication (issue 13.10).

RDS rotates the master password every 7 days. A pool built from a DSN read once keeps the old password for every
connection it opens later; the gateway's pools instead ask a password source per connection (the mounted DSN file,
read again; or an RDS IAM token), and the gateway itself runs as a role holding only the grants it needs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import asyncpg
import pytest

from llm_gateway.db import (
    GATEWAY_TABLE_GRANTS,
    create_pool,
    dsn_file_password,
    dsn_for_user,
    migrate,
    rds_iam_token,
)
from tests.gateway.services import PostgresServer

MASTER = "app_master"
GATEWAY_ROLE = "llm_gateway"


@pytest.fixture(scope="module")
def password_server() -> Iterator[PostgresServer]:
    """A cluster where only the superuser is trusted: every other role must present its (current) password."""
    server = PostgresServer()
    (server.data / "pg_hba.conf").write_text(
        "local all all trust\n"
        "host all postgres 127.0.0.1/32 trust\n"
        "host all all 127.0.0.1/32 scram-sha-256\n"
    )
    server.start()
    # Like RDS: the master user can create roles and owns the database; rds_iam exists (here a plain stand-in role).
    server.psql(f"CREATE ROLE {MASTER} LOGIN CREATEROLE PASSWORD 'first-password'")
    server.psql("CREATE ROLE rds_iam NOLOGIN")
    server.psql(f"CREATE DATABASE gw OWNER {MASTER}")
    server.psql(f"GRANT rds_iam TO {MASTER} WITH ADMIN OPTION")
    try:
        yield server
    finally:
        server.close()


def _dsn(server: PostgresServer, user: str, password: str | None = None) -> str:
    secret = f":{password}" if password is not None else ""
    return f"postgresql://{user}{secret}@127.0.0.1:{server.port}/gw"


def _rotate(server: PostgresServer, dsn_file: Path, new_password: str) -> None:
    """What RDS and the secret sync do: a new master password, then the mounted DSN file follows."""
    server.psql(f"ALTER ROLE {MASTER} PASSWORD '{new_password}'")
    dsn_file.write_text(_dsn(server, MASTER, new_password) + "\n")


def test_rotated_master_password_breaks_a_pool_read_once_but_not_one_reading_the_file(
    password_server: PostgresServer, tmp_path: Path
) -> None:
    dsn_file = tmp_path / "database_url"
    _rotate(password_server, dsn_file, "first-password")

    async def scenario() -> None:
        read_once = await create_pool(dsn_file.read_text().strip(), min_size=1, max_size=2)
        following = await create_pool(dsn_for_user(dsn_file.read_text().strip(), MASTER), min_size=1, max_size=2,
                                      password=dsn_file_password(dsn_file))
        try:
            assert await read_once.fetchval("SELECT 1") == 1 and await following.fetchval("SELECT 1") == 1
            _rotate(password_server, dsn_file, "rotated-password")
            # Connections the pools open from now on (recycled after max_inactive_connection_lifetime in production).
            await read_once.expire_connections()
            await following.expire_connections()
            with pytest.raises(asyncpg.InvalidPasswordError):
                await read_once.fetchval("SELECT 1")
            assert await following.fetchval("SELECT current_user") == MASTER
        finally:
            await read_once.close()
            await following.close()

    asyncio.run(scenario())


def test_migrate_provisions_a_gateway_role_with_only_its_grants(password_server: PostgresServer, tmp_path: Path) -> None:
    dsn_file = tmp_path / "database_url"
    _rotate(password_server, dsn_file, "master-password")
    master_dsn = dsn_for_user(dsn_file.read_text().strip(), MASTER)

    async def scenario() -> None:
        await migrate(master_dsn, password=dsn_file_password(dsn_file), gateway_role=GATEWAY_ROLE)
        # Idempotent: every replica runs it at every start.
        assert await migrate(master_dsn, password=dsn_file_password(dsn_file), gateway_role=GATEWAY_ROLE) == []
        # Locally the role gets a password to log in with; on RDS, rds_iam makes it accept IAM tokens only.
        password_server.psql(f"ALTER ROLE {GATEWAY_ROLE} PASSWORD 'token-stand-in'")
        assert password_server.psql(f"SELECT pg_has_role('{GATEWAY_ROLE}', 'rds_iam', 'MEMBER')", "gw").strip() == "t"
        conn = await asyncpg.connect(_dsn(password_server, GATEWAY_ROLE, "token-stand-in"))
        try:
            # What the gateway does.
            await conn.execute("INSERT INTO orgs (id, name) VALUES ('org-role', 'Role test')")
            await conn.execute("UPDATE orgs SET name = 'Renamed' WHERE id = 'org-role'")
            assert await conn.fetchval("SELECT count(*) FROM usage_records") == 0
            # What it must not do.
            for statement in (
                "DELETE FROM usage_records",
                "DELETE FROM orgs WHERE id = 'org-role'",
                "UPDATE audit_log SET action = 'x'",
                "SELECT * FROM schema_migrations",
                "CREATE TABLE public.intruder (id int)",
                "DROP TABLE api_keys",
                "TRUNCATE usage_records",
            ):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.execute(statement)
        finally:
            await conn.close()
        granted = password_server.psql(
            f"SELECT table_name || ':' || privilege_type FROM information_schema.role_table_grants "
            f"WHERE grantee = '{GATEWAY_ROLE}' ORDER BY 1", "gw").split()
        assert sorted(granted) == sorted(f"{t}:{p}" for t, ps in GATEWAY_TABLE_GRANTS.items() for p in ps)

    asyncio.run(scenario())


def test_every_new_connection_asks_for_a_fresh_iam_token(password_server: PostgresServer) -> None:
    """A pool using the IAM source calls it per connection, so an expiring token never stops new connections."""
    password_server.psql(f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{GATEWAY_ROLE}') "
                         f"THEN CREATE ROLE {GATEWAY_ROLE} LOGIN; END IF; END $$")
    issued: list[tuple[Any, ...]] = []

    class TokenIssuer:
        """Stands in for botocore's RDS client: each token is a new password the server is told about first."""

        def generate_db_auth_token(self, host: str, port: int, user: str, region: str) -> str:
            issued.append((host, port, user, region))
            token = f"token-{len(issued)}"
            password_server.psql(f"ALTER ROLE {user} PASSWORD '{token}'")
            return token

    async def scenario() -> None:
        source = rds_iam_token("127.0.0.1", password_server.port, GATEWAY_ROLE, "eu-west-1", client=TokenIssuer())
        pool = await create_pool(_dsn(password_server, GATEWAY_ROLE), min_size=1, max_size=1, password=source)
        try:
            assert await pool.fetchval("SELECT current_user") == GATEWAY_ROLE
            await pool.expire_connections()
            assert await pool.fetchval("SELECT current_user") == GATEWAY_ROLE
        finally:
            await pool.close()

    asyncio.run(scenario())
    assert issued == [("127.0.0.1", password_server.port, GATEWAY_ROLE, "eu-west-1")] * 2


def test_iam_token_is_an_rds_connect_signature_for_the_role() -> None:
    """The real botocore signer, offline (static credentials): the token RDS checks for `rds-db:connect`."""
    import botocore.session

    session = botocore.session.get_session()
    session.set_credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY")
    client = session.create_client("rds", region_name="us-east-1")
    token = asyncio.run(rds_iam_token("db.abc.us-east-1.rds.amazonaws.com", 5432, GATEWAY_ROLE, "us-east-1", client=client)())
    url = urlsplit("https://" + token)
    query = parse_qs(url.query)
    assert url.hostname == "db.abc.us-east-1.rds.amazonaws.com" and url.port == 5432
    assert query["Action"] == ["connect"] and query["DBUser"] == [GATEWAY_ROLE]
    assert query["X-Amz-Credential"][0].endswith("/us-east-1/rds-db/aws4_request") and query["X-Amz-Expires"] == ["900"]


def test_dsn_for_user_drops_the_master_password() -> None:
    dsn = "postgresql://llmadmin:s%40cret@db.example.internal:5432/llmplatform?sslmode=require"
    assert dsn_for_user(dsn, GATEWAY_ROLE) == "postgresql://llm_gateway@db.example.internal:5432/llmplatform?sslmode=require"

"""Admin API through real ASGI calls: auth, every endpoint, validation errors, audit rows."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator
from datetime import datetime, timedelta, timezone

import asyncpg
import httpx2 as httpx
import pytest

from llm_gateway.admin import AdminApp
from llm_gateway.keys import KeyStore
from tests.gateway.gwdata_support import pool  # noqa: F401  (fixture)


@pytest.fixture
def admin_token() -> str:
    return secrets.token_urlsafe(24)  # generated at runtime: no secret in the test sources


@pytest.fixture
def keystore(pool: asyncpg.Pool) -> KeyStore:
    return KeyStore(pool)


@pytest.fixture
async def client(pool: asyncpg.Pool, keystore: KeyStore, admin_token: str) -> AsyncIterator[httpx.AsyncClient]:
    app = AdminApp(keystore, pool, admin_token, model_names=lambda: ["chat-7b", "sql-7b"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw",
                                 headers={"authorization": f"Bearer {admin_token}"}) as c:
        yield c


def assert_error(response: httpx.Response, status: int, param: str | None, *fragments: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    for fragment in fragments:
        assert fragment in error["message"], error["message"]


async def test_requests_without_the_admin_token_are_refused(pool: asyncpg.Pool, keystore: KeyStore,
                                                            admin_token: str) -> None:
    app = AdminApp(keystore, pool, admin_token)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as anonymous:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": admin_token},
                        {"x-admin-token": admin_token + "x"}, {"authorization": f"Basic {admin_token}"}):
            response = await anonymous.get("/admin/orgs", headers=headers)
            assert_error(response, 401, None, "admin token")
        assert (await anonymous.get("/admin/orgs", headers={"x-admin-token": admin_token})).status_code == 200
        response = await anonymous.post("/admin/orgs", json={"id": "acme", "name": "Acme"})
        assert response.status_code == 401
    assert await pool.fetchval("SELECT count(*) FROM orgs") == 0
    disabled = AdminApp(keystore, pool, "")
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=disabled), base_url="http://gw") as c:
        assert_error(await c.get("/admin/orgs", headers={"authorization": "Bearer "}), 401, None, "disabled")


async def test_org_lifecycle(client: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    created = await client.post("/admin/orgs", json={"id": "acme", "name": "Acme Corp", "rpm": 600,
                                                     "daily_tokens": None},
                                headers={"x-admin-actor": "alice@example.com"})
    assert created.status_code == 201, created.text
    org = created.json()
    assert org["id"] == "acme" and org["rpm"] == 600 and org["tpm"] is None
    assert org["daily_tokens"] is None  # explicit null = unlimited
    assert org["daily_requests"] == 100_000 and org["monthly_tokens"] == 300_000_000  # seed defaults

    generated = await client.post("/admin/orgs", json={"name": "No Id"})
    assert generated.status_code == 201 and generated.json()["id"].startswith("org-")

    assert_error(await client.post("/admin/orgs", json={"id": "acme", "name": "Again"}), 409, "id", "already exists")

    listed = await client.get("/admin/orgs")
    assert [o["id"] for o in listed.json()["data"]] == ["acme", generated.json()["id"]]
    assert (await client.get("/admin/orgs/acme")).json()["name"] == "Acme Corp"
    assert_error(await client.get("/admin/orgs/nope"), 404, "org_id", "nope")

    patched = await client.patch("/admin/orgs/acme", json={"rpm": None, "monthly_tokens": 5, "status": "suspended"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["rpm"] is None and patched.json()["monthly_tokens"] == 5
    assert patched.json()["status"] == "suspended" and patched.json()["tier"] == "standard"

    audit = await pool.fetch("SELECT actor, action, target_id, details FROM audit_log ORDER BY id")
    assert [(a["action"], a["target_id"]) for a in audit] == [
        ("org.create", "acme"), ("org.create", generated.json()["id"]), ("org.update", "acme")]
    assert audit[0]["actor"] == "alice@example.com" and audit[1]["actor"] == "admin"
    via_api = (await client.get("/admin/audit", params={"target_id": "acme"})).json()["data"]
    assert [a["action"] for a in via_api] == ["org.update", "org.create"]
    assert via_api[0]["details"]["status"] == "suspended"


async def test_key_lifecycle_and_the_created_key_authenticates(
    client: httpx.AsyncClient, pool: asyncpg.Pool, keystore: KeyStore
) -> None:
    assert (await client.post("/admin/orgs", json={"id": "acme", "name": "Acme"})).status_code == 201
    created = await client.post("/admin/orgs/acme/keys", json={
        "name": "ci", "allowed_models": ["chat-7b"], "tpm": 5000, "expires_in_days": 30})
    assert created.status_code == 201, created.text
    body = created.json()
    full_key = body["key"]
    assert full_key.startswith(f"sk-llmp-{body['id']}_")
    principal = await keystore.authenticate(full_key)
    assert principal is not None and principal.org_id == "acme" and principal.allowed_models == frozenset({"chat-7b"})
    assert principal.key_limits.tpm == 5000
    expires = datetime.fromisoformat(body["expires_at"])
    assert timedelta(days=29) < expires - datetime.now(timezone.utc) <= timedelta(days=30)

    listed = (await client.get("/admin/orgs/acme/keys")).json()["data"]
    assert [k["id"] for k in listed] == [body["id"]]
    assert "key" not in listed[0] and "key_hash" not in listed[0]
    secret = full_key.split("_", 1)[1]
    assert secret not in (await client.get("/admin/orgs/acme/keys")).text
    assert secret not in (await client.get("/admin/audit")).text
    assert all(secret not in str(row) for row in await pool.fetch("SELECT * FROM audit_log"))

    revoked = await client.post(f"/admin/keys/{body['id']}/revoke")
    assert revoked.status_code == 200 and revoked.json()["status"] == "revoked"
    assert await keystore.authenticate(full_key) is None  # same replica: immediately
    second = (await client.post("/admin/orgs/acme/keys", json={})).json()
    deleted = await client.delete(f"/admin/keys/{second['id']}")
    assert deleted.status_code == 200 and deleted.json()["status"] == "revoked"
    assert_error(await client.post("/admin/keys/0000000000000000/revoke"), 404, "key_id", "does not exist")
    assert_error(await client.post("/admin/orgs/nope/keys", json={}), 404, "org_id", "nope")

    actions = [r["action"] for r in await pool.fetch("SELECT action FROM audit_log ORDER BY id")]
    assert actions == ["org.create", "key.create", "key.revoke", "key.create", "key.revoke"]


@pytest.mark.parametrize(
    ("path", "payload", "param", "fragments"),
    [
        ("/admin/orgs", {"id": "Bad Id!", "name": "x"}, "id", ['"Bad Id!"', "2-63 characters of a-z"]),
        ("/admin/orgs", {"name": "x", "tier": "GOLD"}, "tier", ['"GOLD"', "1-32 characters"]),
        ("/admin/orgs", {"id": "acme"}, "name", ["name", "required"]),
        ("/admin/orgs", {"name": "x", "rpm": -5}, "rpm", ["-5", "greater than or equal to 1"]),
        ("/admin/orgs", {"name": "x", "rpm": "100"}, "rpm", ['"100"', "integer"]),
        ("/admin/orgs", {"name": "x", "color": "red"}, "color", ["unknown field 'color'"]),
        ("/admin/orgs", ["not", "an", "object"], None, ["JSON object"]),
        ("/admin/orgs/acme/keys", {"allowed_models": ["gpt-9"]}, "allowed_models", ["gpt-9", "chat-7b"]),
        ("/admin/orgs/acme/keys", {"expires_in_days": 0}, "expires_in_days", ["0", "greater than or equal to 1"]),
        ("/admin/orgs/acme/keys", {"expires_at": "2001-01-01T00:00:00Z"}, None, ["in the past"]),
        ("/admin/orgs/acme/keys", {"expires_at": "2099-01-01T00:00:00"}, "expires_at", ["timezone"]),
        ("/admin/orgs/acme/keys", {"burst": 1.5}, "burst", ["1.5"]),
    ],
)
async def test_validation_errors_name_field_value_and_rule(
    client: httpx.AsyncClient, path: str, payload: object, param: str | None, fragments: list[str]
) -> None:
    await client.post("/admin/orgs", json={"id": "acme", "name": "Acme"})
    assert_error(await client.post(path, json=payload), 400, param, *fragments)


async def test_patch_and_body_edge_cases(client: httpx.AsyncClient) -> None:
    await client.post("/admin/orgs", json={"id": "acme", "name": "Acme"})
    assert_error(await client.patch("/admin/orgs/acme", json={}), 400, None, "nothing to update", "rpm")
    assert_error(await client.patch("/admin/orgs/acme", json={"status": "deleted"}), 400, "status",
                 '"deleted"', "'active' or 'suspended'")
    assert_error(await client.patch("/admin/orgs/acme", json={"name": None}), 400, None, "name cannot be null")
    assert_error(await client.post("/admin/orgs", content=b"{not json"), 400, None, "not valid JSON")
    assert_error(await client.post("/admin/orgs", content=b"x" * 70_000), 413, "body", "limit")
    assert_error(await client.put("/admin/orgs", json={}), 405, None, "allowed: POST, GET")
    assert_error(await client.get("/admin/nothing-here"), 404, None, "no admin endpoint")
    assert_error(await client.get("/admin/audit", params={"limit": "0"}), 400, "limit", "'0'", "1 to 1000")


async def test_database_outage_is_a_503_not_a_traceback(
    client: httpx.AsyncClient, pg_control: object
) -> None:
    pg_control.stop()  # type: ignore[attr-defined]
    response = await client.get("/admin/orgs")
    assert_error(response, 503, None, "database unavailable")
    pg_control.start()  # type: ignore[attr-defined]


async def test_update_key_takes_effect_at_once_on_this_replica(
    client: httpx.AsyncClient, pool: asyncpg.Pool, keystore: KeyStore
) -> None:
    await client.post("/admin/orgs", json={"id": "acme", "name": "Acme"})
    created = (await client.post("/admin/orgs/acme/keys", json={"allowed_models": ["chat-7b"]})).json()
    full_key, key_id = created["key"], created["id"]
    before = await keystore.authenticate(full_key)
    assert before is not None and before.key_limits.tpm is None
    patched = await client.patch(f"/admin/keys/{key_id}", json={"tpm": 900, "allowed_models": ["sql-7b", "chat-7b"],
                                                                 "name": "renamed"})
    assert patched.status_code == 200, patched.text
    assert patched.json()["allowed_models"] == ["chat-7b", "sql-7b"] and patched.json()["name"] == "renamed"
    after = await keystore.authenticate(full_key)
    assert after is not None and after.key_limits.tpm == 900 and after.allowed_models == frozenset({"chat-7b", "sql-7b"})
    everything = await client.patch(f"/admin/keys/{key_id}", json={"allowed_models": None, "tpm": None})
    assert everything.json()["allowed_models"] is None and everything.json()["tpm"] is None
    principal = await keystore.authenticate(full_key)
    assert principal is not None and principal.allowed_models is None

    assert_error(await client.patch(f"/admin/keys/{key_id}", json={"allowed_models": ["gpt-9"]}), 400,
                 "allowed_models", "gpt-9")
    assert_error(await client.patch(f"/admin/keys/{key_id}", json={}), 400, None, "nothing to update")
    assert_error(await client.patch("/admin/keys/0000000000000000", json={"tpm": 5}), 404, "key_id", "does not exist")
    await client.post(f"/admin/keys/{key_id}/revoke")
    assert_error(await client.patch(f"/admin/keys/{key_id}", json={"tpm": 5}), 409, "key_id", "revoked")
    actions = [r["action"] for r in await pool.fetch("SELECT action FROM audit_log WHERE target_id = $1 ORDER BY id",
                                                     key_id)]
    assert actions == ["key.create", "key.update", "key.update", "key.revoke"]

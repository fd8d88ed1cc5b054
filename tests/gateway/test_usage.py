"""Usage API: aggregation by UTC day and model, monthly costs, org isolation, parameter errors."""

from __future__ import annotations

from collections.abc import AsyncIterator, MutableMapping
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

import asyncpg
import httpx2 as httpx
import pytest

from llm_gateway.keys import KeyLimits, OrgLimits, Principal
from llm_gateway.usage import UsageApp
from tests.gateway.gwdata_support import pool  # noqa: F401  (fixture)

UTC = timezone.utc
_counter = iter(range(1_000_000))


def principal(org_id: str) -> Principal:
    return Principal(key_id="0123456789abcdef", org_id=org_id, tier="standard", allowed_models=None,
                     key_limits=KeyLimits(None, None, None, None),
                     org_limits=OrgLimits(None, None, None, None, None))


async def add(pool: asyncpg.Pool, org: str, model: str, at: datetime, prompt: int, completion: int,
              cost: str, *, status: int = 200, cache_hit: bool = False) -> None:
    await pool.execute(
        "INSERT INTO usage_records (request_id, org_id, key_id, model, prompt_tokens, completion_tokens, "
        "latency_ms, status, cache_hit, cost_usd, created_at) VALUES ($1,$2,'k',$3,$4,$5,1.0,$6,$7,$8,$9)",
        f"req-{next(_counter)}", org, model, prompt, completion, status, cache_hit, Decimal(cost), at)


class AsPrincipal:
    """Stands in for the gateway app: authenticates (here: by a test header) and sets the principal."""

    def __init__(self, app: UsageApp) -> None:
        self.app = app

    async def __call__(self, scope: MutableMapping[str, Any], receive: Any, send: Any) -> None:
        org = dict(scope["headers"]).get(b"x-test-org")
        if org is not None:
            scope["llm_gateway.principal"] = principal(org.decode())
        await self.app(scope, receive, send)


@pytest.fixture
async def client(pool: asyncpg.Pool) -> AsyncIterator[httpx.AsyncClient]:
    app = AsPrincipal(UsageApp(pool, clock=lambda: date(2026, 11, 15)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as c:
        yield c


@pytest.fixture
async def seeded(pool: asyncpg.Pool) -> None:
    nov1 = datetime(2026, 11, 1, 10, 0, tzinfo=UTC)
    await add(pool, "acme", "chat-7b", nov1, 100, 10, "0.001", cache_hit=True)
    await add(pool, "acme", "chat-7b", nov1 + timedelta(hours=13, minutes=59), 200, 20, "0.002")  # 23:59 UTC
    await add(pool, "acme", "sql-7b", nov1, 50, 5, "0.0005", status=500)
    # 23:30 at UTC-2 is 01:30 UTC on Nov 2: days are UTC days.
    await add(pool, "acme", "chat-7b", datetime(2026, 11, 1, 23, 30, tzinfo=timezone(timedelta(hours=-2))),
              1, 1, "0.0000001")
    await add(pool, "acme", "chat-7b", datetime(2026, 10, 31, 23, 59, 59, tzinfo=UTC), 7, 7, "1")  # before range
    await add(pool, "acme", "chat-7b", datetime(2026, 12, 1, 0, 0, tzinfo=UTC), 9, 9, "2")  # next month
    for hour in range(5):  # another org, same days and models, much bigger numbers
        await add(pool, "globex", "chat-7b", nov1 + timedelta(hours=hour), 10_000, 1_000, "5")


async def test_daily_usage_by_day_and_model(client: httpx.AsyncClient, seeded: None) -> None:
    response = await client.get("/v1/usage", params={"start": "2026-11-01", "end": "2026-11-02"},
                                headers={"x-test-org": "acme"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["org_id"], body["start"], body["end"]) == ("acme", "2026-11-01", "2026-11-02")
    assert body["data"] == [
        {"date": "2026-11-01", "model": "chat-7b", "requests": 2, "errors": 0, "prompt_tokens": 300,
         "completion_tokens": 30, "total_tokens": 330, "cost_usd": 0.003, "cache_hits": 1},
        {"date": "2026-11-01", "model": "sql-7b", "requests": 1, "errors": 1, "prompt_tokens": 50,
         "completion_tokens": 5, "total_tokens": 55, "cost_usd": 0.0005, "cache_hits": 0},
        {"date": "2026-11-02", "model": "chat-7b", "requests": 1, "errors": 0, "prompt_tokens": 1,
         "completion_tokens": 1, "total_tokens": 2, "cost_usd": 0.0000001, "cache_hits": 0},
    ]
    assert body["totals"] == {"requests": 4, "errors": 1, "prompt_tokens": 351, "completion_tokens": 36,
                              "total_tokens": 387, "cache_hits": 1, "cost_usd": 0.0035001}
    only_sql = await client.get("/v1/usage", params={"start": "2026-11-01", "end": "2026-11-30", "model": "sql-7b"},
                                headers={"x-test-org": "acme"})
    assert [row["model"] for row in only_sql.json()["data"]] == ["sql-7b"]


async def test_default_range_is_the_last_seven_days(client: httpx.AsyncClient, pool: asyncpg.Pool) -> None:
    await add(pool, "acme", "chat-7b", datetime(2026, 11, 9, 12, tzinfo=UTC), 1, 1, "0")  # 15 - 6 = 9: inside
    await add(pool, "acme", "chat-7b", datetime(2026, 11, 8, 12, tzinfo=UTC), 1, 1, "0")  # outside
    body = (await client.get("/v1/usage", headers={"x-test-org": "acme"})).json()
    assert (body["start"], body["end"]) == ("2026-11-09", "2026-11-15")
    assert [row["date"] for row in body["data"]] == ["2026-11-09"]


async def test_monthly_costs(client: httpx.AsyncClient, seeded: None) -> None:
    body = (await client.get("/v1/organization/costs", params={"month": "2026-11"},
                             headers={"x-test-org": "acme"})).json()
    assert body["month"] == "2026-11" and body["currency"] == "usd" and body["org_id"] == "acme"
    assert body["total_cost_usd"] == 0.0035001 and body["total_requests"] == 4
    assert body["data"] == [
        {"model": "chat-7b", "requests": 3, "prompt_tokens": 301, "completion_tokens": 31, "cost_usd": 0.0030001},
        {"model": "sql-7b", "requests": 1, "prompt_tokens": 50, "completion_tokens": 5, "cost_usd": 0.0005},
    ]
    december = (await client.get("/v1/organization/costs", params={"month": "2026-12"},
                                 headers={"x-test-org": "acme"})).json()
    assert december["total_cost_usd"] == 2.0 and december["total_requests"] == 1
    default = (await client.get("/v1/organization/costs", headers={"x-test-org": "acme"})).json()
    assert default["month"] == "2026-11"


async def test_an_org_never_sees_another_orgs_usage(client: httpx.AsyncClient, seeded: None) -> None:
    params = {"start": "2026-10-01", "end": "2026-12-31", "org_id": "globex"}  # a smuggled org_id is ignored
    acme = (await client.get("/v1/usage", params=params, headers={"x-test-org": "acme"})).json()
    assert acme["org_id"] == "acme" and acme["totals"]["requests"] == 6
    assert all(row["prompt_tokens"] < 10_000 for row in acme["data"])
    globex = (await client.get("/v1/usage", params=params, headers={"x-test-org": "globex"})).json()
    assert globex["totals"]["requests"] == 5 and globex["totals"]["prompt_tokens"] == 50_000
    nobody = (await client.get("/v1/usage", params=params, headers={"x-test-org": "initech"})).json()
    assert nobody["data"] == [] and nobody["totals"]["requests"] == 0
    costs = (await client.get("/v1/organization/costs", params={"month": "2026-11", "org_id": "acme"},
                              headers={"x-test-org": "globex"})).json()
    assert costs["org_id"] == "globex" and costs["total_cost_usd"] == 25.0


@pytest.mark.parametrize(
    ("path", "params", "param", "fragment"),
    [
        ("/v1/usage", {"start": "2026-13-01"}, "start", "'2026-13-01'"),
        ("/v1/usage", {"start": "20261101"}, "start", "YYYY-MM-DD"),
        ("/v1/usage", {"end": "yesterday"}, "end", "'yesterday'"),
        ("/v1/usage", {"start": ""}, "start", "YYYY-MM-DD"),
        ("/v1/usage", {"start": "2026-11-05", "end": "2026-11-01"}, "start", "after end"),
        ("/v1/usage", {"start": "2024-01-01", "end": "2026-01-01"}, "start", "at most 366 days"),
        ("/v1/organization/costs", {"month": "2026-13"}, "month", "YYYY-MM"),
        ("/v1/organization/costs", {"month": "november"}, "month", "'november'"),
        ("/v1/organization/costs", {"month": "2026-11-01"}, "month", "YYYY-MM"),
    ],
)
async def test_bad_parameters_are_400_naming_the_parameter(
    client: httpx.AsyncClient, path: str, params: dict[str, str], param: str, fragment: str
) -> None:
    response = await client.get(path, params=params, headers={"x-test-org": "acme"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"
    assert fragment in error["message"]


async def test_unauthenticated_and_wrong_method(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v1/usage")).status_code == 401
    response = await client.post("/v1/usage", headers={"x-test-org": "acme"})
    assert response.status_code == 405 and response.headers["allow"] == "GET"

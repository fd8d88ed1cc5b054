"""The usage API for API-key holders: their own org's usage and costs, never anyone else's.

    GET /v1/usage?start=YYYY-MM-DD&end=YYYY-MM-DD[&model=NAME]
        per UTC day and model: requests, errors, prompt/completion/total tokens, cost, cache hits.
        ``start`` and ``end`` are inclusive; default: the last 7 days; at most 366 days.
    GET /v1/organization/costs?month=YYYY-MM
        the month's cost by model and in total (default: the current UTC month).

The parent app has already authenticated the caller and put its ``Principal`` in
``scope["llm_gateway.principal"]``; the org filter comes only from there, never from a parameter.
"""

from __future__ import annotations

import logging
import re
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs

import asyncpg

from llm_gateway.errors import InvalidRequest, MethodNotAllowed, NotFound, Unauthorized
from llm_gateway.http import Receive, Scope, Send, answer_json_api

log = logging.getLogger(__name__)

MAX_RANGE_DAYS = 366
DEFAULT_RANGE_DAYS = 7
_MONTH = re.compile(r"^(\d{4})-(\d{2})$")

_DAILY_SQL = """
SELECT (created_at AT TIME ZONE 'UTC')::date AS day, model,
       count(*) AS requests,
       count(*) FILTER (WHERE status >= 400) AS errors,
       coalesce(sum(prompt_tokens), 0)::bigint AS prompt_tokens,
       coalesce(sum(completion_tokens), 0)::bigint AS completion_tokens,
       coalesce(sum(cost_usd), 0) AS cost_usd,
       count(*) FILTER (WHERE cache_hit) AS cache_hits
FROM usage_records
WHERE org_id = $1 AND created_at >= $2 AND created_at < $3 AND ($4::text IS NULL OR model = $4)
GROUP BY 1, 2
ORDER BY 1, 2
"""

_MONTHLY_SQL = """
SELECT model, count(*) AS requests,
       coalesce(sum(prompt_tokens), 0)::bigint AS prompt_tokens,
       coalesce(sum(completion_tokens), 0)::bigint AS completion_tokens,
       coalesce(sum(cost_usd), 0) AS cost_usd
FROM usage_records
WHERE org_id = $1 AND created_at >= $2 AND created_at < $3
GROUP BY model
ORDER BY model
"""


class UsageApp:
    def __init__(self, pool: asyncpg.Pool, *, clock: Any = None) -> None:
        self._pool = pool
        self._today = clock or (lambda: datetime.now(timezone.utc).date())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return

        async def answer() -> tuple[int, object]:
            return 200, await self._dispatch(scope)

        await answer_json_api(send, answer, api="usage", unavailable="usage data temporarily unavailable", log=log,
                              request=str(scope["path"]))

    async def _dispatch(self, scope: Scope) -> dict[str, Any]:
        principal = scope.get("llm_gateway.principal")
        if principal is None:
            raise Unauthorized("missing API key")
        path = _full_path(scope).rstrip("/")
        if path not in ("/v1/usage", "/v1/organization/costs"):
            raise NotFound(f"no usage endpoint at {scope['path']}")
        if scope["method"] != "GET":
            raise MethodNotAllowed(f"{scope['method']} is not allowed on {path}; allowed: GET",
                                   headers=[(b"allow", b"GET")])
        query = _query(scope)
        if path == "/v1/usage":
            return await self.daily_usage(principal.org_id, query)
        return await self.monthly_costs(principal.org_id, query)

    async def daily_usage(self, org_id: str, query: dict[str, str]) -> dict[str, Any]:
        today = self._today()
        end = _parse_day(query, "end") or today
        start = _parse_day(query, "start") or end - timedelta(days=DEFAULT_RANGE_DAYS - 1)
        if start > end:
            raise InvalidRequest(f"invalid start: {start.isoformat()} is after end {end.isoformat()}; "
                                 "start must be on or before end", param="start")
        if (end - start).days + 1 > MAX_RANGE_DAYS:
            raise InvalidRequest(f"invalid range: {start.isoformat()}..{end.isoformat()} spans "
                                 f"{(end - start).days + 1} days; at most {MAX_RANGE_DAYS} days", param="start")
        model = query.get("model") or None
        rows = await self._pool.fetch(_DAILY_SQL, org_id, _midnight(start), _midnight(end + timedelta(days=1)), model)
        data = [
            {
                "date": row["day"].isoformat(), "model": row["model"], "requests": row["requests"],
                "errors": row["errors"], "prompt_tokens": row["prompt_tokens"],
                "completion_tokens": row["completion_tokens"],
                "total_tokens": row["prompt_tokens"] + row["completion_tokens"],
                "cost_usd": _money(row["cost_usd"]), "cache_hits": row["cache_hits"],
            }
            for row in rows
        ]
        totals = {
            field: sum(item[field] for item in data)
            for field in ("requests", "errors", "prompt_tokens", "completion_tokens", "total_tokens", "cache_hits")
        }
        totals["cost_usd"] = _money(sum((row["cost_usd"] for row in rows), Decimal(0)))
        return {"object": "usage", "org_id": org_id, "start": start.isoformat(), "end": end.isoformat(),
                "data": data, "totals": totals}

    async def monthly_costs(self, org_id: str, query: dict[str, str]) -> dict[str, Any]:
        raw = query.get("month")
        if raw is None:
            first = self._today().replace(day=1)
        else:
            match = _MONTH.match(raw)
            if match is None or not 1 <= int(match.group(2)) <= 12 or int(match.group(1)) < 1970:
                raise InvalidRequest(f"invalid month: got {raw!r}; expected YYYY-MM, e.g. 2026-11", param="month")
            first = date(int(match.group(1)), int(match.group(2)), 1)
        after = (first + timedelta(days=32)).replace(day=1)
        rows = await self._pool.fetch(_MONTHLY_SQL, org_id, _midnight(first), _midnight(after))
        return {
            "object": "organization.costs", "org_id": org_id, "month": first.strftime("%Y-%m"), "currency": "usd",
            "total_cost_usd": _money(sum((row["cost_usd"] for row in rows), Decimal(0))),
            "total_requests": sum(row["requests"] for row in rows),
            "data": [
                {"model": row["model"], "requests": row["requests"], "prompt_tokens": row["prompt_tokens"],
                 "completion_tokens": row["completion_tokens"], "cost_usd": _money(row["cost_usd"])}
                for row in rows
            ],
        }


def _query(scope: Scope) -> dict[str, str]:
    parsed = parse_qs(scope.get("query_string", b"").decode("latin-1"), keep_blank_values=True)
    return {name: values[-1] for name, values in parsed.items()}


def _parse_day(query: dict[str, str], name: str) -> date | None:
    raw = query.get(name)
    if raw is None:
        return None
    try:
        if len(raw) != 10:
            raise ValueError
        return date.fromisoformat(raw)
    except ValueError:
        raise InvalidRequest(f"invalid {name}: got {raw!r}; expected a date YYYY-MM-DD, e.g. 2026-11-01",
                             param=name) from None


def _midnight(day: date) -> datetime:
    return datetime.combine(day, time.min, tzinfo=timezone.utc)


def _money(value: Decimal) -> float:
    # Stored with 10 decimals; clients get dollars rounded to a millionth of a cent.
    return float(round(value, 8))


def _full_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and not path.startswith(root):
        path = root + path  # an older-style mount that stripped the prefix
    return path

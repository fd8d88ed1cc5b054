"""The admin API, a pure-ASGI sub-app mounted at ``/admin/``: organisations, API keys, audit log.

Every request needs the admin token (``Authorization: Bearer <token>`` or ``X-Admin-Token``), compared in
constant time; without a configured token the admin API refuses everything. Every change writes an
``audit_log`` row in the same transaction (actor from ``X-Admin-Actor``, default ``admin``); the log never
holds a key, a secret or a hash. Endpoints (bodies are JSON; errors use OpenAI's error format):

    POST   /admin/orgs                    create an org (limits/quotas optional; quotas default to the seed)
    GET    /admin/orgs                    list orgs
    GET    /admin/orgs/{org}              one org
    PATCH  /admin/orgs/{org}              change name, tier, status, limits, quotas (null = unlimited)
    POST   /admin/orgs/{org}/keys         create a key: the full key is in this response only
    GET    /admin/orgs/{org}/keys         list keys (never the secret or its hash)
    PATCH  /admin/keys/{key_id}           change a key's name, models, tier, limits, expiry
    POST   /admin/keys/{key_id}/revoke    revoke a key (DELETE /admin/keys/{key_id} does the same)
    GET    /admin/audit?limit=&target_id= latest audit entries
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime, timedelta, timezone
from typing import Annotated, Any, Literal
from urllib.parse import parse_qs

import asyncpg
import orjson
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from llm_gateway.errors import InvalidRequest, MethodNotAllowed, NotFound, Unauthorized
from llm_gateway.http import Receive, Scope, Send, answer_json_api, header, read_body
from llm_gateway.keys import ORG_LIMIT_FIELDS, KeyStore

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 64 * 1024
_INT32_MAX = 2**31 - 1

RateLimit = Annotated[int, Field(ge=1, le=_INT32_MAX)]
Quota = Annotated[int, Field(ge=1, le=2**62)]
Tier = Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,31}$")]
OrgName = Annotated[str, Field(min_length=1, max_length=200)]
ModelName = Annotated[str, Field(min_length=1, max_length=200)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class OrgCreate(_Strict):
    id: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9-]{1,62}$")] | None = None
    name: OrgName
    tier: Tier = "standard"
    rpm: RateLimit | None = None
    tpm: RateLimit | None = None
    daily_tokens: Quota | None = None
    daily_requests: Quota | None = None
    monthly_tokens: Quota | None = None


class OrgUpdate(_Strict):
    name: OrgName | None = None
    tier: Tier | None = None
    status: Literal["active", "suspended"] | None = None
    rpm: RateLimit | None = None
    tpm: RateLimit | None = None
    daily_tokens: Quota | None = None
    daily_requests: Quota | None = None
    monthly_tokens: Quota | None = None

    @model_validator(mode="after")
    def _something_to_change(self) -> OrgUpdate:
        if not self.model_fields_set:
            raise ValueError(f"nothing to update; send at least one of: {', '.join(OrgUpdate.model_fields)}")
        for field in ("name", "tier", "status"):
            if field in self.model_fields_set and getattr(self, field) is None:
                raise ValueError(f"{field} cannot be null")
        return self


class KeyCreate(_Strict):
    name: Annotated[str, Field(max_length=200)] = ""
    allowed_models: Annotated[list[ModelName], Field(max_length=1000)] | None = None
    tier: Tier | None = None
    rpm: RateLimit | None = None
    tpm: RateLimit | None = None
    burst: RateLimit | None = None
    max_inflight: RateLimit | None = None
    expires_at: AwareDatetime | None = None
    expires_in_days: Annotated[int, Field(ge=1, le=3650)] | None = None

    @model_validator(mode="after")
    def _one_expiry(self) -> KeyCreate:
        if self.expires_at is not None and self.expires_in_days is not None:
            raise ValueError("give expires_at or expires_in_days, not both")
        if self.expires_at is not None and self.expires_at <= datetime.now(timezone.utc):
            raise ValueError(f"expires_at {self.expires_at.isoformat()} is in the past; it must be in the future")
        return self

    def expiry(self) -> datetime | None:
        if self.expires_in_days is not None:
            return datetime.now(timezone.utc) + timedelta(days=self.expires_in_days)
        return self.expires_at


class KeyUpdate(_Strict):
    name: Annotated[str, Field(max_length=200)] | None = None
    allowed_models: Annotated[list[ModelName], Field(max_length=1000)] | None = None  # null = every model
    tier: Tier | None = None  # null = the org's tier
    rpm: RateLimit | None = None
    tpm: RateLimit | None = None
    burst: RateLimit | None = None
    max_inflight: RateLimit | None = None
    expires_at: AwareDatetime | None = None  # null = never

    @model_validator(mode="after")
    def _something_to_change(self) -> KeyUpdate:
        if not self.model_fields_set:
            raise ValueError(f"nothing to update; send at least one of: {', '.join(KeyUpdate.model_fields)}")
        if "name" in self.model_fields_set and self.name is None:
            raise ValueError("name cannot be null")
        if self.expires_at is not None and self.expires_at <= datetime.now(timezone.utc):
            raise ValueError(f"expires_at {self.expires_at.isoformat()} is in the past; it must be in the future")
        return self


Handler = Callable[["_Request"], Awaitable[tuple[int, object]]]


class _Request:
    def __init__(self, scope: Scope, receive: Receive, params: list[str]) -> None:
        self.scope = scope
        self.receive = receive
        self.params = params
        actor = (header(scope, b"x-admin-actor") or b"admin").decode("utf-8", "replace").strip()
        self.actor = actor[:100] if re.fullmatch(r"[\w.@+:/ -]{1,200}", actor) else "admin"
        forwarded = header(scope, b"x-forwarded-for")
        client = scope.get("client")
        self.remote_addr = (forwarded.decode("latin-1").split(",")[0].strip() if forwarded
                            else client[0] if client else None)

    async def json(self, model: type[_Strict]) -> Any:
        body = await read_body(self.receive, MAX_BODY_BYTES)
        try:
            return model.model_validate_json(body or b"{}")
        except ValidationError as exc:
            raise _invalid(exc) from None

    def query(self, name: str) -> str | None:
        values = parse_qs(self.scope.get("query_string", b"").decode("latin-1")).get(name)
        return values[-1] if values else None


def _invalid(exc: ValidationError) -> InvalidRequest:
    """A 400 naming the first bad field, the value given and what is allowed."""
    error = exc.errors(include_url=False)[0]
    field = ".".join(str(part) for part in error["loc"]) or None
    if error["type"] == "json_invalid":
        return InvalidRequest(f"request body is not valid JSON: {error['msg']}", param=None)
    if error["type"] == "extra_forbidden":
        return InvalidRequest(f"unknown field {field!r}", param=field)
    if error["type"] == "model_type" or error["type"] == "model_attributes_type":
        return InvalidRequest("request body must be a JSON object", param=None)
    if not field:  # model-level rule
        return InvalidRequest(str(error["msg"]).removeprefix("Value error, "), param=None)
    given = orjson.dumps(error.get("input"), default=str).decode()[:200]
    rule = _PATTERN_HELP.get(field, error["msg"]) if error["type"] == "string_pattern_mismatch" else error["msg"]
    return InvalidRequest(f"invalid {field}: got {given}; {rule}", param=field)


_PATTERN_HELP = {
    "id": "must be 2-63 characters of a-z, 0-9 and '-', starting with a letter or digit",
    "tier": "must be 1-32 characters of a-z, 0-9, '_' and '-', starting with a letter or digit",
}


class AdminApp:
    def __init__(
        self, keys: KeyStore, pool: asyncpg.Pool, admin_token: str,
        *, model_names: Callable[[], Iterable[str]] | None = None,
    ) -> None:
        self._keys = keys
        self._pool = pool
        self._token = admin_token.encode()
        self._token_digest = hashlib.sha256(self._token).digest()
        self._model_names = model_names  # when given, allowed_models must name catalog models
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = [
            ("POST", re.compile(r"^/orgs$"), self._create_org),
            ("GET", re.compile(r"^/orgs$"), self._list_orgs),
            ("GET", re.compile(r"^/orgs/([^/]+)$"), self._get_org),
            ("PATCH", re.compile(r"^/orgs/([^/]+)$"), self._update_org),
            ("POST", re.compile(r"^/orgs/([^/]+)/keys$"), self._create_key),
            ("GET", re.compile(r"^/orgs/([^/]+)/keys$"), self._list_keys),
            ("POST", re.compile(r"^/keys/([^/]+)/revoke$"), self._revoke_key),
            ("DELETE", re.compile(r"^/keys/([^/]+)$"), self._revoke_key),
            ("PATCH", re.compile(r"^/keys/([^/]+)$"), self._update_key),
            ("GET", re.compile(r"^/audit$"), self._audit),
        ]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return

        async def answer() -> tuple[int, object]:
            self._authorize(scope)
            return await self._dispatch(scope, receive)

        await answer_json_api(send, answer, api="admin", unavailable="database unavailable", log=log,
                              request=f"{scope['method']} {scope['path']}")

    def _authorize(self, scope: Scope) -> None:
        given = header(scope, b"x-admin-token")
        if given is None:
            authorization = header(scope, b"authorization") or b""
            scheme, _, credentials = authorization.partition(b" ")
            given = credentials.strip() if scheme.lower() == b"bearer" else b""
        if not self._token:
            raise Unauthorized("the admin API is disabled: no admin token is configured", code="admin_disabled")
        # Comparing digests keeps the check constant-time even when the lengths differ.
        if not given or not hmac.compare_digest(hashlib.sha256(given).digest(), self._token_digest):
            raise Unauthorized("missing or invalid admin token", code="invalid_admin_token")

    async def _dispatch(self, scope: Scope, receive: Receive) -> tuple[int, object]:
        path = _sub_path(scope)
        allowed: list[str] = []
        for method, pattern, handler in self._routes:
            match = pattern.match(path)
            if match is None:
                continue
            if method == scope["method"]:
                return await handler(_Request(scope, receive, list(match.groups())))
            allowed.append(method)
        if allowed:
            raise MethodNotAllowed(f"{scope['method']} is not allowed on {scope['path']}; allowed: "
                                   f"{', '.join(allowed)}", headers=[(b"allow", ", ".join(allowed).encode())])
        raise NotFound(f"no admin endpoint at {scope['path']}")

    # ---- organisations ---------------------------------------------------------------------------

    async def _create_org(self, request: _Request) -> tuple[int, object]:
        body: OrgCreate = await request.json(OrgCreate)
        org_id = body.id or f"org-{secrets.token_hex(4)}"
        limits = {field: getattr(body, field) for field in ORG_LIMIT_FIELDS if field in body.model_fields_set}
        org = await self._keys.create_org(org_id, body.name, tier=body.tier, limits=limits,
                                          actor=request.actor, remote_addr=request.remote_addr)
        return 201, org.to_json()

    async def _list_orgs(self, request: _Request) -> tuple[int, object]:
        return 200, {"object": "list", "data": [org.to_json() for org in await self._keys.list_orgs()]}

    async def _get_org(self, request: _Request) -> tuple[int, object]:
        return 200, (await self._keys.get_org(request.params[0])).to_json()

    async def _update_org(self, request: _Request) -> tuple[int, object]:
        body: OrgUpdate = await request.json(OrgUpdate)
        changes = {field: getattr(body, field) for field in body.model_fields_set}
        org = await self._keys.update_org(request.params[0], changes, actor=request.actor,
                                          remote_addr=request.remote_addr)
        return 200, org.to_json()

    # ---- keys ------------------------------------------------------------------------------------

    async def _create_key(self, request: _Request) -> tuple[int, object]:
        body: KeyCreate = await request.json(KeyCreate)
        self._check_models(body.allowed_models)
        limits = {field: getattr(body, field) for field in ("rpm", "tpm", "burst", "max_inflight")}
        full_key, info = await self._keys.create_key(
            request.params[0], name=body.name, allowed_models=body.allowed_models, tier=body.tier,
            limits={k: v for k, v in limits.items() if v is not None}, expires_at=body.expiry(),
            actor=request.actor, remote_addr=request.remote_addr,
        )
        return 201, {**info.to_json(), "key": full_key}

    async def _update_key(self, request: _Request) -> tuple[int, object]:
        body: KeyUpdate = await request.json(KeyUpdate)
        self._check_models(body.allowed_models)
        changes = {field: getattr(body, field) for field in body.model_fields_set}
        info = await self._keys.update_key(request.params[0], changes, actor=request.actor,
                                           remote_addr=request.remote_addr)
        return 200, info.to_json()

    def _check_models(self, models: list[str] | None) -> None:
        if models is None or self._model_names is None:
            return
        known = set(self._model_names())
        unknown = sorted(set(models) - known)
        if unknown:
            raise InvalidRequest(f"invalid allowed_models: {unknown} are not in the model catalog; "
                                 f"allowed: {sorted(known)}", param="allowed_models")

    async def _list_keys(self, request: _Request) -> tuple[int, object]:
        keys = await self._keys.list_keys(request.params[0])
        return 200, {"object": "list", "data": [key.to_json() for key in keys]}

    async def _revoke_key(self, request: _Request) -> tuple[int, object]:
        info = await self._keys.revoke_key(request.params[0], actor=request.actor, remote_addr=request.remote_addr)
        return 200, info.to_json()

    # ---- audit -----------------------------------------------------------------------------------

    async def _audit(self, request: _Request) -> tuple[int, object]:
        raw_limit = request.query("limit") or "100"
        if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 1000:
            raise InvalidRequest(f"invalid limit: got {raw_limit!r}; must be an integer from 1 to 1000", param="limit")
        target_id = request.query("target_id")
        rows = await self._pool.fetch(
            "SELECT id, at, actor, action, target_type, target_id, details::text AS details, remote_addr "
            "FROM audit_log WHERE ($1::text IS NULL OR target_id = $1) ORDER BY id DESC LIMIT $2",
            target_id, int(raw_limit),
        )
        return 200, {"object": "list", "data": [
            {**dict(row), "at": row["at"].isoformat(), "details": orjson.loads(row["details"])} for row in rows
        ]}


def _sub_path(scope: Scope) -> str:
    """The path below the mount point, whether or not the parent app stripped ``/admin``."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):]
    if path == "/admin" or path.startswith("/admin/"):
        path = path[len("/admin"):]
    return path.rstrip("/") or "/"

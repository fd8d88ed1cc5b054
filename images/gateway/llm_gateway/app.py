"""The gateway's ASGI app. The hot path reads top to bottom in ``Gateway.proxy``:

request id → authenticate → read + validate body → model lookup and permission → limits and quotas (one
Redis round trip) → response cache → demand counted for the requested model → (a model without a healthy
backend: a fallback that has one, or the request is held while the model wakes) → upstream with retries,
breakers and fallbacks (streamed or not) → send → afterwards: reconcile reserved tokens, record usage,
metrics, one JSON log line.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from llm_gateway import errors, metrics
from llm_gateway.cache import ResponseCache, cache_key, wants_cache
from llm_gateway.catalog import Catalog, ModelEntry
from llm_gateway.http import (
    SECURITY_HEADERS, ClientDisconnected, Headers, Receive, Scope, Send, header, read_body, send_bytes,
    send_error, send_json,
)
from llm_gateway.limits import STATUS_QUOTA, STATUS_TOO_LARGE, Limiter, Reservation
from llm_gateway.logs import JsonLogger, client_request_id, new_request_id
from llm_gateway.metering import UsageRecord
from llm_gateway.routing import Backend, Router, backoff_delay
from llm_gateway.settings import Settings
from llm_gateway.upstream import (
    RETRYABLE_ERRORS, RETRYABLE_STATUSES, Timeouts, UpstreamClient, UpstreamError, UpstreamResponse,
)

# path → (endpoint label, model kinds it serves)
ENDPOINTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "/v1/chat/completions": ("chat", ("chat",)),
    "/v1/completions": ("completions", ("chat", "completion")),
    "/v1/embeddings": ("embeddings", ("embedding",)),
    "/v1/rerank": ("rerank", ("rerank",)),
}
ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})
CONTENT_PART_TYPES = frozenset({"text", "image_url", "input_audio", "audio_url", "video_url", "file",
                                "refusal"})
# A request that waited for a model to wake and timed out is held again when the client retries, so a short hint.
WAKE_RETRY_AFTER_S = 5
SSE_HEADERS: Headers = [(b"content-type", b"text/event-stream; charset=utf-8"), (b"x-accel-buffering", b"no"),
                        *SECURITY_HEADERS]


@dataclass(slots=True)
class RequestContext:
    """Everything one request accumulates on its way; ``finish`` turns it into usage, metrics and a log line."""

    request_id: str  # always generated here: unique, so usage rows and in-flight slots never collide
    started: float
    endpoint: str
    client_request_id: str | None = None  # the client's own x-request-id, echoed back and logged
    prompt_log: Any = None
    principal: Any = None
    entry: ModelEntry | None = None
    served_model: str | None = None
    backend: Backend | None = None
    reservation: Reservation | None = None
    status: int = 0
    stream: bool = False
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usage_known: bool = False
    cache: str | None = None
    ttft_s: float | None = None
    attempts: int = 0
    error_type: str | None = None
    fallback_from: str | None = None
    admitted: bool = False
    client_wants_usage: bool = False
    prompt_estimate: int = 0
    client_left: bool = False  # set by forward before it cancels the exchange because the client went away


class Gateway:
    def __init__(self, settings: Settings, catalog: Catalog, keystore: Any, meter: Any, limiter: Limiter,
                 cache: ResponseCache, router: Router, upstream: UpstreamClient, logger: JsonLogger,
                 *, admin_app: Any = None, usage_app: Any = None, pool: Any = None) -> None:
        self.settings = settings
        self.catalog = catalog
        self.keystore = keystore
        self.meter = meter
        self.limiter = limiter
        self.cache = cache
        self.router = router
        self.upstream = upstream
        self.log = logger
        self.admin_app = admin_app
        self.usage_app = usage_app
        self.pool = pool
        self.draining = False
        self._drained = asyncio.Event()
        self.inflight = 0
        self.held = 0  # requests waiting for a model to wake
        # one demand series per catalog model from the start, at 0: KEDA's rate() sees the first request
        self._demand = {entry.name: metrics.MODEL_DEMAND.labels(entry.name) for entry in catalog.models}
        for entry in catalog.models:
            metrics.HELD.labels(entry.name).set(0)
        self._background: set[asyncio.Task[Any]] = set()
        self._timeout_plain = Timeouts(settings.connect_timeout_s, settings.request_timeout_s)
        self._timeout_stream = Timeouts(settings.connect_timeout_s, settings.request_timeout_s,
                                        settings.stream_idle_timeout_s)

    # ------------------------------------------------------------------ ASGI entry
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        method: str = scope["method"]
        route = ENDPOINTS.get(path)
        if route is not None:
            if method != "POST":
                await send_error(send, 405, f"{method} is not allowed on {path}; use POST", "invalid_request_error",
                                 code="method_not_allowed", headers=[(b"allow", b"POST")])
                return
            await self.proxy(scope, receive, send, route[0], route[1])
        elif path == "/health/live":
            await send_json(send, 200, {"status": "ok"})
        elif path == "/health/ready":
            await self.readiness(send)
        elif path == "/health/serving":
            await self.serving(send)
        elif path == "/v1/models" and method == "GET":
            await self.authenticated(scope, receive, send, self.list_models)
        elif path.startswith("/admin/") or path == "/admin":
            if self.admin_app is None:
                await send_error(send, 404, "admin API not configured", "invalid_request_error", code="not_found")
            else:
                await self.admin_app(scope, receive, send)
        elif path in ("/v1/usage", "/v1/organization/costs"):
            await self.authenticated(scope, receive, send, self.usage_app)
        else:
            await send_error(send, 404, f"no route for {method} {path}", "invalid_request_error",
                             code="not_found")

    # ------------------------------------------------------------------ the hot path
    async def proxy(self, scope: Scope, receive: Receive, send: Send, endpoint: str,
                    kinds: tuple[str, ...]) -> None:
        ctx = RequestContext(new_request_id(), time.perf_counter(), endpoint)
        ctx.client_request_id = client_request_id(header(scope, b"x-request-id"))
        base_headers: Headers = [(b"x-request-id", (ctx.client_request_id or ctx.request_id).encode())]
        self.inflight += 1
        metrics.INFLIGHT.inc()
        try:
            ctx.principal = await self.authenticate(scope)
            body = self.parse_body(await read_body(receive, self.settings.max_body_bytes))
            entry = self.resolve_model(ctx.principal, body, kinds, endpoint)
            ctx.entry = entry
            ctx.served_model = entry.name
            reserve, ctx.prompt_estimate, upstream_body = self.validate(entry, endpoint, body)
            if self.settings.log_prompts:
                ctx.prompt_log = body.get("messages") or body.get("prompt") or body.get("input") or body.get("query")
            ctx.stream = bool(body.get("stream"))
            options = body.get("stream_options")
            ctx.client_wants_usage = isinstance(options, dict) and options.get("include_usage") is True

            decision, ctx.reservation = await self.limiter.admit(ctx.principal, ctx.request_id, reserve)
            base_headers += decision.headers()
            if not decision.allowed:
                raise self.limit_error(decision, reserve)
            ctx.admitted = True

            cache_header = header(scope, b"x-llm-cache")
            key = None
            if self.cache.ttl_ms > 0 and wants_cache(cache_header, body, entry.kind):
                key = cache_key(ctx.principal.org_id, entry.name, upstream_body)
                hit = await self.cache.get(key)
                if hit is not None:
                    cached_body, ctx.prompt_tokens, ctx.completion_tokens = hit
                    ctx.usage_known, ctx.cache, ctx.status = True, "hit", 200
                    await send_bytes(send, 200, cached_body, [*base_headers, (b"x-llm-cache", b"hit")])
                    return
                ctx.cache = "miss"
            if ctx.cache:
                base_headers.append((b"x-llm-cache", ctx.cache.encode()))

            if ctx.stream:
                await self.forward_stream(ctx, scope, receive, send, upstream_body, base_headers)
            else:
                response_body = await self.forward(ctx, upstream_body, receive, send, base_headers)
                if key is not None and ctx.status == 200 and response_body is not None and not ctx.fallback_from:
                    self.spawn(self.cache.put(key, response_body, ctx.prompt_tokens, ctx.completion_tokens))
        except errors.GatewayError as exc:
            ctx.status = exc.status
            ctx.error_type = exc.code or exc.type
            await send_error(send, exc.status, exc.message, exc.type, exc.param, exc.code,
                             [*base_headers, *exc.headers])
        except ClientDisconnected:
            ctx.status = 499
            ctx.error_type = "client_disconnected"
        except Exception as exc:  # a bug must cost one request a 500, never the process
            ctx.status = 500
            ctx.error_type = "internal_error"
            self.log.error("internal_error", request_id=ctx.request_id, error=f"{type(exc).__name__}: {exc}")
            try:
                await send_error(send, 500, "internal gateway error", "server_error", code="internal_error",
                                 headers=base_headers)
            except Exception:
                pass
        finally:
            self.inflight -= 1
            metrics.INFLIGHT.dec()
            self.finish(ctx)

    # ------------------------------------------------------------------ steps of the hot path
    async def authenticate(self, scope: Scope) -> Any:
        raw = header(scope, b"authorization")
        if raw is None:
            metrics.REJECTIONS.labels("missing_key").inc()
            raise errors.Unauthorized(
                "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'.",
                headers=[(b"www-authenticate", b"Bearer")])
        scheme, _, token = raw.decode("latin-1").partition(" ")
        token = token.strip()
        principal = None
        if scheme.lower() == "bearer" and token:
            principal = await self.keystore.authenticate(token)
        if principal is None:
            metrics.REJECTIONS.labels("invalid_key").inc()
            raise errors.Unauthorized("Incorrect, revoked or expired API key provided.",
                                      headers=[(b"www-authenticate", b"Bearer")])
        return principal

    @staticmethod
    def parse_body(raw: bytes) -> dict[str, Any]:
        if not raw:
            raise errors.InvalidRequest("request body is empty; expected a JSON object", param="body")
        try:
            body = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise errors.InvalidRequest(f"request body is not valid JSON: {exc.msg} at position {exc.pos}",
                                        param="body", code="invalid_json") from None
        if not isinstance(body, dict):
            raise errors.InvalidRequest(f"request body must be a JSON object, got {_json_type(body)}",
                                        param="body")
        return body

    def resolve_model(self, principal: Any, body: dict[str, Any], kinds: tuple[str, ...],
                      endpoint: str) -> ModelEntry:
        name = body.get("model")
        if name is None:
            raise errors.InvalidRequest("missing required field 'model'", param="model", code="missing_required")
        if not isinstance(name, str):
            raise errors.InvalidRequest(f"'model' must be a string, got {_json_type(name)}", param="model")
        entry = self.catalog.lookup(name)
        allowed = principal.allowed_models
        if entry is None or (allowed is not None and entry.name not in allowed and name not in allowed):
            metrics.REJECTIONS.labels("model_not_found").inc()
            raise errors.ModelNotFound(
                f"The model '{name[:200]}' does not exist or you do not have access to it.", param="model")
        if entry.kind not in kinds:
            raise errors.InvalidRequest(
                f"model '{name}' is a {entry.kind} model and cannot serve /v1/{endpoint.replace('chat', 'chat/completions')}",
                param="model", code="wrong_endpoint")
        return entry

    def validate(self, entry: ModelEntry, endpoint: str,
                 body: dict[str, Any]) -> tuple[int, int, dict[str, Any]]:
        """``(tokens to reserve, prompt token estimate, body to send upstream)``; ``InvalidRequest`` naming the
        field on bad input."""
        upstream = dict(body)
        upstream["model"] = entry.name
        if endpoint in ("chat", "completions"):
            if endpoint == "chat":
                estimate = _validate_messages(body.get("messages"))
            else:
                estimate = _estimate_input(body.get("prompt"), "prompt")
            _check_type(body, "stream", bool)
            _check_number(body, "temperature", 0, 2)
            _check_number(body, "top_p", 0, 1)
            n = _check_int(body, "n", 1, 128) or 1
            _check_stop(body)
            asked = None
            for name in ("max_tokens", "max_completion_tokens"):
                value = _check_int(body, name, 1, None)
                if value is not None:
                    if value > entry.max_tokens_cap:
                        raise errors.InvalidRequest(
                            f"'{name}' is {value}, above this model's cap of {entry.max_tokens_cap}",
                            param=name, code="max_tokens_exceeded")
                    asked = value if asked is None else min(asked, value)
            if asked is None:
                asked = entry.max_tokens_cap
                if estimate + entry.max_tokens_cap <= entry.max_context:
                    upstream["max_tokens"] = entry.max_tokens_cap  # the cap also binds clients that ask nothing
            if body.get("stream"):
                options = body.get("stream_options")
                if options is not None and not isinstance(options, dict):
                    raise errors.InvalidRequest("'stream_options' must be an object", param="stream_options")
                upstream["stream_options"] = {**(options or {}), "include_usage": True}
            return estimate + asked * n, estimate, upstream
        if body.get("stream"):
            raise errors.InvalidRequest(f"'stream' is not supported on /v1/{endpoint}", param="stream")
        if endpoint == "embeddings":
            estimate = _estimate_input(body.get("input"), "input")
            return estimate, estimate, upstream
        query = body.get("query")
        if not isinstance(query, str) or not query:
            raise errors.InvalidRequest("'query' must be a non-empty string", param="query")
        documents = body.get("documents")
        if not isinstance(documents, list) or not documents:
            raise errors.InvalidRequest("'documents' must be a non-empty list", param="documents")
        _check_int(body, "top_n", 1, None)
        doc_chars = sum(len(d) if isinstance(d, str) else len(orjson.dumps(d)) for d in documents)
        estimate = (len(query) * len(documents) + doc_chars) // 4 + 1
        return estimate, estimate, upstream

    def limit_error(self, decision: Any, reserve: int) -> errors.GatewayError:
        """The 429; the x-ratelimit-* headers are already on the response's base headers."""
        metrics.REJECTIONS.labels(decision.reason).inc()
        if decision.status == STATUS_QUOTA:
            labels = {"daily_requests": ("daily request", "at 00:00 UTC"),
                      "daily_tokens": ("daily token", "at 00:00 UTC"),
                      "monthly_tokens": ("monthly token", "on the 1st of next month (UTC)")}
            label, resets = labels.get(decision.reason, (decision.reason, "when the period ends"))
            return errors.QuotaExceeded(
                f"Your organization's {label} quota is exhausted; it resets {resets}, or ask your administrator "
                "to raise it.", headers=[(b"x-should-retry", b"false")])
        if decision.status == STATUS_TOO_LARGE:
            return errors.RateLimited(
                f"Request too large: it needs {reserve} tokens (prompt estimate + max_tokens), more than the "
                f"{decision.reason} limit allows in one minute; lower max_tokens.",
                code="tokens_exceeding_limit", headers=[(b"x-should-retry", b"false")])
        retry_ms = max(decision.retry_after_ms, 1)
        what = {"key_rpm": "requests per minute for this key", "key_tpm": "tokens per minute for this key",
                "org_rpm": "requests per minute for your organization",
                "org_tpm": "tokens per minute for your organization",
                "inflight": "concurrent requests for this key"}
        label = what.get(decision.reason.removeprefix("local_"), decision.reason)
        return errors.RateLimited(
            f"Rate limit reached: {label}. Retry after {retry_ms} ms.",
            headers=[(b"retry-after", str(math.ceil(retry_ms / 1000)).encode()),
                     (b"retry-after-ms", str(retry_ms).encode())])

    # ------------------------------------------------------------------ upstream, non-streamed
    def attempt_plan(self, entry: ModelEntry) -> list[ModelEntry]:
        plan, seen = [entry], {entry.name}
        index = 0
        while index < len(plan):
            for name in plan[index].fallbacks:
                if name not in seen:
                    seen.add(name)
                    fallback = self.catalog.lookup(name)
                    if fallback is not None:
                        plan.append(fallback)
            index += 1
        return plan

    async def open_upstream(self, ctx: RequestContext, upstream_body: dict[str, Any],
                            affinity: bytes | None, receive: Receive) -> UpstreamResponse:
        """A response with a non-retryable status, after retries, breakers and fallbacks; ``ctx.backend`` set."""
        assert ctx.entry is not None
        self._demand[ctx.entry.name].inc()  # the model asked for, even if a fallback serves: that is what wakes it
        plan = self.attempt_plan(ctx.entry)
        if not self.router.has_healthy(ctx.entry.name):
            plan = await self.plan_for_sleeping_model(ctx.entry, plan, receive, ctx)
        timeout = self._timeout_stream if ctx.stream else self._timeout_plain
        path = "/v1/" + {"chat": "chat/completions"}.get(ctx.endpoint, ctx.endpoint)
        last_error = "no backend available"
        for entry in plan:
            if entry is not ctx.entry:
                metrics.FALLBACKS.labels(ctx.entry.name, entry.name).inc()
                ctx.fallback_from = ctx.entry.name
                ctx.served_model = entry.name
                upstream_body = {**upstream_body, "model": entry.name}
            payload = orjson.dumps(upstream_body)
            tried: list[Backend] = []
            for attempt in range(self.settings.max_retries + 1):
                backend = self.router.choose(entry, affinity, tried)
                if backend is None:
                    break
                if attempt > 0:
                    metrics.UPSTREAM_RETRIES.labels(entry.name).inc()
                tried.append(backend)
                ctx.attempts += 1
                if ctx.attempts == 1:
                    metrics.OVERHEAD.observe(time.perf_counter() - ctx.started)
                try:
                    response = await self.upstream.request(
                        "POST", backend.url, path, payload, timeout,
                        (("content-type", "application/json"), ("x-request-id", ctx.request_id)))
                except RETRYABLE_ERRORS as exc:
                    backend.release()
                    self.router.failure(backend)
                    last_error = f"{type(exc).__name__} from a {entry.name} backend"
                except TimeoutError:
                    backend.release()
                    self.router.failure(backend)
                    raise errors.UpstreamTimeout("the model server did not answer in time") from None
                except UpstreamError as exc:  # a malformed answer: not retryable
                    backend.release()
                    self.router.failure(backend)
                    raise errors.UpstreamError(f"the model server request failed ({type(exc).__name__})") from None
                except BaseException:  # cancelled: still give the backend its slot back
                    backend.release()
                    raise
                else:
                    if response.status in RETRYABLE_STATUSES:
                        response.release()
                        backend.release()
                        self.router.failure(backend)
                        last_error = f"HTTP {response.status} from a {entry.name} backend"
                    else:
                        ctx.backend = backend
                        return response
                if attempt < self.settings.max_retries:
                    await asyncio.sleep(backoff_delay(attempt, self.settings.retry_base_delay_s,
                                                      self.settings.retry_max_delay_s))
        metrics.REJECTIONS.labels("no_backend").inc()
        raise errors.ServiceUnavailable(f"model '{ctx.entry.name}' is unavailable: {last_error}",
                                        headers=[(b"retry-after", b"1")])

    async def plan_for_sleeping_model(self, requested: ModelEntry, plan: list[ModelEntry],
                                      receive: Receive, ctx: RequestContext | None = None) -> list[ModelEntry]:
        """The requested model has no healthy backend (scaled to zero and waking, or down). A fallback with a
        healthy backend serves at once; otherwise the request is held until one of the plan's models has one,
        for at most the model's ``wake_timeout_s`` (0: no holding, the attempts below answer as before). The client
        leaving or a drain ends the wait; the caller's ``finish`` then releases the limiter's slot and refunds."""
        healthy = [entry for entry in plan if self.router.has_healthy(entry.name)]
        if healthy or requested.wake_timeout_s <= 0:
            return healthy or plan
        name = requested.name
        retry = [(b"retry-after", str(WAKE_RETRY_AFTER_S).encode()),
                 (b"retry-after-ms", str(WAKE_RETRY_AFTER_S * 1000).encode()), (b"x-should-retry", b"true")]
        if self.held >= self.settings.max_held_requests or self.draining:
            metrics.WAKE_OUTCOMES.labels(name, "full" if not self.draining else "draining").inc()
            raise errors.ServiceUnavailable(
                f"model '{name}' is starting and this gateway is holding as many requests as it may; "
                f"retry in {WAKE_RETRY_AFTER_S} s", code="model_waking", headers=retry)
        self.held += 1
        metrics.HELD.labels(name).inc()
        waiter = asyncio.ensure_future(self.router.wait_healthy([entry.name for entry in plan],
                                                                requested.wake_timeout_s))
        left = asyncio.ensure_future(_wait_for_disconnect(receive))
        drained = asyncio.ensure_future(self._drained.wait())
        try:
            await asyncio.wait((waiter, left, drained), return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            if ctx is not None and ctx.client_left:  # forward saw the disconnect first and cancelled us
                metrics.WAKE_OUTCOMES.labels(name, "disconnected").inc()
            raise
        finally:
            for task in (waiter, left, drained):
                task.cancel()
            self.held -= 1
            metrics.HELD.labels(name).dec()
        if waiter.done() and not waiter.cancelled() and waiter.result():
            metrics.WAKE_OUTCOMES.labels(name, "woken").inc()
            return [entry for entry in plan if self.router.has_healthy(entry.name)] or plan
        if left.done() and not left.cancelled():
            metrics.WAKE_OUTCOMES.labels(name, "disconnected").inc()
            raise ClientDisconnected()
        outcome = "draining" if drained.done() and not drained.cancelled() else "timeout"
        metrics.WAKE_OUTCOMES.labels(name, outcome).inc()
        raise errors.ServiceUnavailable(
            f"model '{name}' has no running backend yet (scaled to zero and starting); waited "
            f"{requested.wake_timeout_s:g} s, retry in {WAKE_RETRY_AFTER_S} s", code="model_waking", headers=retry)

    def begin_drain(self) -> None:
        """SIGTERM: readiness turns 503 and held requests are answered 503 at once (their retry lands elsewhere)."""
        self.draining = True
        self._drained.set()

    def affinity_key(self, ctx: RequestContext, body: dict[str, Any]) -> bytes | None:
        if ctx.entry is None or not ctx.entry.prefix_affinity:
            return None
        return _affinity_key(ctx.endpoint, body, self.settings.affinity_prefix_chars)

    async def forward(self, ctx: RequestContext, upstream_body: dict[str, Any], receive: Receive, send: Send,
                      headers: Headers) -> bytes | None:
        """A client that leaves before the answer cancels the upstream exchange (the connection is closed, which
        makes vLLM abort the generation) and the request ends as 499; ``finish`` bills the prompt count only:
        the prefill ran, but no completion token was delivered and the backend reports none."""
        watcher = asyncio.ensure_future(_wait_for_disconnect(receive))
        this = asyncio.current_task()
        assert this is not None

        waiting = True

        def client_gone(done: asyncio.Future[None]) -> None:  # cancel this task's wait, not a second task's
            if waiting and not done.cancelled():
                ctx.client_left = True
                this.cancel()

        async def left() -> dict[str, Any]:  # the one receive() reader is the watcher; a held request waits on it too
            await asyncio.shield(watcher)
            return {"type": "http.disconnect"}

        watcher.add_done_callback(client_gone)
        try:
            response, body = await self._exchange(ctx, upstream_body, left)
        except asyncio.CancelledError:
            if not ctx.client_left:
                raise
            this.uncancel()  # aborted the upstream connection on the way out; the backend's slot is released
            ctx.prompt_tokens, ctx.completion_tokens = ctx.prompt_estimate, 0
            raise ClientDisconnected() from None
        finally:
            waiting = False  # a callback already scheduled must not cancel what follows
            watcher.cancel()
        ctx.status = response.status
        if response.status == 200:
            self.read_usage(ctx, body)
        content_type = response.header(b"content-type", b"application/json")
        await send_bytes(send, response.status, body, headers, (b"content-type", content_type))
        return body

    async def _exchange(self, ctx: RequestContext, upstream_body: dict[str, Any],
                        receive: Receive) -> tuple[UpstreamResponse, bytes]:
        affinity = self.affinity_key(ctx, upstream_body)
        response = await self.open_upstream(ctx, upstream_body, affinity, receive)
        backend = ctx.backend
        assert backend is not None
        try:
            body = await response.read()
        except (UpstreamError, TimeoutError):
            self.router.failure(backend)
            raise errors.UpstreamError("the model server dropped the connection mid-response") from None
        finally:
            response.release()
            backend.release()
        if response.status >= 500:
            self.router.failure(backend)
        else:
            self.router.success(backend)
        return response, body

    @staticmethod
    def read_usage(ctx: RequestContext, body: bytes) -> None:
        try:
            usage = orjson.loads(body).get("usage")
        except (orjson.JSONDecodeError, AttributeError):
            return
        if isinstance(usage, dict):
            ctx.prompt_tokens = int(usage.get("prompt_tokens") or usage.get("total_tokens") or 0)
            ctx.completion_tokens = int(usage.get("completion_tokens") or 0)
            ctx.usage_known = True

    # ------------------------------------------------------------------ upstream, streamed
    async def forward_stream(self, ctx: RequestContext, scope: Scope, receive: Receive, send: Send,
                             upstream_body: dict[str, Any], headers: Headers) -> None:
        affinity = self.affinity_key(ctx, upstream_body)
        response = await self.open_upstream(ctx, upstream_body, affinity, receive)
        backend = ctx.backend
        assert backend is not None
        if response.status != 200:  # an error the client should see as it is (4xx, 500)
            try:
                body = await response.read()
            finally:
                response.release()
                backend.release()
            if response.status >= 500:
                self.router.failure(backend)
            ctx.status = response.status
            content_type = response.header(b"content-type", b"application/json")
            await send_bytes(send, response.status, body, headers, (b"content-type", content_type))
            return

        ctx.status = 200
        await send({"type": "http.response.start", "status": 200, "headers": [*SSE_HEADERS, *headers]})
        watcher = asyncio.ensure_future(_wait_for_disconnect(receive))
        watcher.add_done_callback(lambda done: response.close() if not done.cancelled() else None)
        pending = b""
        chunks_seen = 0
        failed = False
        try:
            async for piece in response.chunks():
                if ctx.ttft_s is None:
                    ctx.ttft_s = time.perf_counter() - ctx.started
                pending += piece
                cut = pending.rfind(b"\n\n")
                if cut < 0:
                    continue
                ready, pending = pending[:cut + 2], pending[cut + 2:]
                # tokens delivered: chunks with non-empty text (vLLM's role chunk and finish chunk carry none;
                # compact JSON, so an escaped quote inside a string never matches these patterns)
                chunks_seen += (ready.count(b'"content":"') + ready.count(b'"text":"')
                                - ready.count(b'"content":""') - ready.count(b'"text":""'))
                if b'"usage"' in ready:
                    ready = self.take_usage(ctx, ready, strip=not ctx.client_wants_usage)
                if ready:
                    await send({"type": "http.response.body", "body": ready, "more_body": True})
            if pending:
                await send({"type": "http.response.body", "body": pending, "more_body": True})
        except (UpstreamError, TimeoutError, OSError) as exc:
            if watcher.done():
                ctx.status, ctx.error_type = 499, "client_disconnected"
            else:
                failed = True
                ctx.error_type = "upstream_stream_error"
                message = ("the model server stopped sending (idle timeout)"
                           if isinstance(exc, TimeoutError) else "the model server dropped the stream")
                event = orjson.dumps({"error": {"message": message, "type": "upstream_error", "param": None,
                                                "code": "stream_interrupted"}})
                await send({"type": "http.response.body", "body": b"data: " + event + b"\n\n", "more_body": True})
        finally:
            watcher.cancel()
            response.release()
            backend.release()
        if failed:
            self.router.failure(backend)
        else:
            self.router.success(backend)
        if not ctx.usage_known:
            # usage never arrived (client left or stream broke): bill the prompt estimate and one token per
            # chunk delivered with text (vLLM streams one token per chunk; its role-only first chunk is none)
            ctx.prompt_tokens = ctx.prompt_estimate
            ctx.completion_tokens = chunks_seen
        if ctx.status != 499:
            await send({"type": "http.response.body", "body": b"", "more_body": False})

    @staticmethod
    def take_usage(ctx: RequestContext, ready: bytes, strip: bool) -> bytes:
        """Read the usage from the SSE events in ``ready``; drop the usage-only chunk if ``strip``."""
        kept: list[bytes] = []
        for event in ready.split(b"\n\n"):
            if not event:
                continue
            if b'"usage"' in event and event.startswith(b"data: {"):
                try:
                    chunk = orjson.loads(event[6:])
                except orjson.JSONDecodeError:
                    kept.append(event)
                    continue
                usage = chunk.get("usage")
                if isinstance(usage, dict):
                    ctx.prompt_tokens = int(usage.get("prompt_tokens") or 0)
                    ctx.completion_tokens = int(usage.get("completion_tokens") or 0)
                    ctx.usage_known = True
                    if strip and not chunk.get("choices"):
                        continue
            kept.append(event)
        return b"".join(event + b"\n\n" for event in kept)

    # ------------------------------------------------------------------ after the response
    def finish(self, ctx: RequestContext) -> None:
        elapsed = time.perf_counter() - ctx.started
        model = ctx.served_model or "-"
        metrics.REQUESTS.labels(model, ctx.endpoint, str(ctx.status)).inc()
        metrics.REQUEST_LATENCY.labels(model, ctx.endpoint).observe(elapsed)
        if ctx.ttft_s is not None:
            metrics.TTFT.labels(model).observe(ctx.ttft_s)
        if ctx.reservation is not None:
            used = ctx.prompt_tokens + ctx.completion_tokens
            self.spawn(self.limiter.reconcile(ctx.reservation, used))
        if ctx.admitted and ctx.principal is not None and ctx.entry is not None:
            served = self.catalog.lookup(ctx.served_model or ctx.entry.name) or ctx.entry
            cost = served.prices.cost_usd(ctx.prompt_tokens, ctx.completion_tokens)
            if ctx.prompt_tokens or ctx.completion_tokens:
                metrics.TOKENS.labels(served.name, "prompt").inc(ctx.prompt_tokens)
                metrics.TOKENS.labels(served.name, "completion").inc(ctx.completion_tokens)
                metrics.COST.labels(served.name).inc(cost)
            self.meter.record(UsageRecord(
                request_id=ctx.request_id, org_id=ctx.principal.org_id, key_id=ctx.principal.key_id,
                model=served.name, backend=ctx.backend.url if ctx.backend else None,
                prompt_tokens=ctx.prompt_tokens, completion_tokens=ctx.completion_tokens,
                latency_ms=elapsed * 1000, ttft_ms=ctx.ttft_s * 1000 if ctx.ttft_s is not None else None,
                status=ctx.status, cache_hit=ctx.cache == "hit", cost_usd=cost, created_at=datetime.now(UTC),
            ))
        self.log.info(
            "request", request_id=ctx.request_id, client_request_id=ctx.client_request_id, endpoint=ctx.endpoint, status=ctx.status, model=ctx.served_model,
            fallback_from=ctx.fallback_from, org_id=getattr(ctx.principal, "org_id", None),
            key_id=getattr(ctx.principal, "key_id", None), backend=ctx.backend.url if ctx.backend else None,
            stream=ctx.stream, cache=ctx.cache, attempts=ctx.attempts or None,
            latency_ms=round(elapsed * 1000, 3),
            ttft_ms=round(ctx.ttft_s * 1000, 3) if ctx.ttft_s is not None else None,
            prompt_tokens=ctx.prompt_tokens, completion_tokens=ctx.completion_tokens,
            error_type=ctx.error_type, degraded=self.limiter.degraded or None, prompt=ctx.prompt_log,
        )

    def spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def wait_background(self) -> None:
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    # ------------------------------------------------------------------ other endpoints
    async def authenticated(self, scope: Scope, receive: Receive, send: Send, handler: Any) -> None:
        request_id = client_request_id(header(scope, b"x-request-id")) or new_request_id()
        headers: Headers = [(b"x-request-id", request_id.encode())]
        try:
            principal = await self.authenticate(scope)
        except errors.GatewayError as exc:
            await send_error(send, exc.status, exc.message, exc.type, exc.param, exc.code, [*headers, *exc.headers])
            return
        if handler is None:
            await send_error(send, 404, "usage API not configured", "invalid_request_error", code="not_found")
            return
        scope["llm_gateway.principal"] = principal
        await handler(scope, receive, send)

    async def list_models(self, scope: Scope, receive: Receive, send: Send) -> None:
        principal = scope["llm_gateway.principal"]
        allowed = principal.allowed_models
        data = []
        for entry in self.catalog.models:
            for name in (entry.name, *entry.aliases):
                if allowed is None or entry.name in allowed or name in allowed:
                    data.append({"id": name, "object": "model", "created": 0, "owned_by": "llm-platform",
                                 "kind": entry.kind, "root": entry.name})
        await send_json(send, 200, {"object": "list", "data": data})

    async def readiness(self, send: Send) -> None:
        """Ready = may receive traffic: the catalog is loaded (the listener opens only after it is) and not draining.
        Models do not count: a model scaled to zero wakes only on requests that reach a ready gateway. Nor do Redis
        (degraded mode keeps limits) and Postgres (cached keys, spilled usage): every replica shares them, so an
        outage would empty the load balancer and turn the gateway's OpenAI-format 503s into its bare ones."""
        models_ready = self.router.ready_models()
        postgres = "unknown"
        if self.pool is not None:
            try:
                await asyncio.wait_for(self.pool.fetchval("SELECT 1"), timeout=0.5)
                postgres = "ok"
            except Exception:
                postgres = "down"
        ready = not self.draining
        body = {
            "status": "ready" if ready else "not_ready",
            "draining": self.draining,
            "config_loaded": True,
            "models_ready": models_ready,
            "backends": self.router.snapshot(),
            "redis": "degraded" if self.limiter.degraded else "ok",
            "postgres": postgres,
            "usage_buffer_depth": self.meter.depth,
            "inflight": self.inflight,
            "held": self.held,
        }
        await send_json(send, 200 if ready else 503, body)

    async def serving(self, send: Send) -> None:
        """200 while some model has a healthy backend (the old readiness): for checks that should route around a
        region whose models are all down, e.g. a DNS failover health check. Never use it as the pod's readiness."""
        models_ready = self.router.ready_models()
        ok = not self.draining and models_ready > 0
        await send_json(send, 200 if ok else 503, {"status": "serving" if ok else "not_serving",
                                                   "models_ready": models_ready, "draining": self.draining})


# ---------------------------------------------------------------------- validation helpers
def _json_type(value: object) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", int: "integer", float: "number",
            type(None): "null"}.get(type(value), type(value).__name__)


def _check_type(body: dict[str, Any], name: str, expected: type) -> None:
    value = body.get(name)
    if value is not None and not isinstance(value, expected):
        raise errors.InvalidRequest(f"'{name}' must be a {_json_type(expected())}, got {_json_type(value)}",
                                    param=name)


def _check_number(body: dict[str, Any], name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise errors.InvalidRequest(f"'{name}' must be a number, got {_json_type(value)}", param=name)
    if not low <= value <= high:
        raise errors.InvalidRequest(f"'{name}' is {value}; allowed: {low} to {high}", param=name)


def _check_int(body: dict[str, Any], name: str, low: int, high: int | None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise errors.InvalidRequest(f"'{name}' must be an integer, got {_json_type(value)}", param=name)
    if value < low or (high is not None and value > high):
        allowed = f"{low} to {high}" if high is not None else f"at least {low}"
        raise errors.InvalidRequest(f"'{name}' is {value}; allowed: {allowed}", param=name)
    return value


def _check_stop(body: dict[str, Any]) -> None:
    stop = body.get("stop")
    if stop is None or isinstance(stop, str):
        return
    if not isinstance(stop, list) or not all(isinstance(item, str) for item in stop):
        raise errors.InvalidRequest("'stop' must be a string or a list of strings", param="stop")


def _validate_messages(messages: object) -> int:
    """Shape-check chat messages; returns a prompt token estimate (~4 characters per token)."""
    if messages is None:
        raise errors.InvalidRequest("missing required field 'messages'", param="messages", code="missing_required")
    if not isinstance(messages, list) or not messages:
        raise errors.InvalidRequest("'messages' must be a non-empty array", param="messages")
    chars = 0
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            raise errors.InvalidRequest(f"'{where}' must be an object, got {_json_type(message)}", param=where)
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:  # a list/object is unhashable: TypeError, not 400
            raise errors.InvalidRequest(
                f"'{where}.role' is {role!r}; allowed: {', '.join(sorted(ROLES))}", param=f"{where}.role")
        content = message.get("content")
        if isinstance(content, str):
            chars += len(content)
        elif isinstance(content, list):
            for part_index, part in enumerate(content):
                part_where = f"{where}.content[{part_index}]"
                part_type = part.get("type") if isinstance(part, dict) else None
                if not isinstance(part_type, str) or part_type not in CONTENT_PART_TYPES:
                    raise errors.InvalidRequest(
                        f"'{part_where}' must be an object with 'type' one of "
                        f"{', '.join(sorted(CONTENT_PART_TYPES))}", param=part_where)
                if part_type == "text":
                    if not isinstance(part.get("text"), str):
                        raise errors.InvalidRequest(f"'{part_where}.text' must be a string",
                                                    param=f"{part_where}.text")
                    chars += len(part["text"])
                else:
                    chars += 1024  # images/audio: a rough, conservative token share
        elif content is None:
            if role not in ("assistant", "tool", "function"):
                raise errors.InvalidRequest(f"'{where}.content' is required for role {role!r}",
                                            param=f"{where}.content")
        else:
            raise errors.InvalidRequest(
                f"'{where}.content' must be a string or an array of content parts, got {_json_type(content)}",
                param=f"{where}.content")
    return chars // 4 + 4 * len(messages) + 1


def _estimate_input(value: object, name: str) -> int:
    if value is None:
        raise errors.InvalidRequest(f"missing required field '{name}'", param=name, code="missing_required")
    if isinstance(value, str):
        return len(value) // 4 + 1
    if isinstance(value, list) and value:
        if all(isinstance(item, str) for item in value):
            return sum(len(item) for item in value) // 4 + len(value)
        if all(isinstance(item, int) and not isinstance(item, bool) for item in value):
            return len(value)
        if all(isinstance(item, list) and all(isinstance(t, int) for t in item) for item in value):
            return sum(len(item) for item in value)
    raise errors.InvalidRequest(
        f"'{name}' must be a string, an array of strings, or token ids, got {_json_type(value)}", param=name)


def _affinity_key(endpoint: str, body: dict[str, Any], prefix_chars: int) -> bytes | None:
    if endpoint == "chat":
        return orjson.dumps(body.get("messages"))[:prefix_chars]
    if endpoint == "completions" and isinstance(body.get("prompt"), str):
        return body["prompt"][:prefix_chars].encode()
    return None


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return

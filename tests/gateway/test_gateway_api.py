"""The OpenAI-compatible API end to end: official SDK → gateway subprocess → fake model servers, real Redis/Postgres."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import openai
import pytest

from tests.gateway.services import FakeUpstream, GatewayProcess, http_request, usage_rows


def client(gateway: GatewayProcess, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url + "/v1", api_key=key, max_retries=0, timeout=30)


def post(gateway: GatewayProcess, path: str, body: object, key: str | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], dict[str, object]]:
    all_headers = {**({"authorization": f"Bearer {key}"} if key else {}), **(headers or {})}
    status, response_headers, raw = http_request("POST", gateway.base_url + path, body, all_headers)
    return status, response_headers, json.loads(raw) if raw else {}


def assert_openai_error(payload: dict[str, object], type_: str | None = None, code: str | None = None,
                        param: str | None = None) -> None:
    error = payload["error"]
    assert isinstance(error, dict)
    assert set(error) == {"message", "type", "param", "code"}
    assert isinstance(error["message"], str) and error["message"]
    if type_ is not None:
        assert error["type"] == type_
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param


CHAT = {"model": "chat-a", "messages": [{"role": "user", "content": "hello"}]}


def test_chat_completion_through_alias_with_headers(gateway: GatewayProcess, upstream: FakeUpstream,
                                                    make_key) -> None:
    key = make_key(key_limits={"rpm": 100, "tpm": 100_000})
    raw = client(gateway, key).chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hello"}], max_tokens=3)
    completion = raw.parse()
    assert completion.choices[0].message.content == "tok0 tok1 tok2 "
    assert completion.usage is not None and completion.usage.completion_tokens == 3
    served = upstream.log(0) + upstream.log(1)
    assert len(served) == 1
    assert served[0]["body"]["model"] == "chat-a"  # alias resolved to the catalog name
    request_id = raw.headers["x-request-id"]
    assert request_id.startswith("req_") and served[0]["request_id"] == request_id
    assert raw.headers["x-content-type-options"] == "nosniff"
    assert raw.headers["cache-control"] == "no-store"
    assert raw.headers["x-ratelimit-limit-requests"] == "100"
    assert raw.headers["x-ratelimit-remaining-requests"] == "99"
    assert raw.headers["x-ratelimit-limit-tokens"] == "100000"
    assert int(raw.headers["x-ratelimit-remaining-tokens"]) < 100_000


def test_client_request_id_is_honoured_only_when_sane(gateway: GatewayProcess, upstream: FakeUpstream,
                                                      make_key) -> None:
    key = make_key()
    _, headers, _ = post(gateway, "/v1/chat/completions", CHAT, key, {"x-request-id": "trace-abc.123"})
    assert headers["x-request-id"] == "trace-abc.123"
    _, headers, _ = post(gateway, "/v1/chat/completions", CHAT, key, {"x-request-id": "bad id <script>"})
    assert headers["x-request-id"].startswith("req_")
    # errors carry it too
    status, headers, _ = post(gateway, "/v1/chat/completions", CHAT, None, {"x-request-id": "trace-err"})
    assert status == 401 and headers["x-request-id"] == "trace-err"


def test_authentication_failures(gateway: GatewayProcess, make_key, pg_dsn: str) -> None:
    status, headers, payload = post(gateway, "/v1/chat/completions", CHAT)
    assert status == 401
    assert_openai_error(payload, "invalid_request_error", "invalid_api_key")
    assert headers["www-authenticate"] == "Bearer"
    for bad in ("sk-llmp-0123456789abcdef_wrongsecret", "not-a-key", ""):
        status, _, payload = post(gateway, "/v1/chat/completions", CHAT, headers={"authorization": f"Bearer {bad}"})
        assert status == 401, bad
        assert_openai_error(payload, code="invalid_api_key")
    with pytest.raises(openai.AuthenticationError):
        client(gateway, "sk-llmp-0123456789abcdef_" + "x" * 43).chat.completions.create(**CHAT)

    expired = make_key()
    key_id = expired.removeprefix("sk-llmp-").split("_")[0]

    async def expire() -> None:
        conn = await asyncpg.connect(pg_dsn)
        try:
            await conn.execute("UPDATE api_keys SET expires_at = $1 WHERE key_id = $2",
                               datetime.now(UTC) - timedelta(minutes=1), key_id)
        finally:
            await conn.close()

    asyncio.run(expire())
    status, _, payload = post(gateway, "/v1/chat/completions", CHAT, expired)
    assert status == 401


def test_revocation_takes_effect_within_the_key_cache_ttl(gateway_factory, make_key, pg_dsn: str) -> None:
    gateway = gateway_factory(key_cache_ttl_s="0.5")
    key = make_key()
    assert post(gateway, "/v1/chat/completions", CHAT, key)[0] == 200  # now cached in the gateway
    key_id = key.removeprefix("sk-llmp-").split("_")[0]

    async def revoke() -> None:
        from llm_gateway.db import create_pool
        from llm_gateway.keys import KeyStore

        pool = await create_pool(pg_dsn, min_size=1, max_size=1)
        try:
            await KeyStore(pool).revoke_key(key_id)
        finally:
            await pool.close()

    asyncio.run(revoke())
    revoked_at = time.monotonic()
    statuses = []
    while time.monotonic() - revoked_at < 5:  # generous bound; the TTL is 0.5 s
        statuses.append(post(gateway, "/v1/chat/completions", CHAT, key)[0])
        if statuses[-1] == 401:
            break
        time.sleep(0.1)
    assert statuses[-1] == 401
    assert set(statuses) <= {200, 401}


def test_models_lists_only_what_the_key_may_use(gateway: GatewayProcess, make_key) -> None:
    everything = make_key("org-a")
    names = {model.id for model in client(gateway, everything).models.list()}
    assert {"chat-a", "gpt-4o-mini", "chat-b", "embed-1", "rerank-1", "text-1"} <= names

    limited = make_key("org-b", allowed_models=["chat-b"])
    assert {model.id for model in client(gateway, limited).models.list()} == {"chat-b"}
    with pytest.raises(openai.NotFoundError) as excinfo:
        client(gateway, limited).chat.completions.create(**CHAT)
    assert excinfo.value.code == "model_not_found"
    assert client(gateway, limited).chat.completions.create(
        model="chat-b", messages=[{"role": "user", "content": "x"}]).choices


MALFORMED_CHAT: list[tuple[object, int, str, str | None]] = [
    ({"messages": [{"role": "user", "content": "x"}]}, 400, "model", "missing_required"),
    ({"model": 42, "messages": []}, 400, "model", None),
    ({"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}, 404, "model", "model_not_found"),
    ({"model": "chat-a"}, 400, "messages", "missing_required"),
    ({"model": "chat-a", "messages": "hello"}, 400, "messages", None),
    ({"model": "chat-a", "messages": [{"role": "wizard", "content": "x"}]}, 400, "messages[0].role", None),
    ({"model": "chat-a", "messages": [{"role": "user", "content": 5}]}, 400, "messages[0].content", None),
    ({"model": "chat-a", "messages": [{"role": "user", "content": [{"type": "bogus"}]}]}, 400,
     "messages[0].content[0]", None),
    ({"model": "chat-a", "messages": [{"role": "user", "content": "x"}], "temperature": "hot"}, 400,
     "temperature", None),
    ({"model": "chat-a", "messages": [{"role": "user", "content": "x"}], "max_tokens": "10"}, 400,
     "max_tokens", None),
    ({"model": "chat-a", "messages": [{"role": "user", "content": "x"}], "max_tokens": 513}, 400,
     "max_tokens", "max_tokens_exceeded"),
    ({"model": "chat-a", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}, 400, "stream", None),
    ({"model": "embed-1", "messages": [{"role": "user", "content": "x"}]}, 400, "model", "wrong_endpoint"),
    (["not", "an", "object"], 400, "body", None),
]


def test_malformed_chat_requests_get_openai_errors(gateway: GatewayProcess, upstream: FakeUpstream,
                                                   make_key) -> None:
    key = make_key()
    for body, status, param, code in MALFORMED_CHAT:
        got_status, headers, payload = post(gateway, "/v1/chat/completions", body, key)
        assert got_status == status, (body, payload)
        assert_openai_error(payload, param=param, code=code)
        assert headers["x-content-type-options"] == "nosniff"
    assert upstream.log(0) + upstream.log(1) + upstream.log(3) == []


def test_bad_json_oversize_body_wrong_method_and_unknown_path(gateway_factory, upstream: FakeUpstream,
                                                               make_key) -> None:
    gateway = gateway_factory(max_body_bytes="2000")
    key = make_key()
    status, _, raw = http_request("POST", gateway.base_url + "/v1/chat/completions", None,
                                  {"authorization": f"Bearer {key}", "content-type": "application/json"})
    assert status == 400 and json.loads(raw)["error"]["param"] == "body"
    import urllib.request

    request = urllib.request.Request(gateway.base_url + "/v1/chat/completions", data=b'{"model": "chat-a",',
                                     method="POST", headers={"authorization": f"Bearer {key}"})
    try:
        urllib.request.urlopen(request, timeout=10)
        raise AssertionError("bad JSON accepted")
    except urllib.error.HTTPError as exc:
        assert exc.code == 400
        assert_openai_error(json.loads(exc.read()), "invalid_request_error", "invalid_json", "body")

    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 5000}]}
    status, _, payload = post(gateway, "/v1/chat/completions", big, key)
    assert status == 413
    assert_openai_error(payload, code="request_too_large")

    status, headers, raw = http_request("GET", gateway.base_url + "/v1/chat/completions",
                                        headers={"authorization": f"Bearer {key}"})
    assert status == 405 and headers["allow"] == "POST"
    assert_openai_error(json.loads(raw), code="method_not_allowed")
    status, _, raw = http_request("GET", gateway.base_url + "/v1/nothing-here")
    assert status == 404
    assert_openai_error(json.loads(raw), code="not_found")
    assert upstream.log(0) + upstream.log(1) == []


def test_completions_embeddings_and_rerank(gateway: GatewayProcess, upstream: FakeUpstream, make_key,
                                           pg_dsn: str) -> None:
    key = make_key()
    sdk = client(gateway, key)
    text = sdk.completions.create(model="text-1", prompt="Once upon", max_tokens=2)
    assert text.choices[0].text == "tok0 tok1 "
    chat_via_completions = sdk.completions.create(model="chat-a", prompt="x", max_tokens=1)
    assert chat_via_completions.choices[0].text == "tok0 "
    embedding = sdk.embeddings.create(model="embed-1", input=["a", "b"])
    assert len(embedding.data) == 2 and embedding.usage.prompt_tokens == 11
    status, _, payload = post(gateway, "/v1/rerank", {"model": "rerank-1", "query": "q", "documents": ["a", "b"]},
                              key)
    assert status == 200 and len(payload["results"]) == 2
    status, _, payload = post(gateway, "/v1/rerank", {"model": "rerank-1", "query": "q", "documents": []}, key)
    assert status == 400 and payload["error"]["param"] == "documents"
    with pytest.raises(openai.BadRequestError):
        sdk.embeddings.create(model="embed-1", input=[{"not": "text"}])  # type: ignore[list-item]

    rows = usage_rows(pg_dsn, 4)
    by_model = {row["model"]: row for row in rows}
    assert by_model["embed-1"]["prompt_tokens"] == 11 and by_model["embed-1"]["completion_tokens"] == 0
    assert by_model["rerank-1"]["prompt_tokens"] == 11
    assert by_model["text-1"]["completion_tokens"] == 2


def test_streaming_passes_chunks_through_as_they_arrive(gateway: GatewayProcess, upstream: FakeUpstream,
                                                        make_key) -> None:
    key = make_key()
    for index in (0, 1):
        upstream.control(index, stream_chunks=4, chunk_delay_s=0.4)
    stream = client(gateway, key).chat.completions.create(**CHAT, stream=True)
    contents = []
    sent_when_first_seen = None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            contents.append(chunk.choices[0].delta.content)
            if sent_when_first_seen is None:
                log = upstream.log(0) + upstream.log(1)
                sent_when_first_seen = log[0]["chunks_sent"]
    assert contents == ["tok0 ", "tok1 ", "tok2 ", "tok3 "]
    # the client had the first token while the model server was still generating the rest
    assert sent_when_first_seen is not None and sent_when_first_seen < 4


def test_stream_usage_is_injected_metered_and_stripped_unless_asked(gateway: GatewayProcess,
                                                                    upstream: FakeUpstream, make_key,
                                                                    pg_dsn: str) -> None:
    key = make_key()
    for index in (0, 1):
        upstream.control(index, prompt_tokens=21, completion_tokens=7)
    sdk = client(gateway, key)
    plain = list(sdk.chat.completions.create(**CHAT, stream=True))
    assert plain and all(chunk.choices for chunk in plain)  # no usage-only chunk reached the client
    assert all(getattr(chunk, "usage", None) is None for chunk in plain)
    with_usage = list(sdk.chat.completions.create(**CHAT, stream=True, stream_options={"include_usage": True}))
    assert with_usage[-1].choices == [] and with_usage[-1].usage is not None
    assert with_usage[-1].usage.prompt_tokens == 21 and with_usage[-1].usage.completion_tokens == 7

    for entry in upstream.log(0) + upstream.log(1):
        assert entry["body"]["stream_options"]["include_usage"] is True
    rows = usage_rows(pg_dsn, 2)
    assert [(row["prompt_tokens"], row["completion_tokens"]) for row in rows] == [(21, 7), (21, 7)]
    assert all(row["ttft_ms"] is not None and row["status"] == 200 for row in rows)


def test_metering_matches_what_the_upstream_reported(gateway: GatewayProcess, upstream: FakeUpstream,
                                                     make_key, pg_dsn: str) -> None:
    key = make_key("org-meter")
    reported = [(123, 45), (7, 0), (1000, 250)]
    sdk = client(gateway, key)
    for prompt_tokens, completion_tokens in reported:
        for index in (0, 1):
            upstream.control(index, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        sdk.chat.completions.create(**CHAT)
    upstream.control(0, prompt_tokens=5, completion_tokens=6)
    upstream.control(1, prompt_tokens=5, completion_tokens=6)
    list(sdk.chat.completions.create(**CHAT, stream=True))
    rows = usage_rows(pg_dsn, 4)
    assert [(row["prompt_tokens"], row["completion_tokens"]) for row in rows] == [*reported, (5, 6)]
    for row in rows:
        assert row["org_id"] == "org-meter" and row["model"] == "chat-a" and row["cache_hit"] is False
        expected_cost = (row["prompt_tokens"] * 0.5 + row["completion_tokens"] * 1.5) / 1000
        assert float(row["cost_usd"]) == pytest.approx(expected_cost, abs=1e-9)
        assert row["backend"] in (upstream.url(0), upstream.url(1))
    assert len({row["request_id"] for row in rows}) == 4


def test_reused_client_request_id_cannot_hide_usage(gateway: GatewayProcess, make_key, pg_dsn: str) -> None:
    key = make_key()
    for _ in range(3):
        assert post(gateway, "/v1/chat/completions", CHAT, key, {"x-request-id": "same-id"})[0] == 200
    assert len(usage_rows(pg_dsn, 3)) == 3


def test_orgs_are_isolated_in_limits(gateway: GatewayProcess, make_key) -> None:
    limited = make_key("org-small", org_limits={"rpm": 2})
    other = make_key("org-big")
    assert [post(gateway, "/v1/chat/completions", CHAT, limited)[0] for _ in range(3)] == [200, 200, 429]
    assert [post(gateway, "/v1/chat/completions", CHAT, other)[0] for _ in range(3)] == [200, 200, 200]


def test_admin_and_usage_apis_are_mounted(gateway: GatewayProcess, pg_dsn: str) -> None:
    admin = {"authorization": f"Bearer {gateway.admin_token}"}
    status, _, raw = http_request("POST", gateway.base_url + "/admin/orgs", {"id": "acme", "name": "Acme"}, admin)
    assert status in (200, 201), raw
    status, _, raw = http_request("POST", gateway.base_url + "/admin/orgs/acme/keys", {"name": "ci"}, admin)
    assert status in (200, 201), raw
    key = json.loads(raw)["key"]
    assert post(gateway, "/v1/chat/completions", CHAT, key)[0] == 200
    assert http_request("GET", gateway.base_url + "/admin/orgs")[0] == 401  # no admin token
    assert http_request("GET", gateway.base_url + "/admin/orgs", headers={"authorization": f"Bearer {key}"})[0] == 401
    usage_rows(pg_dsn, 1)
    status, _, raw = http_request("GET", gateway.base_url + "/v1/usage", headers={"authorization": f"Bearer {key}"})
    assert status == 200 and json.loads(raw)["org_id"] == "acme"
    assert http_request("GET", gateway.base_url + "/v1/usage")[0] == 401


async def test_async_sdk_concurrent_calls_and_streams(gateway: GatewayProcess, upstream: FakeUpstream,
                                                      pg_dsn: str) -> None:
    from tests.gateway.services import create_api_key

    key, _ = await create_api_key(pg_dsn, "org-async")
    sdk = openai.AsyncOpenAI(base_url=gateway.base_url + "/v1", api_key=key, max_retries=0, timeout=30)

    async def streamed() -> str:
        stream = await sdk.chat.completions.create(**CHAT, stream=True)
        return "".join([chunk.choices[0].delta.content or "" async for chunk in stream if chunk.choices])

    async def plain() -> str:
        completion = await sdk.chat.completions.create(**CHAT)
        return completion.choices[0].message.content or ""

    results = await asyncio.gather(*(streamed() for _ in range(5)), *(plain() for _ in range(5)))
    assert results == ["tok0 tok1 tok2 tok3 tok4 "] * 10
    assert len(upstream.log(0)) + len(upstream.log(1)) == 10
    await sdk.close()

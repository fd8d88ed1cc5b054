"""Property-based guard (Hypothesis): arbitrary JSON values in any field of any endpoint never produce a 5xx.

A real gateway process on loopback (real Redis/Postgres, fake model servers). Each example takes a valid request
for one endpoint and replaces one field — top level, inside a message, inside a content part, or a new field —
with an arbitrary JSON value, then asserts: the status is below 500, every error is in OpenAI's shape with a
``param`` key, and the process still answers ``/health/live`` afterwards. The example count is bounded so the
test runs in seconds.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.gateway.services import GatewayProcess, http_request

# Every JSON value shape, including integers beyond 64 bits and deep nesting.
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.integers(min_value=2**63, max_value=2**80)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12)

VALID: dict[str, dict[str, Any]] = {
    "/v1/chat/completions": {"model": "chat-a", "max_tokens": 2, "messages": [
        {"role": "user", "content": [{"type": "text", "text": "hello"}]}]},
    "/v1/completions": {"model": "text-1", "prompt": "hello", "max_tokens": 2},
    "/v1/embeddings": {"model": "embed-1", "input": "hello"},
    "/v1/rerank": {"model": "rerank-1", "query": "q", "documents": ["a", "b"]},
}
# Fields each endpoint reads (OpenAI's and vLLM's), plus a few arbitrary names via st.text below.
FIELDS = ["model", "messages", "prompt", "input", "query", "documents", "top_n", "stream", "stream_options",
          "temperature", "top_p", "n", "stop", "max_tokens", "max_completion_tokens", "user", "tools",
          "tool_choice", "response_format", "logprobs", "seed", "priority", "cache_salt", "encoding_format"]
MESSAGE_FIELDS = ["role", "content", "name", "tool_calls", "tool_call_id"]
PART_FIELDS = ["type", "text", "image_url"]


@st.composite
def mutated_requests(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    path = draw(st.sampled_from(sorted(VALID)))
    body = copy.deepcopy(VALID[path])
    value = draw(JSON_VALUES)
    where = draw(st.sampled_from(["top", "top", "message", "part"]) if path == "/v1/chat/completions"
                 else st.just("top"))
    if where == "top":
        body[draw(st.sampled_from(FIELDS) | st.text(max_size=8))] = value
    elif where == "message":
        body["messages"][0][draw(st.sampled_from(MESSAGE_FIELDS))] = value
    else:
        body["messages"][0]["content"][0][draw(st.sampled_from(PART_FIELDS))] = value
    return path, body


def assert_openai_error(raw: bytes) -> None:
    payload = json.loads(raw)
    error = payload["error"]
    assert set(error) == {"message", "type", "param", "code"}, payload
    assert isinstance(error["message"], str) and error["message"]
    assert error["param"] is None or isinstance(error["param"], str)


def test_arbitrary_json_in_any_field_never_5xx(gateway: GatewayProcess, make_key) -> None:
    key = make_key(key_limits={"rpm": 1_000_000, "tpm": 1_000_000_000})
    headers = {"authorization": f"Bearer {key}"}

    @settings(max_examples=300, deadline=None, derandomize=True, database=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
    @given(mutated_requests())
    def check(request: tuple[str, dict[str, Any]]) -> None:
        path, body = request
        status, _, raw = http_request("POST", gateway.base_url + path, body, headers)
        assert status < 500, (path, body, status, raw[:500])
        if status >= 400:
            assert_openai_error(raw)

    check()
    for method, path in [("GET", "/v1/models"), ("GET", "/v1/usage"), ("POST", "/v1/models"),
                         ("GET", "/v1/chat/completions"), ("GET", "/no/such/route")]:
        status, _, raw = http_request(method, gateway.base_url + path, None, headers)
        assert status < 500, (method, path, status, raw[:300])
        if status >= 400:
            assert_openai_error(raw)
    status, _, _ = http_request("GET", gateway.base_url + "/health/live")
    assert status == 200
    assert gateway.returncode is None


def test_unhashable_role_and_part_type_are_400_naming_the_field(gateway: GatewayProcess, make_key) -> None:
    """Issue 17 item 3: these raised TypeError in a set membership test and came back as 500 (the SDK retries)."""
    headers = {"authorization": f"Bearer {make_key()}"}
    cases = [
        ([{"role": ["user"], "content": "hi"}], "messages[0].role"),
        ([{"role": {"a": 1}, "content": "hi"}], "messages[0].role"),
        ([{"role": "user", "content": [{"type": {"text": 1}, "text": "hi"}]}], "messages[0].content[0]"),
        ([{"role": "user", "content": [{"type": ["text"], "text": "hi"}]}], "messages[0].content[0]"),
    ]
    for messages, param in cases:
        status, _, raw = http_request("POST", gateway.base_url + "/v1/chat/completions",
                                      {"model": "chat-a", "messages": messages}, headers)
        assert status == 400, (messages, status, raw)
        assert_openai_error(raw)
        assert json.loads(raw)["error"]["param"] == param

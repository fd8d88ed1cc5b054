"""Billing exactness when the client leaves (issue 17 items 1 and 10): usage rows equal what the fake model
server reports as generated, and a client that leaves cancels the generation upstream."""

from __future__ import annotations

import http.client
import json
import random
import time
from urllib.parse import urlsplit

import openai
import pytest

from llm_gateway.app import _validate_messages
from tests.gateway.services import FakeUpstream, GatewayProcess, usage_rows

MESSAGES = [{"role": "user", "content": "hello there"}]
PROMPT_COUNT = _validate_messages(MESSAGES)  # what the gateway counts for this prompt


def wait_for(predicate, timeout_s: float = 15.0) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_sdk_timeout_and_retries_cancel_each_attempt_upstream_and_bill_no_completion(
        gateway: GatewayProcess, upstream: FakeUpstream, pg_dsn: str, make_key) -> None:
    for index in (0, 1, 2):
        upstream.control(index, latency_s=3.0)
    sdk = openai.OpenAI(base_url=gateway.base_url + "/v1", api_key=make_key(), timeout=1, max_retries=2)
    with pytest.raises(openai.APITimeoutError):
        sdk.chat.completions.create(model="chat-a", messages=MESSAGES)  # type: ignore[arg-type]

    def served() -> list[dict[str, object]]:
        return upstream.log(0) + upstream.log(1) + upstream.log(2)

    assert wait_for(lambda: len(served()) == 3 and all(entry.get("aborted") for entry in served())), served()
    rows = usage_rows(pg_dsn, 3)
    assert len(rows) == 3
    for row in rows:
        assert row["status"] == 499
        assert row["completion_tokens"] == 0  # nothing was generated to the end, nothing delivered
        assert row["prompt_tokens"] == PROMPT_COUNT  # the prefill ran: the prompt count is billed
    time.sleep(3.5)  # had the exchanges not been cancelled, the fake servers would have answered by now
    assert all(entry.get("aborted") for entry in served())
    assert len(usage_rows(pg_dsn, 3)) == 3


def read_event(response: http.client.HTTPResponse) -> bytes:
    event = b""
    while not event.endswith(b"\n\n"):
        line = response.fp.readline()
        if not line:
            raise EOFError
        event += line
    return event


def test_streams_cut_at_random_points_bill_the_tokens_generated(
        gateway: GatewayProcess, upstream: FakeUpstream, pg_dsn: str, make_key) -> None:
    upstream.control(0, stream_chunks=30, chunk_delay_s=0.1)
    upstream.control(1, stream_chunks=30, chunk_delay_s=0.1)
    key = make_key()
    where = urlsplit(gateway.base_url)
    rng = random.Random()
    cuts = [rng.randint(0, 6) for _ in range(4)]
    for done, cut in enumerate(cuts, start=1):
        conn = http.client.HTTPConnection(where.hostname, where.port, timeout=10)
        conn.request("POST", "/v1/chat/completions",
                     json.dumps({"model": "chat-a", "messages": MESSAGES, "stream": True}),
                     {"authorization": f"Bearer {key}", "content-type": "application/json"})
        response = conn.getresponse()
        assert response.status == 200
        read_event(response)  # the role chunk
        for _ in range(cut):
            read_event(response)
        response.close()
        conn.close()
        rows = usage_rows(pg_dsn, done)
        assert len(rows) == done
    served = {entry["request_id"]: entry for entry in upstream.log(0) + upstream.log(1)}
    rows = usage_rows(pg_dsn, len(cuts))
    assert len(served) == len(cuts) == len(rows)
    for row in rows:
        assert row["status"] == 499
        generated = served[row["request_id"]]["chunks_sent"]
        assert row["completion_tokens"] == generated, (cuts, row, generated)
        assert row["prompt_tokens"] == PROMPT_COUNT

"""Scale from zero: a request for a model without a healthy backend is held while the model wakes (bounded, the
client leaving respected), else answered 503 with retry-after, never billed; demand is counted under the model
the client asked for, so KEDA wakes it even when a fallback serves. Real gateway processes, Redis, Postgres, the
fake upstream and the official openai SDK."""

from __future__ import annotations

import json
import signal
import threading
import time
from typing import Any, Callable

import openai
import pytest

from tests.gateway.services import FakeUpstream, GatewayProcess, default_catalog, http_request, metric_value, usage_rows

SLEEPY = 3  # the fake backend that plays a model scaled to zero (down = a Service without endpoints)


def catalog(upstream: FakeUpstream, wake_timeout_s: float) -> dict[str, Any]:
    base = default_catalog(upstream)
    base["models"] += [
        {"name": "sleepy", "kind": "chat", "backends": [upstream.url(SLEEPY)], "wake_timeout_s": wake_timeout_s,
         "prices": {"prompt_per_1k": 1.0, "completion_per_1k": 1.0}},
        {"name": "sleepy-fb", "kind": "chat", "backends": [upstream.url(SLEEPY)], "wake_timeout_s": wake_timeout_s,
         "fallbacks": ["chat-b"]},
    ]
    return base


def client(gateway: GatewayProcess, key: str, timeout: float = 30) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway.base_url + "/v1", api_key=key, max_retries=0, timeout=timeout)


def ask(model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "wake up"}], **extra}


def wait_until(condition: Callable[[], bool], timeout_s: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def metric(gateway: GatewayProcess, name: str, **labels: str) -> float | None:
    return metric_value(gateway.metrics_text(), name, labels)


@pytest.fixture
def asleep(gateway_factory: Callable[..., GatewayProcess], upstream: FakeUpstream) -> Callable[..., GatewayProcess]:
    """A gateway whose models ``sleepy`` and ``sleepy-fb`` have no running backend yet."""
    upstream.down(SLEEPY)

    def start(wake_timeout_s: float = 30, **env: str) -> GatewayProcess:
        gateway = gateway_factory(catalog(upstream, wake_timeout_s), wake_probe_interval_s="0.2", **env)
        assert wait_until(lambda: metric(gateway, "gateway_backend_healthy", model="sleepy") == 0)
        return gateway

    return start


def test_held_requests_are_served_when_the_model_wakes(asleep, upstream: FakeUpstream, make_key) -> None:
    gateway = asleep()
    # the demand series exists at 0 before any request, so Prometheus' rate() sees the very first one
    assert metric(gateway, "gateway_model_demand_total", model="sleepy") == 0
    key = make_key()
    results: dict[str, Any] = {}

    def plain() -> None:
        results["plain"] = client(gateway, key).chat.completions.create(**ask("sleepy"))

    def stream() -> None:
        chunks = client(gateway, key).chat.completions.create(**ask("sleepy", stream=True))
        results["stream"] = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)

    threads = [threading.Thread(target=plain), threading.Thread(target=stream)]
    for thread in threads:
        thread.start()
    assert wait_until(lambda: metric(gateway, "gateway_held_requests", model="sleepy") == 2)
    assert metric(gateway, "gateway_model_demand_total", model="sleepy") == 2  # counted on arrival, not at the end
    assert all(thread.is_alive() for thread in threads)  # held, not answered
    status, _, raw = http_request("GET", gateway.base_url + "/health/ready")
    assert status == 200 and json.loads(raw)["held"] == 2

    upstream.up(SLEEPY)  # the model's first replica becomes ready
    for thread in threads:
        thread.join(timeout=15)
    assert results["plain"].choices[0].message.content == "tok0 tok1 tok2 tok3 tok4 "
    assert results["stream"] == "tok0 tok1 tok2 tok3 tok4 "
    assert [entry["body"]["model"] for entry in upstream.log(SLEEPY)] == ["sleepy", "sleepy"]
    text = gateway.metrics_text()
    assert metric_value(text, "gateway_wake_outcomes_total", {"model": "sleepy", "outcome": "woken"}) == 2
    assert metric_value(text, "gateway_held_requests", {"model": "sleepy"}) == 0
    assert metric_value(text, "gateway_requests_total", {"model": "sleepy", "status": "200"}) == 2


def test_a_model_that_does_not_wake_in_time_is_a_503_with_retry_after_never_billed(asleep, make_key,
                                                                                  pg_dsn: str) -> None:
    gateway = asleep(wake_timeout_s=1)
    # one slot in flight, and a token budget that holds one reservation (~520 tokens) but not two: the next
    # requests pass only if the 503 released the slot and refunded the tokens
    key = make_key(key_limits={"max_inflight": 1, "tpm": 600})
    with pytest.raises(openai.InternalServerError) as excinfo:
        client(gateway, key).chat.completions.create(**ask("sleepy", max_tokens=500))
    error = excinfo.value
    assert error.status_code == 503
    assert error.response.headers["retry-after"] == "5" and error.response.headers["x-should-retry"] == "true"
    body = error.response.json()["error"]
    assert body["type"] == "server_error" and body["code"] == "model_waking" and "sleepy" in body["message"]
    assert metric(gateway, "gateway_wake_outcomes_total", model="sleepy", outcome="timeout") == 1

    row = usage_rows(pg_dsn, 1)[0]
    assert row["status"] == 503 and row["model"] == "sleepy"
    assert row["prompt_tokens"] == row["completion_tokens"] == 0 and float(row["cost_usd"]) == 0
    answered = client(gateway, key).chat.completions.create(**ask("chat-a", max_tokens=500))
    assert answered.choices[0].message.content


def test_a_client_that_leaves_during_the_hold_frees_its_slot(asleep, make_key) -> None:
    gateway = asleep(wake_timeout_s=60)
    key = make_key(key_limits={"max_inflight": 1})
    with pytest.raises(openai.APITimeoutError):  # held: the client gives up first and closes the connection
        client(gateway, key, timeout=1).chat.completions.create(**ask("sleepy"))
    assert wait_until(lambda: metric(gateway, "gateway_wake_outcomes_total", model="sleepy",
                                     outcome="disconnected") == 1)
    assert metric(gateway, "gateway_held_requests", model="sleepy") == 0
    # the in-flight slot is back long before the 60 s wake timeout
    assert client(gateway, key).chat.completions.create(**ask("chat-a")).choices[0].message.content


def test_demand_counts_the_requested_model_when_a_fallback_serves(asleep, upstream: FakeUpstream,
                                                                 make_key) -> None:
    gateway = asleep()
    key = make_key()
    answered = client(gateway, key).chat.completions.create(**ask("sleepy-fb"))
    assert answered.choices[0].message.content  # served at once by the fallback, not held
    assert [entry["body"]["model"] for entry in upstream.log(2)] == ["chat-b"]
    text = gateway.metrics_text()
    # what KEDA scales sleepy-fb on: the request for it, although chat-b answered
    assert metric_value(text, "gateway_model_demand_total", {"model": "sleepy-fb"}) == 1
    assert metric_value(text, "gateway_model_demand_total", {"model": "chat-b"}) == 0
    assert metric_value(text, "gateway_fallbacks_total", {"model": "sleepy-fb", "fallback": "chat-b"}) == 1
    assert metric_value(text, "gateway_requests_total", {"model": "chat-b", "status": "200"}) == 1
    assert metric_value(text, "gateway_wake_outcomes_total", {"model": "sleepy-fb"}) is None  # never held


def test_held_requests_are_bounded_and_a_drain_answers_them(asleep, make_key, pg_dsn: str) -> None:
    gateway = asleep(max_held_requests="1")
    key = make_key()
    outcome: dict[str, Any] = {}

    def held() -> None:
        try:
            client(gateway, key).chat.completions.create(**ask("sleepy"))
        except openai.APIStatusError as exc:
            outcome["status"], outcome["code"] = exc.status_code, exc.response.json()["error"]["code"]

    thread = threading.Thread(target=held)
    thread.start()
    assert wait_until(lambda: metric(gateway, "gateway_held_requests", model="sleepy") == 1)
    with pytest.raises(openai.InternalServerError) as excinfo:  # the second would exceed the bound
        client(gateway, key).chat.completions.create(**ask("sleepy"))
    assert excinfo.value.response.json()["error"]["code"] == "model_waking"
    assert metric(gateway, "gateway_wake_outcomes_total", model="sleepy", outcome="full") == 1

    gateway.signal(signal.SIGTERM)  # the held request is answered now, so its retry reaches another replica
    thread.join(timeout=15)
    assert outcome == {"status": 503, "code": "model_waking"}
    assert gateway.wait() == 0
    assert len(usage_rows(pg_dsn, 2)) == 2

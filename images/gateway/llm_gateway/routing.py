"""Which backend serves a request: health, circuit breakers, least-outstanding balancing, prefix affinity.

- Every catalog model has a pool of ``Backend`` objects (one per base URL).
- Active health checks: ``GET <backend>/health`` every ``GATEWAY_HEALTH_INTERVAL_S``; a failing backend is
  skipped while a healthy one exists.
- Circuit breaker per backend: ``GATEWAY_BREAKER_FAILURES`` consecutive failures (connect errors, 5xx,
  timeouts) open it; after ``GATEWAY_BREAKER_RESET_S`` one trial request is let through (half-open); its
  success closes the breaker, its failure opens it again.
- Balancing: least outstanding requests (ties broken at random). With ``prefix_affinity`` on, the prompt
  prefix picks a preferred backend by rendezvous hashing (so the same prefix keeps hitting the same vLLM
  prefix cache, and adding/removing a backend only moves that backend's share); bounded load: if the
  preferred backend would exceed ``ceil((1+eps) * average outstanding)`` the least-outstanding one is used.
- Retries and fallbacks are driven by ``app.py`` with ``backoff_delay`` below.
- Scale from zero: ``wait_healthy`` lets a request wait for a model without a healthy backend (scaled to zero,
  waking); while anyone waits, that model is health-checked every ``wake_probe_interval_s`` instead of every
  ``health_interval_s``, and waiters are woken by the check that first sees a healthy backend.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import random
import time
from collections import Counter
from collections.abc import Iterable, Sequence

from llm_gateway import metrics
from llm_gateway.catalog import Catalog, ModelEntry
from llm_gateway.upstream import Timeouts, UpstreamClient, UpstreamError

CLOSED, HALF_OPEN, OPEN = 0, 1, 2


class Backend:
    __slots__ = ("url", "model", "outstanding", "healthy", "state", "failures", "opened_at", "probing",
                 "_outstanding_gauge", "_state_gauge", "_healthy_gauge")

    def __init__(self, url: str, model: str) -> None:
        self.url = url
        self.model = model
        self.outstanding = 0
        self.healthy = True  # optimistic until the first health check says otherwise
        self.state = CLOSED
        self.failures = 0
        self.opened_at = 0.0
        self.probing = False
        self._outstanding_gauge = metrics.BACKEND_OUTSTANDING.labels(model, url)
        self._state_gauge = metrics.BREAKER_STATE.labels(model, url)
        self._healthy_gauge = metrics.BACKEND_HEALTHY.labels(model, url)
        self._state_gauge.set(CLOSED)
        self._healthy_gauge.set(1)

    def set_healthy(self, healthy: bool) -> None:
        self.healthy = healthy
        self._healthy_gauge.set(1 if healthy else 0)

    def _set_state(self, state: int) -> None:
        self.state = state
        self._state_gauge.set(state)

    def admits(self, now: float, reset_s: float) -> bool:
        """Whether the breaker lets a request through now (without taking the half-open trial slot)."""
        if self.state == CLOSED:
            return True
        if self.state == OPEN:
            return now - self.opened_at >= reset_s
        return not self.probing

    def acquire(self, now: float, reset_s: float) -> None:
        if self.state == OPEN and now - self.opened_at >= reset_s:
            self._set_state(HALF_OPEN)
        if self.state == HALF_OPEN:
            self.probing = True
        self.outstanding += 1
        self._outstanding_gauge.set(self.outstanding)

    def release(self) -> None:
        self.outstanding -= 1
        self._outstanding_gauge.set(self.outstanding)

    def record_success(self) -> None:
        self.failures = 0
        self.probing = False
        if self.state != CLOSED:
            self._set_state(CLOSED)

    def record_failure(self, threshold: int, now: float) -> None:
        self.failures += 1
        self.probing = False
        if self.state == HALF_OPEN or self.failures >= threshold:
            self.opened_at = now
            self._set_state(OPEN)


def _rendezvous_score(key: bytes, url: str) -> int:
    return int.from_bytes(hashlib.blake2b(key + url.encode(), digest_size=8).digest(), "big")


def backoff_delay(attempt: int, base_s: float, max_s: float) -> float:
    """Exponential backoff with equal jitter: half fixed, half random, so retries of many clients spread."""
    ceiling = min(max_s, base_s * (2 ** attempt))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


class Router:
    def __init__(self, catalog: Catalog, *, breaker_failures: int = 5, breaker_reset_s: float = 30.0,
                 affinity_epsilon: float = 0.25, health_interval_s: float = 5.0,
                 health_timeout_s: float = 2.0, wake_probe_interval_s: float = 1.0) -> None:
        self.catalog = catalog
        self.breaker_failures = breaker_failures
        self.breaker_reset_s = breaker_reset_s
        self.affinity_epsilon = affinity_epsilon
        self.health_interval_s = health_interval_s
        self.health_timeout_s = health_timeout_s
        self.wake_probe_interval_s = wake_probe_interval_s
        self.pools: dict[str, list[Backend]] = {
            entry.name: [Backend(url, entry.name) for url in entry.backends] for entry in catalog.models
        }
        self._health_task: asyncio.Task[None] | None = None
        self._client: UpstreamClient | None = None
        self._became_healthy = asyncio.Event()  # set (and replaced) when a check finds a backend healthy again
        self._waiting: Counter[str] = Counter()  # model -> requests waiting for it to wake
        self._wake_probes: dict[str, asyncio.Task[None]] = {}

    # --- choosing ---
    def choose(self, entry: ModelEntry, affinity_key: bytes | None = None,
               exclude: Iterable[Backend] = ()) -> Backend | None:
        """The backend for the next attempt (its outstanding count already taken), or None."""
        now = time.monotonic()
        excluded = set(map(id, exclude))
        admitted = [b for b in self.pools[entry.name] if b.admits(now, self.breaker_reset_s)]
        fresh = [b for b in admitted if id(b) not in excluded] or admitted  # retry elsewhere if possible
        candidates = [b for b in fresh if b.healthy] or fresh  # health checks may lag: never refuse outright
        if not candidates:
            return None
        chosen: Backend | None = None
        if affinity_key is not None and entry.prefix_affinity and len(candidates) > 1:
            preferred = max(candidates, key=lambda b: _rendezvous_score(affinity_key, b.url))
            total = sum(b.outstanding for b in candidates)
            bound = math.ceil((1 + self.affinity_epsilon) * (total + 1) / len(candidates))
            if preferred.outstanding + 1 <= bound:
                chosen = preferred
        if chosen is None:
            least = min(b.outstanding for b in candidates)
            tied = [b for b in candidates if b.outstanding == least]
            chosen = tied[0] if len(tied) == 1 else random.choice(tied)
        chosen.acquire(now, self.breaker_reset_s)
        return chosen

    def success(self, backend: Backend) -> None:
        backend.record_success()

    def failure(self, backend: Backend) -> None:
        backend.record_failure(self.breaker_failures, time.monotonic())

    def ready_models(self) -> int:
        """How many models have at least one healthy backend whose breaker is not open."""
        now = time.monotonic()
        return sum(
            1 for pool in self.pools.values()
            if any(b.healthy and b.admits(now, self.breaker_reset_s) for b in pool)
        )

    def has_healthy(self, name: str) -> bool:
        """Whether the model has a backend whose last health check passed (False: scaled to zero, or down)."""
        for backend in self.pools[name]:
            if backend.healthy:
                return True
        return False

    async def wait_healthy(self, names: Sequence[str], timeout_s: float) -> bool:
        """Wait until one of the models ``names`` has a healthy backend (True) or ``timeout_s`` passes (False)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        for name in names:
            self._waiting[name] += 1
            probe = self._wake_probes.get(name)
            if self._client is not None and (probe is None or probe.done()):
                self._wake_probes[name] = asyncio.ensure_future(self._wake_probe(name, self._client))
        try:
            while not any(self.has_healthy(name) for name in names):
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return False
                try:
                    await asyncio.wait_for(self._became_healthy.wait(), remaining)
                except TimeoutError:
                    pass
            return True
        finally:
            for name in names:
                self._waiting[name] -= 1
                if self._waiting[name] <= 0:
                    del self._waiting[name]

    async def _wake_probe(self, name: str, client: UpstreamClient) -> None:
        """Health-check one model every ``wake_probe_interval_s`` while requests wait for it and it is not healthy."""
        while self._waiting.get(name, 0) > 0 and not self.has_healthy(name):
            await self._check(client, self.pools[name])
            await asyncio.sleep(self.wake_probe_interval_s)

    def snapshot(self) -> dict[str, list[dict[str, object]]]:
        names = {CLOSED: "closed", HALF_OPEN: "half_open", OPEN: "open"}
        return {
            model: [{"url": b.url, "healthy": b.healthy, "breaker": names[b.state], "outstanding": b.outstanding}
                    for b in pool]
            for model, pool in self.pools.items()
        }

    # --- active health checks ---
    async def check_once(self, client: UpstreamClient) -> None:
        await self._check(client, [b for pool in self.pools.values() for b in pool])

    async def _check(self, client: UpstreamClient, backends: list[Backend]) -> None:
        results = await asyncio.gather(*(self._probe(client, b.url) for b in backends))
        recovered = False
        for backend, healthy in zip(backends, results, strict=True):
            recovered = recovered or (healthy and not backend.healthy)
            backend.set_healthy(healthy)
        if recovered:
            self._became_healthy.set()
            self._became_healthy = asyncio.Event()

    async def _probe(self, client: UpstreamClient, url: str) -> bool:
        try:
            status = await client.get_status(url, "/health", Timeouts(self.health_timeout_s, self.health_timeout_s))
        except (UpstreamError, TimeoutError, OSError):
            return False
        return status == 200

    def start_health_checks(self, client: UpstreamClient) -> None:
        self._client = client

        async def loop() -> None:
            while True:
                await asyncio.sleep(self.health_interval_s)
                await self.check_once(client)

        self._health_task = asyncio.create_task(loop())

    async def close(self) -> None:
        if self._health_task is not None:
            self._health_task.cancel()
        for probe in self._wake_probes.values():
            probe.cancel()

"""Throwaway real services on loopback for the gateway tests and the benchmark.

Importable on its own (the benchmark script uses it), so nothing here depends on pytest.
Every server binds 127.0.0.1 on a free port and lives in a temp dir removed on ``close()``.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

def _postgres_bin() -> Path:
    """Debian/Ubuntu install server binaries under /usr/lib/postgresql/<major>/bin (15 on Debian 12): take the newest."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if not found:
        raise RuntimeError("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: run `make setup` (apt package postgresql)")
    return found[-1].parent


PG_BIN = _postgres_bin()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, timeout_s: float = 15.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.02)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout_s}s")


def wait_port_closed(port: int, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                time.sleep(0.02)
        except OSError:
            return
    raise TimeoutError(f"port {port} still accepting after {timeout_s}s")


def http_request(method: str, url: str, json_body: object = None, headers: dict[str, str] | None = None,
                 timeout_s: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """``(status, lower-cased headers, body)`` via the standard library; 4xx/5xx are returned, not raised."""
    import json
    import urllib.error
    import urllib.request

    data = None if json_body is None else json.dumps(json_body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={
        **({"content-type": "application/json"} if data is not None else {}), **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()


class RedisServer:
    """``redis-server`` without persistence; ``stop()``/``start()`` keep the same port (outage tests)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="gw-redis-"))
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self) -> None:
        if self.running:
            return
        self._proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.dir), "--loglevel", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port)

    def stop(self) -> None:
        if self._proc is None:
            return
        self._proc.terminate()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        self._proc = None
        wait_port_closed(self.port)

    def flush(self) -> None:
        import redis

        client = redis.Redis.from_url(self.url)
        try:
            client.flushall()
        finally:
            client.close()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class PostgresServer:
    """A PostgreSQL 15 cluster run as the ``postgres`` user (it refuses root), trust auth on loopback."""

    user = "postgres"

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="gw-pg-"))
        self.data = self.dir / "data"
        self._as_postgres = [] if os.geteuid() != 0 else ["runuser", "-u", "postgres", "--"]
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self._run([str(PG_BIN / "initdb"), "-D", str(self.data), "-U", self.user, "-A", "trust",
                   "-E", "UTF8", "--no-sync"])
        with open(self.data / "postgresql.conf", "a") as conf:
            conf.write(
                f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                f"unix_socket_directories = '{self.dir}'\nfsync = off\nsynchronous_commit = off\n"
                "full_page_writes = off\nmax_connections = 200\n"
            )
        self._running = False

    def _run(self, argv: list[str]) -> None:
        subprocess.run([*self._as_postgres, *argv], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE)

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> None:
        if self._running:
            return
        self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.dir / "log"),
                   "-w", "-t", "30", "start"])
        self._running = True
        wait_for_port(self.port)

    def stop(self) -> None:
        if not self._running:
            return
        try:
            self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "-t", "10", "stop"])
        except subprocess.CalledProcessError:  # a stuck session: do not let teardown hang
            self._run([str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop"])
        self._running = False

    def psql(self, sql: str, database: str = "postgres") -> str:
        done = subprocess.run(
            ["psql", "-X", "-q", "-t", "-A", "-v", "ON_ERROR_STOP=1", "-d", self.dsn(database), "-c", sql],
            check=True, capture_output=True, text=True,
        )
        return done.stdout

    def create_database(self, name: str) -> str:
        self.psql(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


REPO_ROOT = Path(__file__).resolve().parents[2]
GATEWAY_SRC = REPO_ROOT / "images" / "gateway"
FAKE_UPSTREAM = Path(__file__).resolve().parent / "fake_upstream.py"


class FakeUpstream:
    """``fake_upstream.py`` in a subprocess: ``n`` independent fake model servers on free ports."""

    def __init__(self, n: int = 4) -> None:
        import sys

        self.ports = [free_port() for _ in range(n)]
        self._proc = subprocess.Popen([sys.executable, str(FAKE_UPSTREAM), *map(str, self.ports)],
                                      stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"fake upstream did not start: {line!r}")

    def url(self, index: int) -> str:
        return f"http://127.0.0.1:{self.ports[index]}"

    @staticmethod
    def _ok(method: str, url: str, body: object = None) -> bytes:
        status, _, payload = http_request(method, url, body)
        if status != 200:
            raise RuntimeError(f"{method} {url}: {status} {payload[:200]!r}")
        return payload

    def control(self, index: int, **settings: object) -> None:
        self._ok("POST", f"{self.url(index)}/_control", settings)

    def log(self, index: int) -> list[dict[str, object]]:
        import json

        return list(json.loads(self._ok("GET", f"{self.url(index)}/_log")))

    def _admin(self, index: int, action: str) -> None:
        """Through another backend's port (a down one cannot answer): the first of the others that is up."""
        others = [port for port in self.ports if port != self.ports[index]]
        for port in others:
            try:
                self._ok("POST", f"http://127.0.0.1:{port}/_admin/{self.ports[index]}/{action}", {})
                return
            except OSError:
                if port == others[-1]:
                    raise

    def down(self, index: int) -> None:
        self._admin(index, "down")

    def up(self, index: int) -> None:
        self._admin(index, "up")

    def reset(self) -> None:
        for index in range(len(self.ports)):
            self.up(index)
            self._ok("POST", f"{self.url(index)}/_reset", {})

    def close(self) -> None:
        self._proc.terminate()
        self._proc.wait(timeout=10)


def default_catalog(upstream: FakeUpstream) -> dict[str, Any]:
    """The test catalog: six models over the fake servers 0-3 (aliases, fallback, affinity, every kind)."""
    prices = {"prompt_per_1k": 0.5, "completion_per_1k": 1.5}
    return {"models": [
        {"name": "chat-a", "aliases": ["gpt-4o-mini"], "kind": "chat", "backends": [upstream.url(0), upstream.url(1)],
         "max_tokens_cap": 512, "max_context": 4096, "prices": prices, "fallbacks": ["chat-b"]},
        {"name": "chat-b", "kind": "chat", "backends": [upstream.url(2)], "max_tokens_cap": 512,
         "max_context": 4096, "prices": {"prompt_per_1k": 1.0, "completion_per_1k": 2.0}},
        {"name": "chat-affinity", "kind": "chat", "backends": [upstream.url(0), upstream.url(1), upstream.url(2)],
         "prefix_affinity": True},
        {"name": "text-1", "kind": "completion", "backends": [upstream.url(3)], "prices": prices},
        {"name": "embed-1", "kind": "embedding", "backends": [upstream.url(3)], "prices": prices},
        {"name": "rerank-1", "kind": "rerank", "backends": [upstream.url(3)]},
    ]}


class GatewayProcess:
    """``python -m llm_gateway`` in a subprocess on free ports, configured the way Kubernetes does it."""

    def __init__(self, catalog: dict[str, object], redis_url: str, pg_dsn: str,
                 env: dict[str, str] | None = None, admin_token: str | None = None,
                 src: Path = GATEWAY_SRC) -> None:
        import secrets

        import yaml

        self.dir = Path(tempfile.mkdtemp(prefix="gw-proc-"))
        self.src = src  # another checkout of images/gateway, for A/B benchmarks of two versions
        self.port = free_port()
        self.metrics_port = free_port()
        (self.dir / "models.yaml").write_text(yaml.safe_dump(catalog))
        (self.dir / "database_url").write_text(pg_dsn)
        self.admin_token = admin_token or secrets.token_urlsafe(24)
        (self.dir / "admin_token").write_text(self.admin_token)
        self.log_path = self.dir / "gateway.log"
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "PYTHONPATH": str(src),
            "GATEWAY_HOST": "127.0.0.1",
            "GATEWAY_PORT": str(self.port),
            "GATEWAY_METRICS_PORT": str(self.metrics_port),
            "GATEWAY_MODELS_FILE": str(self.dir / "models.yaml"),
            "GATEWAY_DATABASE_URL_FILE": str(self.dir / "database_url"),
            "GATEWAY_ADMIN_TOKEN_FILE": str(self.dir / "admin_token"),
            "GATEWAY_REDIS_URL": redis_url,
            "GATEWAY_SPILL_DIR": str(self.dir / "spill"),
            "GATEWAY_HEALTH_INTERVAL_S": "0.5",
            "GATEWAY_RETRY_BASE_DELAY_S": "0.01",
            "GATEWAY_REDIS_RECONNECT_INTERVAL_S": "0.2",
            **(env or {}),
        }
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 30.0) -> GatewayProcess:
        import sys

        log = open(self.log_path, "ab")
        self._proc = subprocess.Popen([sys.executable, "-m", "llm_gateway"], cwd=str(self.src), env=self.env,
                                      stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"gateway exited with {self._proc.returncode}:\n{self.log_text()[-3000:]}")
            try:
                if http_request("GET", f"{self.base_url}/health/live", timeout_s=0.5)[0] == 200:
                    return self
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"gateway not live after {timeout_s}s:\n{self.log_text()[-3000:]}")

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def log_records(self, event: str | None = None, wait_for: int = 0) -> list[dict[str, object]]:
        """Parsed JSON log lines (optionally only ``event``), waiting up to 5 s for at least ``wait_for``
        (the gateway writes its log in batches)."""
        deadline = time.monotonic() + 5
        records = self._log_records(event)
        while len(records) < wait_for and time.monotonic() < deadline:
            time.sleep(0.05)
            records = self._log_records(event)
        return records

    def _log_records(self, event: str | None) -> list[dict[str, object]]:
        import json

        records = []
        for line in self.log_text().splitlines():
            if line.startswith("{"):
                try:
                    record = json.loads(line)
                except ValueError:
                    continue
                if event is None or record.get("event") == event:
                    records.append(record)
        return records

    def metrics_text(self) -> str:
        return http_request("GET", f"http://127.0.0.1:{self.metrics_port}/metrics")[2].decode()

    def signal(self, signum: int) -> None:
        assert self._proc is not None
        self._proc.send_signal(signum)

    def wait(self, timeout_s: float = 30.0) -> int:
        assert self._proc is not None
        return self._proc.wait(timeout=timeout_s)

    @property
    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)


async def create_api_key(dsn: str, org_id: str, *, org_limits: dict[str, int | None] | None = None,
                         key_limits: dict[str, int | None] | None = None, allowed_models: list[str] | None = None,
                         expires_at: object = None, create_org: bool = True) -> tuple[str, str]:
    """``(full key, key id)`` created through GW-DATA's KeyStore (the org too, unless it exists)."""
    from llm_gateway.db import create_pool, migrate
    from llm_gateway.keys import KeyStore

    await migrate(dsn)
    pool = await create_pool(dsn, min_size=1, max_size=2)
    try:
        store = KeyStore(pool)
        if create_org:
            await store.create_org(org_id, org_id, limits=org_limits or {})
        full_key, info = await store.create_key(org_id, limits=key_limits or {}, allowed_models=allowed_models,
                                                expires_at=expires_at)  # type: ignore[arg-type]
        return full_key, info.key_id
    finally:
        await pool.close()


def usage_rows(dsn: str, expected: int, timeout_s: float = 15.0) -> list[dict[str, object]]:
    """The ``usage_records`` rows once at least ``expected`` exist (the meter writes in the background)."""
    import asyncpg
    import asyncio

    async def fetch() -> list[dict[str, object]]:
        conn = await asyncpg.connect(dsn)
        try:
            rows = await conn.fetch("SELECT * FROM usage_records ORDER BY id")
            return [dict(row) for row in rows]
        finally:
            await conn.close()

    deadline = time.monotonic() + timeout_s
    rows = asyncio.run(fetch())
    while len(rows) < expected and time.monotonic() < deadline:
        time.sleep(0.1)
        rows = asyncio.run(fetch())
    return rows


def metric_value(metrics_text: str, name: str, labels: dict[str, str] | None = None) -> float | None:
    """The value of one sample in Prometheus text format, or None if absent."""
    for line in metrics_text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        sample, _, value = line.rpartition(" ")
        sample_name, _, label_text = sample.partition("{")
        if sample_name != name:
            continue
        found = dict(part.split("=", 1) for part in label_text.rstrip("}").split(",") if "=" in part)
        found = {key: val.strip('"') for key, val in found.items()}
        if all(found.get(key) == val for key, val in (labels or {}).items()):
            return float(value)
    return None


class RedisClusterServers:
    """A 3-master Redis Cluster on loopback (ElastiCache cluster mode stand-in)."""

    def __init__(self) -> None:
        self.nodes = [RedisServer() for _ in range(3)]
        self.bus_ports = [free_port() for _ in self.nodes]  # explicit: the default port+10000 may not exist

    @property
    def url(self) -> str:
        return self.nodes[0].url

    def start(self) -> None:
        for node, bus_port in zip(self.nodes, self.bus_ports, strict=True):
            node._proc = subprocess.Popen(
                ["redis-server", "--port", str(node.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                 "--cluster-enabled", "yes", "--cluster-port", str(bus_port), "--cluster-config-file", str(node.dir / "nodes.conf"),
                 "--dir", str(node.dir), "--loglevel", "warning"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for node in self.nodes:
            wait_for_port(node.port)
        subprocess.run(["redis-cli", "--cluster", "create", *(f"127.0.0.1:{n.port}" for n in self.nodes),
                        "--cluster-replicas", "0", "--cluster-yes"], check=True, capture_output=True, timeout=60)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            states = [subprocess.run(["redis-cli", "-p", str(n.port), "cluster", "info"], capture_output=True,
                                     text=True).stdout for n in self.nodes]
            if all("cluster_state:ok" in state for state in states):
                return
            time.sleep(0.1)
        raise TimeoutError("redis cluster did not converge")

    def close(self) -> None:
        for node in self.nodes:
            node.close()


def wait_settled(redis_url: str, timeout_s: float = 10.0) -> None:
    """Until every admitted request has been reconciled (its in-flight slot, removed by the same script that
    settles its tokens, is gone). Needs keys with a ``max_inflight`` limit, so the slots exist."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if all(client.zcard(key) == 0 for key in client.scan_iter("gw:*:inflight")):
                return
            time.sleep(0.02)
        raise TimeoutError("requests still in flight in Redis")
    finally:
        client.close()


def wait_cached(redis_url: str, entries: int, timeout_s: float = 10.0) -> None:
    """Until the response cache holds ``entries`` entries (they are written after the response)."""
    import redis

    client = redis.Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + timeout_s
        while len(list(client.scan_iter("gw:*:cache:*"))) < entries:
            if time.monotonic() > deadline:
                raise TimeoutError(f"fewer than {entries} cache entries")
            time.sleep(0.02)
    finally:
        client.close()

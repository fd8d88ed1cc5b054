"""PipelinedRedis (``llm_gateway.resp``) against real redis-server processes: pipelining, errors, script reloads,
timeouts, restarts, AUTH, database index, cancellation, TLS, and the limiter running on it."""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import secrets
import ssl
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import redis
import redis.asyncio
from redis.exceptions import AuthenticationError, ConnectionError, ReadOnlyError, ResponseError, TimeoutError

from llm_gateway.keys import KeyLimits, OrgLimits, Principal
from llm_gateway.limits import Limiter, _keys
from llm_gateway.resp import PipelinedRedis, RedisAddress, Script, reply_error
from tests.gateway.services import RedisServer, free_port, wait_for_port

ECHO_KEYS = Script.of("return {KEYS[1], ARGV[1]}")


def pause_server(url: str, ms: int) -> None:
    """Hold every client's commands for ``ms`` (replies arrive late, but they do arrive)."""
    client = redis.Redis.from_url(url)
    try:
        client.execute_command("CLIENT", "PAUSE", ms, "ALL")
    finally:
        client.close()


def wait_out_pause(url: str) -> None:
    client = redis.Redis.from_url(url, socket_timeout=30)
    try:
        client.ping()  # answered once the pause is over
    finally:
        client.close()


async def client_id(client: PipelinedRedis) -> int:
    return int(await client.execute("CLIENT", "ID"))


# ------------------------------------------------------------------ pipelining, errors, scripts


async def test_concurrent_commands_each_get_their_own_reply(redis_url: str) -> None:
    client = PipelinedRedis.from_url(redis_url)
    try:
        async def one(index: int) -> None:
            assert await client.execute("SET", f"k{index}", f"v{index}") == b"OK"
            assert await client.execute("ECHO", f"e{index}") == f"e{index}".encode()
            assert await client.execute("INCRBY", "counter", index) > 0
            assert await client.execute("GET", f"k{index}") == f"v{index}".encode()

        await asyncio.gather(*(one(index) for index in range(1, 301)))
        assert int(await client.execute("GET", "counter")) == sum(range(1, 301))
        ids = {await client_id(client) for _ in range(3)}
        assert len(ids) == 1  # one connection served everything
    finally:
        await client.aclose()


async def test_error_replies_raise_redis_py_exceptions_and_keep_the_connection(redis_url: str) -> None:
    client = PipelinedRedis.from_url(redis_url)
    try:
        before = await client_id(client)
        await client.execute("SET", "text", "abc")
        with pytest.raises(ResponseError, match="not an integer"):
            await client.execute("INCR", "text")
        with pytest.raises(ResponseError, match="unknown command"):
            await client.execute("NO-SUCH-COMMAND")
        # errors come back in place from a batch, the other replies are intact
        results = await client.execute_many([("ECHO", "a"), ("INCR", "text"), ("ECHO", "b")])
        assert results[0] == b"a" and results[2] == b"b"
        assert isinstance(results[1], ResponseError)
        assert await client_id(client) == before  # an error reply does not cost the connection
    finally:
        await client.aclose()


def test_error_reply_classes() -> None:
    import hiredis

    assert isinstance(reply_error(hiredis.ReplyError("READONLY You can't write against a read only replica.")),
                      ReadOnlyError)
    assert isinstance(reply_error(hiredis.ReplyError("NOAUTH Authentication required.")), AuthenticationError)
    assert type(reply_error(hiredis.ReplyError("ERR nope"))) is ResponseError


async def test_evalsha_loads_the_script_and_reloads_it_after_a_script_cache_flush(redis_url: str) -> None:
    client = PipelinedRedis.from_url(redis_url)
    try:
        assert await client.evalsha(ECHO_KEYS, ["k1"], [7]) == [b"k1", b"7"]
        await client.execute("SCRIPT", "FLUSH")  # what a restart or failover does to the script cache
        assert await client.evalsha(ECHO_KEYS, ["k2"], ["x"]) == [b"k2", b"x"]
        await client.execute("SCRIPT", "FLUSH")
        assert await client.evalsha_many(ECHO_KEYS, [(["a"], [1]), (["b"], [2]), (["c"], [3])]) == [
            [b"a", b"1"], [b"b", b"2"], [b"c", b"3"]]
        assert await client.execute("SCRIPT", "EXISTS", ECHO_KEYS.sha) == [1]
        failing = Script.of("return redis.call('INCR', KEYS[1])")
        await client.execute("SET", "text", "abc")
        with pytest.raises(ResponseError, match="not an integer"):
            await client.evalsha(failing, ["text"], [])
        assert ECHO_KEYS.sha == redis.Redis().register_script(ECHO_KEYS.source).sha  # same SHA as redis-py
    finally:
        await client.aclose()


# ------------------------------------------------------------------ timeouts, restarts, cancellation


async def test_a_timeout_fails_every_pending_command_closes_the_connection_and_the_next_call_reconnects(
        redis_url: str) -> None:
    client = PipelinedRedis.from_url(redis_url, timeout_s=0.2)
    try:
        first = await client_id(client)
        pause_server(redis_url, 1500)
        results = await asyncio.gather(*(client.execute("ECHO", str(index)) for index in range(5)),
                                       return_exceptions=True)
        assert all(isinstance(result, TimeoutError) for result in results), results
        assert "did not answer within 0.2s" in str(results[0])
        wait_out_pause(redis_url)  # the late replies are sent now, to a connection that no longer exists
        assert await client.execute("ECHO", "after") == b"after"
        assert await client_id(client) != first  # a fresh connection
    finally:
        await client.aclose()


async def test_a_restarted_server_is_reached_through_a_fresh_connection_without_an_error(
        redis_control: RedisServer) -> None:
    redis_control.start()
    client = PipelinedRedis.from_url(redis_control.url)
    try:
        assert await client.ping()
        # stop/start block the event loop: the client has not seen the EOF when the next command is issued
        redis_control.stop()
        redis_control.start()
        assert await client.ping()
        assert await client.evalsha(ECHO_KEYS, ["k"], [1]) == [b"k", b"1"]  # script cache was empty
        redis_control.stop()
        with pytest.raises(ConnectionError, match="cannot connect to Redis at 127.0.0.1"):
            await client.ping()
        redis_control.start()
        assert await client.ping()  # reconnects lazily
    finally:
        await client.aclose()


async def test_a_command_that_may_have_run_is_never_sent_twice() -> None:
    """A server that takes each command and drops the connection without answering: it must see it once."""
    received: list[bytes] = []

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.append(await reader.read(65536))
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = PipelinedRedis.from_url(f"redis://127.0.0.1:{port}/0", timeout_s=2)
    try:
        with pytest.raises(ConnectionError, match="Connection to Redis lost"):
            await client.execute("INCR", "once")
        assert received == [b"*2\r\n$4\r\nINCR\r\n$4\r\nonce\r\n"]
    finally:
        await client.aclose()
        server.close()
        await server.wait_closed()


async def test_a_cancelled_caller_does_not_shift_the_replies_of_the_others(redis_url: str) -> None:
    client = PipelinedRedis.from_url(redis_url, timeout_s=5)
    try:
        connection = await client_id(client)
        pause_server(redis_url, 1000)
        cancelled = asyncio.ensure_future(client.execute("ECHO", "cancelled"))
        kept = asyncio.ensure_future(client.execute("ECHO", "kept"))
        await asyncio.sleep(0.05)  # both written, neither answered
        cancelled.cancel()
        assert await kept == b"kept"
        assert cancelled.cancelled()
        assert await client.execute("ECHO", "next") == b"next"
        assert await client_id(client) == connection  # no reconnect was needed
        assert not client._protocol._waiting  # type: ignore[union-attr]  # nothing left behind
    finally:
        await client.aclose()


async def test_closed_client_refuses_commands(redis_url: str) -> None:
    client = PipelinedRedis.from_url(redis_url)
    assert await client.ping()
    await client.aclose()
    with pytest.raises(ConnectionError, match="closed"):
        await client.ping()


# ------------------------------------------------------------------ URL, AUTH, database index


def test_url_parsing() -> None:
    address = RedisAddress.from_url("rediss://alice:p%40ss@cache.internal:6380/4", password="ignored")
    assert (address.host, address.port, address.db, address.username, address.password, address.tls) == (
        "cache.internal", 6380, 4, "alice", "p@ss", True)
    address = RedisAddress.from_url("redis://10.0.0.5", password="from-file")
    assert (address.port, address.db, address.username, address.password, address.tls) == (
        6379, 0, None, "from-file", False)
    with pytest.raises(ValueError, match=r"scheme 'http' is not supported; use redis:// or rediss://"):
        RedisAddress.from_url("http://host:6379")
    with pytest.raises(ValueError, match=r"database 'abc' is not a non-negative integer") as raised:
        RedisAddress.from_url("redis://:hunter2-secret@host:6379/abc")
    assert "hunter2-secret" not in str(raised.value)  # the password is never echoed
    with pytest.raises(ValueError, match="no host"):
        RedisAddress.from_url("redis:///0")
    with pytest.raises(ValueError, match="port is not a number"):
        RedisAddress.from_url("redis://host:port/0")


@pytest.fixture
def password_redis() -> Iterator[tuple[int, str]]:
    password = secrets.token_urlsafe(16)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="gw-redis-auth-") as directory:
        process = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", directory, "--requirepass", password], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(port)
            yield port, password
        finally:
            process.terminate()
            process.wait(10)


async def test_auth_with_the_password_given_or_in_the_url_and_a_clear_error_when_wrong(
        password_redis: tuple[int, str]) -> None:
    port, password = password_redis
    given = PipelinedRedis.from_url(f"redis://127.0.0.1:{port}/0", password=password)
    in_url = PipelinedRedis.from_url(f"redis://:{password}@127.0.0.1:{port}/0")
    wrong = PipelinedRedis.from_url(f"redis://127.0.0.1:{port}/0", password="not-" + password)
    missing = PipelinedRedis.from_url(f"redis://127.0.0.1:{port}/0")
    try:
        assert await given.ping() and await in_url.ping()
        await given.execute("ACL", "SETUSER", "limiter", "on", f">{password}x", "~*", "+@all")
        named = PipelinedRedis.from_url(f"redis://limiter:{password}x@127.0.0.1:{port}/0")
        assert await named.execute("ACL", "WHOAMI") == b"limiter"
        await named.aclose()
        with pytest.raises(AuthenticationError, match="refused the password") as raised:
            await wrong.ping()
        assert password not in str(raised.value)
        with pytest.raises(AuthenticationError, match="NOAUTH"):
            await missing.ping()
    finally:
        for client in (given, in_url, wrong, missing):
            await client.aclose()


async def test_the_database_index_of_the_url_is_selected(redis_url: str) -> None:
    base = redis_url.rsplit("/", 1)[0]
    client = PipelinedRedis.from_url(f"{base}/3")
    check = redis.Redis.from_url(f"{base}/3")
    try:
        await client.execute("SET", "in-db-3", "yes")
        assert check.get("in-db-3") == b"yes"
        assert redis.Redis.from_url(f"{base}/0").get("in-db-3") is None
        with pytest.raises(ResponseError, match="refused SELECT 99"):
            await PipelinedRedis.from_url(f"{base}/99").ping()
    finally:
        check.flushdb()
        check.close()
        await client.aclose()


# ------------------------------------------------------------------ TLS


@pytest.fixture(scope="module")
def tls_redis() -> Iterator[tuple[int, Path]]:
    """redis-server with only a TLS port, its certificate (for 127.0.0.1) signed by a CA made here."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.now(UTC)

    def certificate(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Name,
                    issuer_key: ec.EllipticCurvePrivateKey, ca: bool) -> x509.Certificate:
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(issuer).public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(hours=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if ca:
            builder = builder.add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
                critical=True).add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        else:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False).add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False)
        return builder.sign(issuer_key, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway-test-ca")])
    ca_cert = certificate("gateway-test-ca", ca_key, ca_name, ca_key, ca=True)
    server_cert = certificate("127.0.0.1", server_key, ca_name, ca_key, ca=False)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="gw-redis-tls-") as directory:
        folder = Path(directory)
        (folder / "ca.pem").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
        (folder / "server.pem").write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
        (folder / "server.key").write_bytes(server_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        process = subprocess.Popen(
            ["redis-server", "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", directory, "--tls-cert-file", str(folder / "server.pem"),
             "--tls-key-file", str(folder / "server.key"), "--tls-ca-cert-file", str(folder / "ca.pem"),
             "--tls-auth-clients", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(port)
            yield port, folder / "ca.pem"
        finally:
            process.terminate()
            process.wait(10)


async def test_tls_verifies_the_server_certificate(tls_redis: tuple[int, Path]) -> None:
    port, ca_file = tls_redis
    trusted = PipelinedRedis.from_url(f"rediss://127.0.0.1:{port}/0", timeout_s=2,
                                      ssl_context=ssl.create_default_context(cafile=str(ca_file)))
    default = PipelinedRedis.from_url(f"rediss://127.0.0.1:{port}/0", timeout_s=2)  # system CAs only
    plain = PipelinedRedis.from_url(f"redis://127.0.0.1:{port}/0", timeout_s=0.5)
    try:
        assert await trusted.ping()
        assert await asyncio.gather(*(trusted.execute("ECHO", str(i)) for i in range(50))) == [
            str(i).encode() for i in range(50)]
        with pytest.raises(ConnectionError, match="certificate verify failed"):
            await default.ping()
        with pytest.raises((ConnectionError, TimeoutError)):  # TLS port, plain client: never a reply
            await plain.ping()
    finally:
        for client in (trusted, default, plain):
            await client.aclose()


# ------------------------------------------------------------------ the limiter on it


async def test_limiter_admits_reconciles_and_degrades_through_the_pipelined_connection(
        redis_control: RedisServer) -> None:
    redis_control.start()
    redis_control.flush()
    py_client = redis.asyncio.Redis.from_url(redis_control.url, socket_timeout=0.25, socket_connect_timeout=0.25)
    pipelined = PipelinedRedis.from_url(redis_control.url, timeout_s=0.25)
    limiter = Limiter(py_client, reconnect_interval_s=0.05, pipelined=pipelined)
    principal = Principal("k1", "org-p", "t", None, KeyLimits(10, 1000, None, 2),
                          OrgLimits(100, 10_000, 1000, 50, 100_000))
    keys = _keys("org-p", "k1", datetime.now(UTC))
    try:
        results = [await limiter.admit(principal, f"r{index}", 100) for index in range(3)]
        assert [decision.allowed for decision, _ in results] == [True, True, False]
        assert results[2][0].reason == "inflight"
        await py_client.execute_command("SCRIPT", "FLUSH")  # the reconcile batch must reload its script
        await asyncio.gather(*(limiter.reconcile(reservation, 10) for _, reservation in results if reservation))
        assert await py_client.zcard(keys[4]) == 0
        decision, _ = await limiter.admit(principal, "r9", 100)
        assert decision.allowed and decision.tok_remaining == 1000 - 200 + 180 - 100
        assert not limiter.degraded

        redis_control.stop()
        decision, reservation = await limiter.admit(principal, "r10", 100)
        assert decision.allowed and reservation is not None and reservation.local and limiter.degraded
        redis_control.start()
        for _ in range(100):
            if not limiter.degraded:
                break
            await asyncio.sleep(0.05)
        assert not limiter.degraded
        decision, reservation = await limiter.admit(principal, "r11", 100)
        assert decision.allowed and reservation is not None and not reservation.local
    finally:
        await limiter.close()
        await pipelined.aclose()
        await py_client.aclose()


# ------------------------------------------------------------------ the gateway's event loop


@pytest.mark.parametrize("scenario", [
    test_concurrent_commands_each_get_their_own_reply,
    test_a_timeout_fails_every_pending_command_closes_the_connection_and_the_next_call_reconnects,
    test_a_restarted_server_is_reached_through_a_fresh_connection_without_an_error,
    test_a_cancelled_caller_does_not_shift_the_replies_of_the_others,
    test_limiter_admits_reconciles_and_degrades_through_the_pipelined_connection,
], ids=lambda scenario: scenario.__name__.removeprefix("test_")[:40])
def test_the_same_on_uvloop(scenario, redis_control: RedisServer) -> None:  # type: ignore[no-untyped-def]
    """The gateway runs on uvloop, whose transports differ from asyncio's (socket ownership, write paths)."""
    import inspect

    import uvloop

    redis_control.start()
    redis_control.flush()
    wants_server = "redis_control" in inspect.signature(scenario).parameters
    uvloop.run(scenario(redis_control if wants_server else redis_control.url))


async def test_a_node_demoted_to_replica_is_left_for_a_new_connection(redis_url: str) -> None:
    """After a failover the old primary answers READONLY on the connection it kept; the next command must go
    through a new connection (which follows the endpoint's DNS to the new primary)."""
    demoted = RedisServer()
    demoted.start()
    client = PipelinedRedis.from_url(demoted.url)
    admin = redis.Redis.from_url(demoted.url)
    try:
        first = await client_id(client)
        writes = Script.of("return redis.call('INCR', KEYS[1])")
        assert await client.evalsha(writes, ["n"], []) == 1
        primary_port = int(redis_url.rsplit(":", 1)[1].split("/")[0])
        admin.execute_command("REPLICAOF", "127.0.0.1", primary_port)
        with pytest.raises(ReadOnlyError):
            await client.evalsha(writes, ["n"], [])
        admin.execute_command("REPLICAOF", "NO", "ONE")
        assert await client_id(client) != first
    finally:
        admin.close()
        await client.aclose()
        demoted.close()

"""The gateway's HTTP/1.1 client for model servers (``llm_gateway.upstream``), against scripted loopback servers.

Every test runs under both the standard asyncio loop and uvloop (the gateway's production loop): their transports
differ (uvloop's are not ``asyncio.Transport`` instances, for one), and the client must work the same on both.
"""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvloop

from llm_gateway.upstream import (
    Timeouts, UpstreamClient, UpstreamConnectError, UpstreamDisconnected, UpstreamProtocolError,
)

OK_JSON = b'{"ok": true}'
T = Timeouts(connect_s=2.0, total_s=5.0)


def response(body: bytes = OK_JSON, status: str = "200 OK", extra: bytes = b"") -> bytes:
    return (f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n".encode()
            + extra + b"\r\n" + body)


Action = bytes | float | asyncio.Event | None  # bytes: write; float: sleep; Event: wait for it; None: close


@dataclass
class ScriptedServer:
    """A loopback HTTP server: ``script(request_number, connection_number, request_bytes)`` says what to do."""

    script: Callable[[int, int, bytes], list[Action]]
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    server: asyncio.AbstractServer | None = None
    port: int = 0

    async def start(self, tls: ssl.SSLContext | None = None) -> ScriptedServer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=tls)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        number = self.connections
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                request = head + (await reader.readexactly(length) if length else b"")
                self.requests.append(request)
                for action in self.script(len(self.requests) - 1, number, request):
                    if action is None:
                        writer.close()
                        return
                    if isinstance(action, float):
                        await asyncio.sleep(action)
                    elif isinstance(action, asyncio.Event):
                        await asyncio.wait_for(action.wait(), 10)
                    else:
                        writer.write(action)
                        await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    async def close(self) -> None:
        assert self.server is not None
        self.server.close()


@pytest.fixture(params=["asyncio", "uvloop"])
def run(request: pytest.FixtureRequest) -> Callable[[Callable[[], Awaitable[Any]]], Any]:
    def runner(main: Callable[[], Awaitable[Any]]) -> Any:
        async def wrapped() -> Any:
            return await main()

        if request.param == "uvloop":
            return uvloop.run(wrapped())
        return asyncio.run(wrapped())

    return runner


async def post(client: UpstreamClient, url: str, timeouts: Timeouts = T, path: str = "/v1/chat/completions",
               body: bytes = b'{"model": "m"}') -> tuple[int, bytes]:
    res = await client.request("POST", url, path, body, timeouts, (("content-type", "application/json"),))
    try:
        return res.status, await res.read()
    finally:
        res.release()


def test_sends_one_well_formed_request_and_reuses_the_connection(run: Any) -> None:
    async def main() -> None:
        server = await ScriptedServer(lambda i, c, req: [response(b'{"n": %d}' % i)]).start()
        client = UpstreamClient()
        for index in range(5):
            assert await post(client, server.url) == (200, b'{"n": %d}' % index)
        assert server.connections == 1  # keep-alive: five requests, one connection
        head, _, body = server.requests[0].partition(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        assert lines[0] == b"POST /v1/chat/completions HTTP/1.1"
        assert f"host: 127.0.0.1:{server.port}".encode() in lines
        assert b"content-length: 14" in lines and b"content-type: application/json" in lines
        assert body == b'{"model": "m"}'
        await client.close()
        await server.close()

    run(main)


def test_base_path_of_the_backend_url_is_kept(run: Any) -> None:
    async def main() -> None:
        server = await ScriptedServer(lambda i, c, req: [response()]).start()
        client = UpstreamClient()
        assert await post(client, server.url + "/served/llama", path="/v1/completions") == (200, OK_JSON)
        assert server.requests[0].startswith(b"POST /served/llama/v1/completions HTTP/1.1\r\n")
        await client.close()
        await server.close()

    run(main)


def test_connection_close_responses_and_half_read_bodies_are_not_reused(run: Any) -> None:
    async def main() -> None:
        def script(i: int, c: int, req: bytes) -> list[Action]:
            if i == 0:
                return [response(extra=b"connection: close\r\n"), None]
            return [response(b"x" * 10_000)]

        server = await ScriptedServer(script).start()
        client = UpstreamClient()
        assert await post(client, server.url) == (200, OK_JSON)
        assert client.idle_connections() == 0
        res = await client.request("POST", server.url, "/v1/x", b"{}", T)
        res.release()  # body not read: this connection cannot carry another exchange
        assert client.idle_connections() == 0
        assert (await post(client, server.url))[0] == 200
        assert server.connections == 3
        await client.close()
        await server.close()

    run(main)


def test_chunked_split_and_connection_delimited_bodies(run: Any) -> None:
    async def main() -> None:
        def script(i: int, c: int, req: bytes) -> list[Action]:
            if i == 0:  # chunked, written in pieces with pauses
                return [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n", 0.05,
                        b"6\r\n world\r\n", 0.05, b"0\r\n\r\n"]
            if i == 1:  # content-length body split across writes
                return [b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\n01234", 0.05, b"56789"]
            return [b"HTTP/1.1 200 OK\r\nconnection: close\r\n\r\nuntil the end", None]  # no framing

        server = await ScriptedServer(script).start()
        client = UpstreamClient()
        assert await post(client, server.url) == (200, b"hello world")
        assert await post(client, server.url) == (200, b"0123456789")
        assert await post(client, server.url) == (200, b"until the end")
        await client.close()
        await server.close()

    run(main)


def test_stream_chunks_arrive_as_they_are_sent(run: Any) -> None:
    async def main() -> None:
        events = [b"data: {\"n\": %d}\n\n" % n for n in range(4)]
        delivered = [asyncio.Event() for _ in events]
        # the server sends each next event only once the client holds the previous one: a client that buffered
        # the stream until its end would stall here (and fail on the server's 10 s wait)
        script_actions: list[Action] = [b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                                        b"transfer-encoding: chunked\r\n\r\n"]
        for event, got_it in zip(events, delivered, strict=True):
            script_actions += [b"%x\r\n%s\r\n" % (len(event), event), got_it]
        script_actions.append(b"0\r\n\r\n")
        server = await ScriptedServer(lambda i, c, req: script_actions).start()
        client = UpstreamClient()
        res = await client.request("POST", server.url, "/v1/chat/completions", b"{}",
                                   Timeouts(2.0, 30.0, idle_s=15.0))
        assert res.status == 200 and res.header(b"content-type") == b"text/event-stream"
        received = b""
        async for piece in res.chunks():
            received += piece
            for number, got_it in enumerate(delivered):
                if received.count(b"data: ") > number:
                    got_it.set()
        res.release()
        assert received == b"".join(events)
        assert client.idle_connections() == 1  # the stream ended cleanly: reusable
        await client.close()
        await server.close()

    run(main)


def test_refused_and_unresolvable_are_connect_errors(run: Any) -> None:
    async def main() -> None:
        import socket

        with socket.socket() as sock:  # a port that was free a moment ago: nothing listens on it
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        client = UpstreamClient()
        with pytest.raises(UpstreamConnectError, match=f"127.0.0.1:{port}"):
            await post(client, f"http://127.0.0.1:{port}")
        with pytest.raises(UpstreamConnectError, match="no-such-host.invalid"):
            await post(client, "http://no-such-host.invalid:8000")
        with pytest.raises(UpstreamConnectError, match="not an http"):
            await post(client, "ftp://127.0.0.1:21")

    run(main)


def test_close_before_answering_is_retryable_mid_body_is_not(run: Any) -> None:
    async def main() -> None:
        def script(i: int, c: int, req: bytes) -> list[Action]:
            if i == 0:
                return [None]
            return [b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial", None]

        server = await ScriptedServer(script).start()
        client = UpstreamClient()
        with pytest.raises(UpstreamDisconnected):
            await post(client, server.url)
        with pytest.raises(UpstreamProtocolError, match="mid-response"):
            await post(client, server.url)
        await client.close()
        await server.close()

    run(main)


def test_malformed_response_is_a_protocol_error(run: Any) -> None:
    async def main() -> None:
        server = await ScriptedServer(lambda i, c, req: [b"SMTP ready\r\n\r\n"]).start()
        client = UpstreamClient()
        with pytest.raises(UpstreamProtocolError, match="malformed"):
            await post(client, server.url)
        assert client.idle_connections() == 0
        await client.close()
        await server.close()

    run(main)


def test_bytes_arriving_on_a_pooled_connection_retire_it(run: Any) -> None:
    async def main() -> None:
        def script(i: int, c: int, req: bytes) -> list[Action]:
            if i == 0:  # a second, unasked-for response follows the first one a moment later
                return [response(), 0.05, response(b'{"stray": true}')]
            return [response(b'{"n": %d}' % i)]

        server = await ScriptedServer(script).start()
        client = UpstreamClient()
        assert await post(client, server.url) == (200, OK_JSON)
        await asyncio.sleep(0.2)
        assert await post(client, server.url) == (200, b'{"n": 1}')  # never the stray answer
        assert server.connections == 2
        await client.close()
        await server.close()

    run(main)


def test_interim_100_continue_is_skipped(run: Any) -> None:
    async def main() -> None:
        server = await ScriptedServer(lambda i, c, req: [b"HTTP/1.1 100 Continue\r\n\r\n", response()]).start()
        client = UpstreamClient()
        assert await post(client, server.url) == (200, OK_JSON)
        await client.close()
        await server.close()

    run(main)


def test_total_and_idle_timeouts_raise_and_drop_the_connection(run: Any) -> None:
    async def main() -> None:
        def script(i: int, c: int, req: bytes) -> list[Action]:
            if i == 0:
                return [1.0, response()]  # slower than the total timeout
            if i == 1:  # a stream that stalls after its first event
                return [b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n4\r\nabcd\r\n", 1.0, b"0\r\n\r\n"]
            return [response()]

        server = await ScriptedServer(script).start()
        client = UpstreamClient()
        with pytest.raises(TimeoutError):
            await post(client, server.url, Timeouts(connect_s=1.0, total_s=0.2))
        res = await client.request("POST", server.url, "/s", b"{}", Timeouts(1.0, 5.0, idle_s=0.2))
        pieces = []
        with pytest.raises(TimeoutError):
            async for piece in res.chunks():
                pieces.append(piece)
        res.release()
        assert pieces == [b"abcd"]
        assert client.idle_connections() == 0
        assert await post(client, server.url) == (200, OK_JSON)  # a fresh connection works
        assert server.connections == 3
        await client.close()
        await server.close()

    run(main)


def test_idle_connections_older_than_the_limit_are_not_reused(run: Any) -> None:
    async def main() -> None:
        server = await ScriptedServer(lambda i, c, req: [response()]).start()
        client = UpstreamClient(max_idle_s=1.0)
        await post(client, server.url)
        await asyncio.sleep(1.5)  # longer than max_idle_s: the server may be closing it right now
        await post(client, server.url)
        assert server.connections == 2
        await post(client, server.url)  # right after (well within max_idle_s): reused
        assert server.connections == 2
        await client.close()
        await server.close()

    run(main)


async def wait_until_pooled_connections_closed(client: UpstreamClient) -> None:
    """Until every pooled connection has seen the server's close (a fixed sleep would race a loaded host)."""
    for _ in range(500):
        if all(conn.closed for idle in client._idle.values() for conn in idle):
            return
        await asyncio.sleep(0.01)
    raise AssertionError("the server's close never reached the pooled connection")


def test_server_closing_an_idle_connection_costs_no_request(run: Any) -> None:
    async def main() -> None:
        server = await ScriptedServer(lambda i, c, req: [response(), None]).start()  # close after each answer
        client = UpstreamClient()
        for _ in range(3):
            await wait_until_pooled_connections_closed(client)
            assert await post(client, server.url) == (200, OK_JSON)
        assert server.connections == 3
        await client.close()
        await server.close()

    run(main)


def test_close_wakes_a_reader_waiting_for_the_next_chunk(run: Any) -> None:
    async def main() -> None:
        server = await ScriptedServer(lambda i, c, req: [
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n2\r\nhi\r\n", 10.0]).start()
        client = UpstreamClient()
        res = await client.request("POST", server.url, "/s", b"{}", Timeouts(1.0, 30.0, idle_s=30.0))
        got: list[bytes] = []

        async def consume() -> None:
            async for piece in res.chunks():
                got.append(piece)

        reader = asyncio.create_task(consume())
        await asyncio.sleep(0.1)
        res.close()  # what the gateway does when its client disconnects mid-stream
        with pytest.raises(UpstreamProtocolError, match="aborted"):
            await asyncio.wait_for(reader, 2)
        assert got == [b"hi"]
        await client.close()
        await server.close()

    run(main)


def test_cancelled_exchange_drops_its_connection(run: Any) -> None:
    async def main() -> None:
        server = await ScriptedServer(lambda i, c, req: [0.5, response()] if i == 0 else [response()]).start()
        client = UpstreamClient()
        task = asyncio.create_task(post(client, server.url))
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert client.idle_connections() == 0
        # the late answer of the cancelled exchange must never be read as the next request's answer
        assert await post(client, server.url, body=b'{"second": 1}') == (200, OK_JSON)
        assert server.connections == 2
        await client.close()
        await server.close()

    run(main)


def test_slow_reader_pauses_the_socket_instead_of_buffering_everything(run: Any) -> None:
    async def main() -> None:
        piece = b"x" * 65536
        total = 64  # 4 MiB in all, more than the client buffers before pausing
        actions: list[Action] = [b"HTTP/1.1 200 OK\r\ncontent-length: %d\r\n\r\n" % (len(piece) * total)]
        actions += [piece] * total
        server = await ScriptedServer(lambda i, c, req: actions).start()
        client = UpstreamClient()
        res = await client.request("POST", server.url, "/big", b"{}", Timeouts(1.0, 30.0, idle_s=5.0))
        chunks = res.chunks()
        size = len(await anext(chunks))
        await asyncio.sleep(0.5)  # a slow consumer: the server keeps writing meanwhile
        buffered = res._conn.buffered
        assert buffered < len(piece) * total - size  # reading paused well before the whole body was held
        async for chunk in chunks:
            size += len(chunk)
        res.release()
        assert size == len(piece) * total  # and resumed: nothing lost
        await client.close()
        await server.close()

    run(main)


def test_large_plain_body_is_read_whole(run: Any) -> None:
    """A non-streamed answer bigger than the stream pause threshold (embeddings of many inputs) is not paused."""

    async def main() -> None:
        body = b"[" + b"0.123456789," * 400_000 + b"0]"  # ~4.8 MB
        server = await ScriptedServer(lambda i, c, req: [response(body)]).start()
        client = UpstreamClient()
        assert await post(client, server.url, Timeouts(connect_s=1.0, total_s=10.0)) == (200, body)
        await client.close()
        await server.close()

    run(main)


def _self_signed(tmp: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context, client context trusting only this certificate), generated at runtime."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp / "cert.pem", tmp / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_path, key_path)
    client = ssl.create_default_context(cafile=str(cert_path))
    return server, client


def test_https_backends_verify_certificates(run: Any, tmp_path: Path) -> None:
    server_ctx, trusting = _self_signed(tmp_path)

    async def main() -> None:
        server = await ScriptedServer(lambda i, c, req: [response()]).start(tls=server_ctx)
        url = f"https://localhost:{server.port}"
        default = UpstreamClient()  # the system trust store: a self-signed certificate is refused
        with pytest.raises(UpstreamConnectError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            await post(default, url)
        client = UpstreamClient(tls=trusting)
        assert await post(client, url) == (200, OK_JSON)
        assert await post(client, url) == (200, OK_JSON)
        assert server.connections == 1  # one kept-alive TLS connection (the refused handshake never got this far)
        assert server.requests[0].split(b"\r\n")[1] == f"host: localhost:{server.port}".encode()
        await client.close()
        await server.close()

    run(main)

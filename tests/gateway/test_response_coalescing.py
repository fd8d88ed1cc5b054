"""The gateway's HTTP server sends a response's headers and body in one write (one send() on the socket)."""

from __future__ import annotations

import asyncio
import socket

from llm_gateway.server import _HeaderCoalescingTransport

HEADERS = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n"


class RecordingTransport:
    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))

    def writelines(self, chunks: tuple[bytes, ...]) -> None:
        self.writes.append(b"".join(chunks))

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed


async def test_headers_and_body_leave_in_one_write() -> None:
    inner = RecordingTransport()
    transport = _HeaderCoalescingTransport(inner)  # type: ignore[arg-type]
    transport.write(HEADERS)
    assert inner.writes == []
    transport.write(b"{}")
    assert inner.writes == [HEADERS + b"{}"]
    await asyncio.sleep(0)
    assert inner.writes == [HEADERS + b"{}"]  # the end-of-step flush finds nothing left to write


async def test_large_body_follows_the_headers_in_order() -> None:
    inner = RecordingTransport()
    transport = _HeaderCoalescingTransport(inner)  # type: ignore[arg-type]
    body = b"x" * 200_000
    transport.write(HEADERS)
    transport.write(body)
    assert inner.writes == [HEADERS + body]


async def test_headers_alone_are_written_when_the_loop_step_ends() -> None:
    inner = RecordingTransport()
    transport = _HeaderCoalescingTransport(inner)  # type: ignore[arg-type]
    transport.write(HEADERS.replace(b"content-length: 2", b"transfer-encoding: chunked"))
    assert inner.writes == []
    await asyncio.sleep(0)
    assert len(inner.writes) == 1 and inner.writes[0].startswith(b"HTTP/1.1 200 OK\r\n")
    transport.write(b"5\r\nhello\r\n")
    assert inner.writes[1] == b"5\r\nhello\r\n"


async def test_close_writes_held_headers_first_and_other_calls_reach_the_transport() -> None:
    inner = RecordingTransport()
    transport = _HeaderCoalescingTransport(inner)  # type: ignore[arg-type]
    transport.write(HEADERS)
    transport.close()
    assert inner.writes == [HEADERS] and inner.closed
    assert transport.is_closing() is True


async def test_a_real_socket_receives_a_whole_response() -> None:
    loop = asyncio.get_running_loop()
    server_sock, client_sock = socket.socketpair()
    client_sock.setblocking(False)
    received = bytearray()
    transport, _ = await loop.connect_accepted_socket(asyncio.Protocol, server_sock)
    try:
        coalescing = _HeaderCoalescingTransport(transport)  # type: ignore[arg-type]
        coalescing.write(HEADERS)
        coalescing.write(b"{}")
        while len(received) < len(HEADERS) + 2:
            received += await loop.sock_recv(client_sock, 4096)
        assert bytes(received) == HEADERS + b"{}"
    finally:
        transport.close()
        client_sock.close()

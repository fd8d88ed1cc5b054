"""Tiny pure-ASGI helpers: read a bounded body, write JSON and OpenAI-format errors, read headers.

Every response the gateway writes itself carries ``SECURITY_HEADERS``.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import asyncpg
import orjson

from llm_gateway.errors import BodyTooLarge, GatewayError, ServiceUnavailable

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

SECURITY_HEADERS: Headers = [
    (b"x-content-type-options", b"nosniff"),
    (b"cache-control", b"no-store"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
]
JSON_CONTENT_TYPE = (b"content-type", b"application/json")


class ClientDisconnected(Exception):
    """The client went away while we were still reading its request."""


async def read_body(receive: Receive, limit: int) -> bytes:
    """The whole request body; ``BodyTooLarge`` as soon as it passes ``limit`` bytes (never buffers more)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected()
        chunk = message.get("body", b"")
        if chunk:
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge(f"request body exceeds the limit of {limit} bytes", param="body")
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


async def send_bytes(
    send: Send, status: int, body: bytes, headers: Headers | None = None,
    content_type: tuple[bytes, bytes] = JSON_CONTENT_TYPE,
) -> None:
    raw_headers = [content_type, (b"content-length", str(len(body)).encode()), *SECURITY_HEADERS]
    if headers:
        raw_headers.extend(headers)
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": body})


async def send_json(send: Send, status: int, body: object, headers: Headers | None = None) -> None:
    await send_bytes(send, status, orjson.dumps(body), headers)


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


async def send_error(
    send: Send,
    status: int,
    message: str,
    type: str,
    param: str | None = None,
    code: str | None = None,
    headers: Headers | None = None,
) -> None:
    await send_json(send, status, error_body(message, type, param, code), headers)


def header(scope: Scope, name: bytes) -> bytes | None:
    """First value of a request header; ``name`` must be lower-case (ASGI lower-cases header names)."""
    for key, value in scope["headers"]:
        if key == name:
            return bytes(value)
    return None


# What a lost or unreachable PostgreSQL raises (as opposed to a bad query, which is a bug and answers 500).
DATABASE_UNREACHABLE: tuple[type[BaseException], ...] = (
    OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError, asyncpg.exceptions.OperatorInterventionError,
    asyncpg.InternalClientError, TimeoutError,
)


async def answer_json_api(
    send: Send,
    answer: Callable[[], Awaitable[tuple[int, object]]],
    *,
    api: str,
    unavailable: str,
    log: logging.Logger,
    request: str,
) -> None:
    """Send `answer()`'s `(status, body)` as JSON, or the error it ends in, for the database-backed JSON APIs.

    A `GatewayError` is answered as itself; an unreachable database as 503 `<unavailable> (<exception>); retry
    shortly`; anything else is logged (`<api> request failed: <request>`) and answered 500 without details.
    """
    try:
        status, body = await answer()
    except GatewayError as exc:
        await send_error(send, exc.status, exc.message, exc.type, exc.param, exc.code, exc.headers)
        return
    except DATABASE_UNREACHABLE as exc:
        error = ServiceUnavailable(f"{unavailable} ({type(exc).__name__}); retry shortly")
        await send_error(send, error.status, error.message, error.type, None, error.code)
        return
    except Exception:
        log.exception("%s request failed: %s", api, request)
        await send_error(send, 500, f"internal error in the {api} API; see the gateway log", "server_error")
        return
    await send_json(send, status, body)

"""The aiohttp client the gateway uses to talk to model servers (one session, keep-alive pool)."""

from __future__ import annotations

import aiohttp

# Errors where the request certainly did not reach the model server (or the server went away before
# answering): safe to retry on another backend.
RETRYABLE_ERRORS: tuple[type[BaseException], ...] = (
    aiohttp.ClientConnectorError,
    aiohttp.ServerDisconnectedError,
    aiohttp.ConnectionTimeoutError,
    aiohttp.ClientOSError,
)
RETRYABLE_STATUSES = frozenset({502, 503, 504})


def create_session() -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(
        limit=0,  # the gateway's own limits bound concurrency; no second, hidden queue here
        keepalive_timeout=30,
        ttl_dns_cache=10,  # Kubernetes service IPs change on rollout: do not cache DNS for long
    )
    return aiohttp.ClientSession(
        connector=connector,
        # no Accept-Encoding: model servers answer uncompressed and we read usage from the body
        skip_auto_headers=("Accept-Encoding", "User-Agent"),
        timeout=aiohttp.ClientTimeout(total=None),
    )


def request_timeout(total_s: float, connect_s: float, idle_s: float | None) -> aiohttp.ClientTimeout:
    """``idle_s`` bounds the gap between two reads (streams); ``total_s`` the whole exchange."""
    return aiohttp.ClientTimeout(total=total_s, sock_connect=connect_s, sock_read=idle_s)

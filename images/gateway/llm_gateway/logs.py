"""Structured JSON logs (one line per request) and PII redaction of everything logged.

Prompt and completion bodies are never logged unless ``GATEWAY_LOG_PROMPTS=true``; even then, and for every
other string that may carry user input (error messages, paths, user agents), ``redact`` replaces e-mail
addresses, phone numbers, US SSNs, credit-card numbers (Luhn-checked), and IPv4/IPv6 addresses.
Identifiers the gateway itself generates (request id, key id, org id, backend URL) are logged as they are.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import os
import re
import secrets
import sys
import time
from typing import IO, Any

import orjson

_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# 13-19 digits, optionally grouped by single spaces or dashes; confirmed by the Luhn checksum.
_CARD_CANDIDATE = re.compile(r"(?<![\d-])\d(?:[ -]?\d){12,18}(?![\d-])")
_SSN = re.compile(r"(?<!\d)(?!000|666|9\d\d)\d{3}-(?!00)\d{2}-(?!0000)\d{4}(?!\d)")
_PHONE = re.compile(
    r"(?<![\w+])(?:\+?1[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[\s.-])\d{3}[\s.-]\d{4}(?!\w)"  # US formats
    r"|(?<![\w+])\+\d{1,3}(?:[\s.-]?\d){6,14}(?!\w)"  # international E.164-like, needs the +
    r"|(?<![\w+-])\d{10}(?![\w-])"  # 10 bare digits (US number without separators)
)
_IPV4 = re.compile(r"(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?![\d.])")
_IPV6_CANDIDATE = re.compile(r"(?<![\w:.])(?:[0-9A-Fa-f]{0,4}:){2,7}(?:[0-9A-Fa-f]{1,4}|(?:\d{1,3}\.){3}\d{1,3})?(?![\w:])")

_REQUEST_ID_OK = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if index % 2 == 1:
            value *= 2
            if value > 9:
                value -= 9
        total += value
    return total % 10 == 0


def _card(match: re.Match[str]) -> str:
    digits = re.sub(r"[ -]", "", match.group(0))
    return "[CARD]" if 13 <= len(digits) <= 19 and luhn_valid(digits) else match.group(0)


def _ipv6(match: re.Match[str]) -> str:
    text = match.group(0)
    if text.count(":") < 2:
        return text
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return text
    return "[IP]"


def redact(text: str) -> str:
    """``text`` with PII replaced by ``[EMAIL]``, ``[CARD]``, ``[SSN]``, ``[PHONE]``, ``[IP]``."""
    if not text:
        return text
    text = _EMAIL.sub("[EMAIL]", text)
    if any(char.isdigit() for char in text):
        text = _CARD_CANDIDATE.sub(_card, text)
        text = _SSN.sub("[SSN]", text)
        text = _IPV4.sub("[IP]", text)
        text = _PHONE.sub("[PHONE]", text)
    if ":" in text:
        text = _IPV6_CANDIDATE.sub(_ipv6, text)
    return text


def redact_value(value: Any) -> Any:
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_value(item) for item in value]
    return value


class _RequestIds:
    """``req_`` + 32 hex digits: a random 80-bit prefix per process and a 48-bit counter. Unique across replicas
    like a UUID4 (usage rows and in-flight slots are keyed by it), without a getrandom() call and a UUID object on
    every request. A forked child draws its own prefix, so parent and child never hand out the same id."""

    def __init__(self) -> None:
        self.reseed()
        os.register_at_fork(after_in_child=self.reseed)

    def reseed(self) -> None:
        self.prefix = "req_" + secrets.token_hex(10)
        self.counter = itertools.count()

    def __call__(self) -> str:
        return f"{self.prefix}{next(self.counter) & 0xFFFFFFFFFFFF:012x}"


new_request_id = _RequestIds()


def client_request_id(raw: bytes | None) -> str | None:
    """The client's ``x-request-id`` if it is short and plain (safe to echo and log), else None."""
    if raw:
        try:
            candidate = raw.decode("ascii")
        except UnicodeDecodeError:
            return None
        if _REQUEST_ID_OK.match(candidate):
            return candidate
    return None


# Fields whose values the gateway generates itself (never user input): logged without redaction.
_TRUSTED_FIELDS = frozenset({
    "ts", "level", "event", "request_id", "org_id", "key_id", "model", "backend", "status", "method",
    "latency_ms", "ttft_ms", "prompt_tokens", "completion_tokens", "cache", "stream", "attempts", "endpoint",
    "error_type", "reason", "degraded", "fallback_from",
})


class JsonLogger:
    """One JSON object per line. Inside an event loop, lines are buffered and written together at most
    ``flush_interval_s`` later (one write instead of one per request; each syscall is costly on the hot path);
    ``flush()`` runs at shutdown. Outside a loop every line is written at once."""

    def __init__(self, stream: IO[str] | None = None, level: str = "info", flush_interval_s: float = 0.05) -> None:
        self._stream = stream or sys.stdout
        self._levels = {"debug": 10, "info": 20, "warning": 30, "error": 40}
        self._min = self._levels[level]
        self._flush_interval_s = flush_interval_s
        self._buffer: list[str] = []
        self._flush_scheduled = False

    def log(self, level: str, event: str, **fields: Any) -> None:
        if self._levels[level] < self._min:
            return
        record: dict[str, Any] = {"ts": round(time.time(), 3), "level": level, "event": event}
        for key, value in fields.items():
            if value is None:
                continue
            record[key] = value if key in _TRUSTED_FIELDS else redact_value(value)
        self._buffer.append(orjson.dumps(record).decode())
        if self._flush_scheduled:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        self._flush_scheduled = True
        loop.call_later(self._flush_interval_s, self.flush)

    def flush(self) -> None:
        self._flush_scheduled = False
        if not self._buffer:
            return
        lines, self._buffer = self._buffer, []
        try:
            self._stream.write("\n".join(lines) + "\n")
            self._stream.flush()
        except (OSError, ValueError):
            pass  # a closed or broken log stream must never fail a request

    def info(self, event: str, **fields: Any) -> None:
        self.log("info", event, **fields)

    def warning(self, event: str, **fields: Any) -> None:
        self.log("warning", event, **fields)

    def error(self, event: str, **fields: Any) -> None:
        self.log("error", event, **fields)

"""Physical-name helpers for AWS resources whose names have short limits."""

from __future__ import annotations

import hashlib

# Pulumi auto-naming appends "-" and 7 random characters to the resource name.
AUTONAME_SUFFIX = 8


def short_name(name: str, limit: int) -> str:
    """`name` cut to `limit` characters with a stable hash suffix, so an auto-named physical name stays in bounds."""
    if len(name) <= limit:
        return name
    return f"{name[: limit - 7].rstrip('-')}-{hashlib.sha256(name.encode()).hexdigest()[:6]}"

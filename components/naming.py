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


# The direction words of AWS region names and their letters in AWS's own short region codes (use1, apne1, euc1):
# the codes AWS uses in AZ ids (`use1-az1`) and in service endpoints such as ElastiCache's.
_DIRECTIONS = {"north": "n", "south": "s", "east": "e", "west": "w", "central": "c",
               "northeast": "ne", "southeast": "se", "northwest": "nw", "southwest": "sw"}


def region_short_code(region: str) -> str:
    """`ap-northeast-1` -> `apne1`, `us-east-1` -> `use1`: a region in 4-6 characters, for names with tight limits."""
    area, *words, number = region.split("-")
    return area + "".join(_DIRECTIONS.get(w, w[:1]) for w in words) + number

"""Pieces every typed config of this repository shares: one-line validation errors and reading Pulumi config.

Kept apart from `infra/config.py` so a small program (the bootstrap) can use them without the platform's model.
"""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

REGION_PATTERN = r"^[a-z]{2}(-gov)?-[a-z]+-\d$"
# CloudWatch Logs accepts only these retention periods.
LOG_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653)


class Strict(BaseModel):
    """Base of every config section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def check_log_retention(value: int) -> int:
    """A pydantic field check: the value must be a CloudWatch Logs retention period."""
    if value not in LOG_RETENTION_DAYS:
        raise ValueError(f"allowed: {', '.join(map(str, LOG_RETENTION_DAYS))}")
    return value


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def format_validation_error(err: ValidationError, source: str, project: str) -> str:
    """One line: `<source>: <project>:<key>: got <value>; <what is allowed>` for the first error (+N more)."""
    first = err.errors()[0]
    key = _loc(tuple(first["loc"]))
    msg = str(first["msg"]).removeprefix("Value error, ")
    given = first.get("input")
    more = f" (+{err.error_count() - 1} more)" if err.error_count() > 1 else ""
    where = f"{project}:{key}" if key else project
    # A whole-config check names its key at the start of its message ("regions: ..."): make that the key.
    named = re.match(r"^([\w.\[\]-]+): (.*)$", msg) if not key else None
    if named:
        where, msg = f"{project}:{named.group(1)}", named.group(2)
    if first["type"] == "missing":
        detail = "is required"
    elif msg.startswith("got "):  # the validator already showed the value, in its own words
        detail = msg
    elif isinstance(given, (str, int, float, bool)) or (isinstance(given, list) and len(json.dumps(given)) <= 80):
        detail = f"got {json.dumps(given)}; {msg[0].lower() + msg[1:]}"
    else:  # a whole section: the message itself names the field and value
        detail = msg
    return f"{source}: {where}: {detail}{more}"


def project_config_from_pulumi(project: str) -> dict[str, Any]:
    """Every `<project>:*` key the engine handed to this program, JSON-decoded where it is an object."""
    import pulumi.runtime.config as runtime_config

    merged: dict[str, Any] = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    raw: dict[str, Any] = {}
    for full_key, value in merged.items():
        key_project, _, key = full_key.partition(":")
        if key_project != project:
            continue
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass  # a plain string value
        raw[key] = value
    return raw

"""Helpers for the workload tests: rendered Kubernetes objects, CRD-schema validation, PromQL metric names."""

from __future__ import annotations

import copy
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema

from components.kube import is_kubernetes_object, manifest_from_inputs
from infra.render import Rendering, unwrap_secrets

CRD_DIR = Path(__file__).resolve().parent / "crds"
CUSTOM_GROUPS = ("keda.sh/", "monitoring.coreos.com/", "external-secrets.io/", "elbv2.k8s.aws/")


def kubernetes_objects(rendering: Rendering) -> list[dict[str, Any]]:
    """Every plain Kubernetes object the rendering applies, with secrets unwrapped and numbers as the API takes them."""
    return [_ints(unwrap_secrets(manifest_from_inputs(r.inputs))) for r in rendering.resources if r.custom and is_kubernetes_object(r.type)]


def _ints(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_ints(v) for v in value]
    return value


def is_custom(obj: dict[str, Any]) -> bool:
    return str(obj["apiVersion"]).startswith(CUSTOM_GROUPS)


def _strict(schema: Any) -> Any:
    """CRD structural schema → JSON Schema that rejects unknown fields (like `kubectl apply --validate=strict`)."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items() if not k.startswith("x-kubernetes-")}
    if isinstance(out.get("pattern"), str):
        out["pattern"] = out["pattern"].replace("(?i)", "")  # Go's inline flag; Python only allows it at the start
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if schema.get("type") == "object" and "properties" in schema and "additionalProperties" not in schema \
            and not schema.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


@lru_cache(maxsize=None)
def crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    group, version = api_version.split("/")
    path = CRD_DIR / f"{group}_{kind}_{version}.json"
    if not path.is_file():
        raise LookupError(f"no vendored CRD schema for {api_version} {kind} ({path.name})")
    doc = json.loads(path.read_text())
    schema = _strict(copy.deepcopy(doc["openAPIV3Schema"]))
    schema.setdefault("properties", {})["metadata"] = {"type": "object"}
    return schema


def validate_custom(obj: dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError when the object does not fit its CRD's published schema."""
    jsonschema.Draft7Validator(crd_schema(obj["apiVersion"], obj["kind"])).validate(obj)


# --- PromQL ------------------------------------------------------------------------------------------------------

PROMQL_WORDS = {
    "sum", "avg", "min", "max", "count", "rate", "irate", "increase", "histogram_quantile", "clamp_min", "clamp_max",
    "by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool", "offset",
    "label_values", "vector", "abs", "topk", "bottomk", "le", "time", "delta", "deriv", "avg_over_time", "max_over_time",
}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (label matchers, strings, ranges and grouping clauses removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"(?<![\w:])\d+(\.\d+)?([eE][-+]?\d+)?(?![\w:])", " ", text)  # number literals such as 1e-9
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        token = match.group(0)
        following = text[match.end():].lstrip()[:1]
        if token in PROMQL_WORDS or following == "(":
            continue
        names.add(token)
    return names


def family(name: str, known: set[str]) -> str:
    """Histogram series (`_bucket`, `_sum`, `_count`) map to their family name when the family is known."""
    for suffix in HISTOGRAM_SUFFIXES:
        if name.endswith(suffix) and name.removesuffix(suffix) in known:
            return name.removesuffix(suffix)
    return name

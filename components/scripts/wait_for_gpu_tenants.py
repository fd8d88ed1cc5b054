"""Init container of GPU-sharing model servers: start vLLM only once the older tenants of this node are Ready.

vLLM sizes its KV cache from whole-device free-memory deltas taken while it profiles, so memory another process
allocates meanwhile is charged to it (vllm-project/vllm#55827): two vLLM servers starting together on one
time-sliced GPU shrink each other's cache or fail with "No available memory for the cache blocks". Started one
after the other, each sees the other's memory as already taken and sizes itself correctly.

Order: a pod waits for every GPU-sharing pod on its node that was created before it (name breaks ties) and is
neither Ready nor finished. The wait is bounded (`WAIT_BOUND_SECONDS`): a co-tenant stuck in a crash loop must not
keep this one from ever starting. Standard library only (runs in the vLLM image); reads pods of its own namespace
through the API server with the pod's projected service-account token.
"""

from __future__ import annotations

import json
import os
import ssl
import sys
import time
import urllib.parse
import urllib.request
from typing import Any

TOKEN_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
POLL_SECONDS = 5


def is_ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)


def is_gone(pod: dict[str, Any]) -> bool:
    phase = (pod.get("status") or {}).get("phase")
    return phase in ("Succeeded", "Failed") or bool(pod["metadata"].get("deletionTimestamp"))


def blocking_tenants(pods: list[dict[str, Any]], me: str) -> list[str]:
    """Names of the older co-tenants this pod must wait for (`pods`: the sharing pods on this node)."""
    mine = next((p for p in pods if p["metadata"]["name"] == me), None)
    if mine is None:
        return []  # not listed (yet): nothing to order against
    def order(p: dict[str, Any]) -> tuple[str, str]:
        return (p["metadata"]["creationTimestamp"], p["metadata"]["name"])  # RFC 3339 UTC sorts as text
    return sorted(p["metadata"]["name"] for p in pods
                  if order(p) < order(mine) and not is_ready(p) and not is_gone(p))


def list_pods(namespace: str, node: str, selector: str) -> list[dict[str, Any]]:
    host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ.get("KUBERNETES_SERVICE_PORT", "443")
    query = urllib.parse.urlencode({"labelSelector": selector, "fieldSelector": f"spec.nodeName={node}"})
    request = urllib.request.Request(f"https://{host}:{port}/api/v1/namespaces/{namespace}/pods?{query}")
    with open(f"{TOKEN_DIR}/token") as token:
        request.add_header("Authorization", f"Bearer {token.read().strip()}")
    context = ssl.create_default_context(cafile=f"{TOKEN_DIR}/ca.crt")
    with urllib.request.urlopen(request, context=context, timeout=10) as response:
        return list(json.load(response).get("items") or [])


def main() -> int:
    me, namespace, node = os.environ["POD_NAME"], os.environ["POD_NAMESPACE"], os.environ["NODE_NAME"]
    selector = os.environ["TENANT_SELECTOR"]
    deadline = time.monotonic() + int(os.environ["WAIT_BOUND_SECONDS"])
    while True:
        try:
            waiting_for = blocking_tenants(list_pods(namespace, node, selector), me)
        except Exception as err:  # noqa: BLE001 - the API may be briefly unreachable; retry until the bound
            waiting_for = [f"(pod list failed: {err})"]
        if not waiting_for:
            print(f"{me}: no older GPU co-tenant is starting on {node}; starting vLLM", flush=True)
            return 0
        if time.monotonic() >= deadline:
            print(f"{me}: still waiting for {', '.join(waiting_for)} at the bound; starting vLLM anyway", flush=True)
            return 0
        print(f"{me}: waiting for {', '.join(waiting_for)} on {node} to become Ready", flush=True)
        time.sleep(POLL_SECONDS)


if __name__ == "__main__":
    sys.exit(main())

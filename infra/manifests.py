"""`python -m infra.cli manifests <stack> --out DIR`: every Kubernetes object a stack applies, as YAML files.

The objects come from the same offline rendering as `plan` (the real program under Pulumi mocks), so what is
written is exactly what `pulumi up` would send, with deploy-time values (ARNs, endpoints) filled by the mocks.
Layout: `DIR/<cluster>/<namespace>/<kind>-<name>.yaml` for plain objects (`_cluster/` for cluster-scoped ones)
and `DIR/<cluster>/helm/<release>.yaml` for Helm releases (chart, version, repository, namespace, values).
Secret values never appear: they are written as `[secret]`.
"""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path
from typing import Any

import yaml

from components.kube import is_kubernetes_object, manifest_from_inputs
from infra.render import SECRET_MARK, RenderedResource, Rendering, mask_secrets, unwrap_secrets

HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
HEADER = "# Rendered offline by `python -m infra.cli manifests` (Pulumi mocks; ARNs/endpoints are mock values).\n"


def _cluster_of(resource: RenderedResource, rendering: Rendering) -> str:
    """The Kubernetes provider (one per cluster) the object is applied with, as a directory name."""
    if resource.provider:
        urn = resource.provider.rsplit("::", 1)[0]
        return _safe(urn.rsplit("::", 1)[-1])
    return "default"


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "unnamed"


def _plain(value: Any) -> Any:
    """Floats that are whole numbers back to ints (the engine sends every number as a float)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def kubernetes_objects(rendering: Rendering) -> list[tuple[RenderedResource, dict[str, Any]]]:
    """(resource, object) for every plain Kubernetes object of the rendering, secrets masked."""
    out = []
    for r in rendering.resources:
        if r.custom and is_kubernetes_object(r.type):
            obj = manifest_from_inputs(r.inputs)
            if obj.get("kind") == "Secret":
                # Keep the keys (a reviewer needs them), never the values: every value is masked, secret-marked or not.
                obj = {**obj, **{f: {k: SECRET_MARK for k in (unwrap_secrets(obj[f]) or {})} for f in ("data", "stringData") if f in obj}}
            out.append((r, _plain(mask_secrets(obj))))
    return out


def helm_releases(rendering: Rendering) -> list[tuple[RenderedResource, dict[str, Any]]]:
    out = []
    for r in rendering.of_type(HELM_RELEASE):
        i = r.inputs
        out.append((r, _plain(mask_secrets({
            "releaseName": i.get("name", r.name),
            "chart": i.get("chart"),
            "version": i.get("version"),
            "repository": (i.get("repositoryOpts") or {}).get("repo") or "(OCI: see chart)",
            "namespace": i.get("namespace"),
            "values": i.get("values") or {},
        }))))
    return out


def write_manifests(rendering: Rendering, out_dir: Path) -> list[Path]:
    """Write every object and release; returns the files written (sorted)."""
    written: list[Path] = []
    for resource, obj in kubernetes_objects(rendering):
        meta = obj.get("metadata") or {}
        ns = meta.get("namespace") or "_cluster"
        path = out_dir / _cluster_of(resource, rendering) / _safe(ns) / f"{_safe(obj['kind'].lower())}-{_safe(meta.get('name', resource.name))}.yaml"
        written.append(_write(path, obj))
    for resource, release in helm_releases(rendering):
        path = out_dir / _cluster_of(resource, rendering) / "helm" / f"{_safe(str(release['releaseName']))}.yaml"
        written.append(_write(path, release))
    return sorted(written)


def _write(path: Path, document: dict[str, Any]) -> Path:
    if path.exists():
        raise FileExistsError(f"{path}: two rendered objects map to the same file")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(HEADER + yaml.safe_dump(document, sort_keys=False, width=120))
    return path


def cmd_manifests(args: argparse.Namespace) -> int:
    from infra.cli import render_stack  # the CLI's validated render (config errors are one line)

    rendering = render_stack(args.stack)
    out_dir = Path(args.out)
    if out_dir.exists():
        if not args.force and any(out_dir.iterdir()):
            print(f"error: --out {out_dir}: directory is not empty; use --force to replace its contents")
            return 2
        shutil.rmtree(out_dir)
    files = write_manifests(rendering, out_dir)
    objects = sum(1 for f in files if "/helm/" not in f.as_posix())
    print(f"{args.stack}: wrote {objects} Kubernetes objects and {len(files) - objects} Helm releases to {out_dir}")
    return 0


def register(sub: Any) -> None:
    """Add `manifests <stack> --out DIR` to the CLI's subcommands."""
    parser = sub.add_parser("manifests", help="write every Kubernetes object the stack applies as YAML (offline)")
    parser.add_argument("stack", help="stack name")
    parser.add_argument("--out", required=True, help="directory to write into (created; must be empty unless --force)")
    parser.add_argument("--force", action="store_true", help="replace the contents of a non-empty --out directory")
    parser.set_defaults(func=cmd_manifests)

"""Every version this release pins, where it was verified, and when its support window ends.

One table, read by config validation (the EKS versions a stack may use), the cost estimate (extended-support
pricing), the README's versions table and the Freshness guard (tests/test_pins.py), which fails once a pinned
version's window has ended and checks that every version used by a rendered stack is listed here.

Sources were read on 2026-12-03 (see each pin's `source`). To bump a pin: read the new release from that source,
change it here and wherever `used_in` says, and run the tests (flags, metric names and chart values keys are
checked against the vendored data of the new version: infra/vllm_cli/, tests/data/chart_values/).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date
from functools import lru_cache
from pathlib import Path
from typing import Literal

PinKind = Literal["vllm", "eks", "addon", "chart", "image"]
EKS_CALENDAR = "https://docs.aws.amazon.com/eks/latest/userguide/kubernetes-versions.html#kubernetes-release-calendar"


@dataclass(frozen=True)
class Pin:
    kind: PinKind
    name: str
    version: str
    source: str
    """Where the version was verified (release, chart repository index, AWS docs page)."""
    used_in: str
    """Where the version is written (each fact once; tests check the places agree)."""
    support_ends: date | None = None
    """End of the support window where the project publishes one; the Freshness guard fails after it."""


@dataclass(frozen=True)
class EksVersion:
    version: str
    released: date
    end_of_standard_support: date
    end_of_extended_support: date

    def support_on(self, day: date) -> Literal["standard", "extended", "ended"]:
        """EKS bills extended support from the start of the day standard support ends (UTC)."""
        if day < self.end_of_standard_support:
            return "standard"
        if day < self.end_of_extended_support:
            return "extended"
        return "ended"


# AWS EKS version calendar (EKS_CALENDAR). 1.33 and 1.34 rows are on that page; the 1.35 row (EKS release
# 2026-01-27) is the same calendar as mirrored by endoflife.date/amazon-eks; preflight re-reads all three from
# DescribeClusterVersions (`endOfStandardSupportDate`, `endOfExtendedSupportDate`) before a deploy.
EKS_VERSIONS: dict[str, EksVersion] = {
    "1.33": EksVersion("1.33", date(2025, 5, 29), date(2026, 7, 29), date(2027, 7, 29)),
    "1.34": EksVersion("1.34", date(2025, 10, 2), date(2026, 12, 2), date(2027, 12, 2)),
    "1.35": EksVersion("1.35", date(2026, 1, 27), date(2027, 3, 27), date(2028, 3, 27)),
}
# New stacks get the newest version in standard support; 1.36 is on EKS too but its calendar dates and a
# cluster-autoscaler chart for it were not verified, so it is not offered yet.
DEFAULT_EKS_VERSION = "1.35"

VLLM_VERSION = "0.34.0"
"""Upstream vLLM release of the model-server image (images/vllm/Dockerfile FROM vllm/vllm-openai:v<this>)."""

# Managed add-on versions for DEFAULT_EKS_VERSION (the stacks list them under cluster.addons).
ADDON_VERSIONS: dict[str, tuple[str, str]] = {
    "vpc-cni": ("v1.20.4-eksbuild.1", "AWS docs managing-vpc-cni (one build for every Kubernetes version); preflight DescribeAddonVersions"),
    "coredns": ("v1.14.3-eksbuild.3", "AWS docs managing-coredns, CoreDNS versions table, row 1.35"),
    "kube-proxy": ("v1.35.3-eksbuild.13", "AWS docs managing-kube-proxy, kube-proxy versions table, row 1.35"),
    "aws-ebs-csi-driver": ("v1.48.0-eksbuild.2", "AWS docs ebs-csi add-on (version-independent build); preflight DescribeAddonVersions"),
    "eks-pod-identity-agent": ("v1.3.8-eksbuild.2", "AWS docs pod-id-agent-setup (version-independent build); preflight DescribeAddonVersions"),
}

# Helm charts: (repository, version, source). infra/workload_config.py DEFAULT_CHARTS is built from this.
CHART_VERSIONS: dict[str, tuple[str, str, str]] = {
    "aws-load-balancer-controller": ("https://aws.github.io/eks-charts", "3.5.0",
                                     "aws/eks-charts gh-pages index.yaml (3.5.0, appVersion v3.5.0, 2026-08-03)"),
    "nvidia-device-plugin": ("https://nvidia.github.io/k8s-device-plugin", "0.20.0",
                             "NVIDIA/k8s-device-plugin gh-pages index.yaml (0.20.0, 2026-08-20)"),
    "dcgm-exporter": ("https://nvidia.github.io/dcgm-exporter/helm-charts", "4.8.2",
                      "NVIDIA/dcgm-exporter gh-pages helm-charts/index.yaml (4.8.2, 2026-05-05)"),
    "cluster-autoscaler": ("https://kubernetes.github.io/autoscaler", "9.59.0",
                           "kubernetes/autoscaler gh-pages index.yaml (9.59.0, appVersion 1.35.0, 2026-07-21)"),
    "metrics-server": ("https://kubernetes-sigs.github.io/metrics-server", "3.13.1",
                       "kubernetes-sigs/metrics-server gh-pages index.yaml (3.13.1, appVersion 0.8.1, 2026-06-11)"),
    "keda": ("https://kedacore.github.io/charts", "2.20.2", "kedacore/charts tag v2.20.2 keda/Chart.yaml"),
    "kube-prometheus-stack": ("https://prometheus-community.github.io/helm-charts", "88.5.3",
                              "prometheus-community/helm-charts tag kube-prometheus-stack-88.5.3"),
    "external-secrets": ("oci://ghcr.io/external-secrets/charts", "2.9.0",
                         "external-secrets/external-secrets gh-pages index.yaml and tag helm-chart-2.9.0"),
}

# cluster-autoscaler image per Kubernetes minor (components/cluster_addons.py AUTOSCALER_IMAGE_TAGS): the
# autoscaler supports only its own minor. Latest patch tags of kubernetes/autoscaler (cluster-autoscaler-1.3x.y).
AUTOSCALER_IMAGE_PINS: dict[str, str] = {"1.33": "v1.33.6", "1.34": "v1.34.5", "1.35": "v1.35.2"}

# Base images of our own Dockerfiles: (tag, source, end of support).
BASE_IMAGES: dict[str, tuple[str, str, date | None]] = {
    "vllm/vllm-openai": (f"v{VLLM_VERSION}", f"vLLM release {VLLM_VERSION} (PyPI vllm {VLLM_VERSION}, wheel built 2026-11-16); "
                                             "the project publishes vllm/vllm-openai:v<release> per release. Digest not verified "
                                             "here (no registry access): pinned by version tag", None),
    # images/gateway/Dockerfile (the gateway's own pin, listed so it cannot lapse unseen).
    "python": ("3.11.7-slim-bookworm", "Docker official python image; Python 3.11 end of life 2027-10 (PEP 664)", date(2027, 10, 1)),
}


def _pins() -> list[Pin]:
    pins = [Pin("vllm", "vllm", VLLM_VERSION, BASE_IMAGES["vllm/vllm-openai"][1],
                "images/vllm/Dockerfile FROM; stacks workloads.vllm_image.tag v<version>-<build>; infra/vllm_cli/v<version>.json")]
    pins += [Pin("eks", "kubernetes", v.version, EKS_CALENDAR, "stacks cluster.version; infra/config.py SUPPORTED_EKS_VERSIONS",
                 v.end_of_extended_support) for v in EKS_VERSIONS.values()]
    pins += [Pin("addon", name, version, source, "stacks cluster.addons", EKS_VERSIONS[DEFAULT_EKS_VERSION].end_of_extended_support)
             for name, (version, source) in ADDON_VERSIONS.items()]
    pins += [Pin("chart", name, version, source, "infra/workload_config.py DEFAULT_CHARTS") for name, (_, version, source) in CHART_VERSIONS.items()]
    pins += [Pin("image", "registry.k8s.io/autoscaling/cluster-autoscaler", tag, "kubernetes/autoscaler git tag cluster-autoscaler-" + tag[1:],
                 "components/cluster_addons.py AUTOSCALER_IMAGE_TAGS", EKS_VERSIONS[minor].end_of_extended_support)
             for minor, tag in AUTOSCALER_IMAGE_PINS.items()]
    pins += [Pin("image", name, tag, source, "images/*/Dockerfile FROM", ends) for name, (tag, source, ends) in BASE_IMAGES.items()]
    return pins


PINS: list[Pin] = _pins()


def pinned(kind: PinKind, name: str) -> set[str]:
    return {p.version for p in PINS if p.kind == kind and p.name == name}


def expired(day: date) -> list[Pin]:
    """Pins whose support window has ended on `day`."""
    return [p for p in PINS if p.support_ends is not None and day >= p.support_ends]


def eks_support(version: str, day: date) -> Literal["standard", "extended", "ended", "unknown"]:
    info = EKS_VERSIONS.get(version)
    return info.support_on(day) if info else "unknown"


@lru_cache(maxsize=None)
def vllm_cli(version: str = VLLM_VERSION) -> dict[str, object]:
    """vLLM's CLI flags, choices and metric names at `version` (vendored from its release; see the file's `source`)."""
    data: dict[str, object] = json.loads((Path(__file__).resolve().parent / "vllm_cli" / f"v{version}.json").read_text())
    return data


def vllm_exposed_metrics(version: str = VLLM_VERSION) -> set[str]:
    """Prometheus series names vLLM exposes: counters get `_total`, histograms `_bucket`/`_sum`/`_count`."""
    out: set[str] = set()
    metrics = vllm_cli(version)["metrics"]
    assert isinstance(metrics, dict)
    for name, kind in metrics.items():
        if kind == "counter":
            out.add(name.removesuffix("_total") + "_total")
        elif kind == "histogram":
            out |= {name, f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        else:
            out.add(name)
    return out


def versions_markdown() -> str:
    """README's versions table (tests/test_pins.py checks the README carries exactly this)."""
    rows = ["| What | Version | Verified from | Support ends |", "| --- | --- | --- | --- |"]
    for p in PINS:
        rows.append(f"| {p.kind}: {p.name} | {p.version} | {p.source} | {p.support_ends.isoformat() if p.support_ends else '-'} |")
    return "\n".join(rows)

"""Guard "Freshness" and pin coverage: infra/pins.py is the one table of pinned versions.

- No pinned version may be past the end of its support window today (the suite fails the day one lapses).
- Every version a rendered stack uses (EKS version, managed add-ons, Helm charts, container images, chart image tags)
  and every Dockerfile base image is in the table, so a new pin cannot skip it.
- Every Helm values key we set exists in that chart's values.yaml at the pinned version (key names vendored from the
  chart repository at the release tag into tests/data/chart_values/).
- README's versions table is the table.
"""

from __future__ import annotations

import json
import re
from datetime import date
from pathlib import Path
from typing import Any, Callable, get_args

import pytest

from components.cluster_addons import AUTOSCALER_IMAGE_TAGS
from infra.config import SUPPORTED_EKS_VERSIONS
from infra.pins import (
    ADDON_VERSIONS, AUTOSCALER_IMAGE_PINS, BASE_IMAGES, CHART_VERSIONS, DEFAULT_EKS_VERSION, EKS_VERSIONS, PINS, VLLM_VERSION,
    eks_support, expired, pinned, versions_markdown,
)
from infra.render import Rendering, read_stack_config
from infra.workload_config import DEFAULT_CHARTS, ChartName
from tests.workloads.k8s_support import kubernetes_objects

ROOT = Path(__file__).resolve().parents[1]
STACKS = ("dev", "small", "prod", "global")
CHART_VALUES = ROOT / "tests" / "data" / "chart_values"
Rendered = Callable[[str], Rendering]
# Our own images: built from images/<name>/Dockerfile; their base images are pins (BASE_IMAGES).
OWN_IMAGES = {"llm-platform/gateway", "llm-platform/vllm"}
# Chart values that are maps of the user's choosing (flags, annotations), documented as such by the chart.
FREE_FORM_VALUES = {"cluster-autoscaler": ("extraArgs",)}


def test_freshness_no_pinned_version_is_past_its_support_window() -> None:
    lapsed = [f"{p.kind} {p.name} {p.version} (support ended {p.support_ends}; source {p.source})" for p in expired(date.today())]
    assert not lapsed, "bump these pins (infra/pins.py): " + "; ".join(lapsed)


def test_freshness_check_fires_when_a_window_ends() -> None:
    end = EKS_VERSIONS[DEFAULT_EKS_VERSION].end_of_extended_support
    assert not [p for p in expired(date.fromordinal(end.toordinal() - 1)) if p.version == DEFAULT_EKS_VERSION]
    assert [p for p in expired(end) if p.kind == "eks" and p.version == DEFAULT_EKS_VERSION]


def test_default_eks_version_is_in_standard_support_and_offered() -> None:
    assert DEFAULT_EKS_VERSION in SUPPORTED_EKS_VERSIONS == tuple(EKS_VERSIONS)
    assert eks_support(DEFAULT_EKS_VERSION, date.today()) == "standard"
    assert eks_support("1.34", date(2026, 12, 3)) == "extended" and eks_support("1.31", date(2026, 12, 3)) == "unknown"


def test_every_stack_uses_the_default_eks_version_and_its_pinned_addons() -> None:
    for stack in STACKS:
        cluster = read_stack_config(stack)["llm-platform:cluster"]
        assert cluster["version"] == DEFAULT_EKS_VERSION, stack
        assert cluster["addons"] == {name: version for name, (version, _) in ADDON_VERSIONS.items()}, stack


def test_charts_and_autoscaler_images_come_from_the_table() -> None:
    assert set(get_args(ChartName)) == set(CHART_VERSIONS) == set(DEFAULT_CHARTS)
    assert {n: (c.repo, c.version) for n, c in DEFAULT_CHARTS.items()} == {n: (r, v) for n, (r, v, _) in CHART_VERSIONS.items()}
    assert AUTOSCALER_IMAGE_TAGS == AUTOSCALER_IMAGE_PINS
    assert set(AUTOSCALER_IMAGE_PINS) == set(SUPPORTED_EKS_VERSIONS)
    # cluster-autoscaler supports its own Kubernetes minor only: the chart's image is the default version's.
    app = json.loads((CHART_VALUES / f"cluster-autoscaler-{CHART_VERSIONS['cluster-autoscaler'][1]}.json").read_text())["appVersion"]
    assert app.rsplit(".", 1)[0] == DEFAULT_EKS_VERSION


def test_dockerfile_base_images_are_pins() -> None:
    for dockerfile in sorted((ROOT / "images").glob("*/Dockerfile")):
        for line in dockerfile.read_text().splitlines():
            if line.startswith("FROM "):
                image, tag = line.split()[1].rsplit(":", 1)
                assert tag in pinned("image", image), f"{dockerfile.relative_to(ROOT)}: {image}:{tag} is not in infra/pins.py"


def _images(node: Any) -> list[str]:
    if isinstance(node, dict):
        return [str(v) for k, v in node.items() if k == "image" and isinstance(v, str)] + [i for v in node.values() for i in _images(v)]
    if isinstance(node, list):
        return [i for v in node for i in _images(v)]
    return []


@pytest.mark.parametrize("stack", STACKS)
def test_every_version_a_rendered_stack_uses_is_in_the_table(rendered: Rendered, stack: str) -> None:
    rendering = rendered(stack)
    (version,) = {str(c.inputs["version"]) for c in rendering.of_type("aws:eks/cluster:Cluster")}
    assert version in pinned("eks", "kubernetes")
    addons = rendering.of_type("aws:eks/addon:Addon")
    assert addons
    for addon in addons:
        assert addon.inputs["addonVersion"] in pinned("addon", addon.inputs["addonName"]), addon.inputs["addonName"]
    releases = rendering.of_type("kubernetes:helm.sh/v3:Release")
    assert {r.inputs["chart"].rsplit("/", 1)[-1] for r in releases} == set(CHART_VERSIONS)
    for release in releases:
        chart = release.inputs["chart"].rsplit("/", 1)[-1]
        repo = (release.inputs.get("repositoryOpts") or {}).get("repo") or release.inputs["chart"].rsplit("/", 1)[0]
        assert (repo, release.inputs["version"]) == CHART_VERSIONS[chart][:2], chart
        tag = ((release.inputs.get("values") or {}).get("image") or {}).get("tag")
        if tag is not None:
            assert any(tag in pinned("image", p.name) for p in PINS if p.kind == "image"), f"{chart} image tag {tag}"
    images = [i for obj in kubernetes_objects(rendering) for i in _images(obj)]
    assert images
    for image in images:
        repository, tag = image.rsplit(":", 1)
        own = next((o for o in OWN_IMAGES if repository.endswith("/" + o)), None)
        assert own is not None, f"{image} is neither our own image nor a pin"
        if own == "llm-platform/vllm":
            assert tag.startswith(f"v{VLLM_VERSION}-"), image


def _paths(values: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    out = []
    for key, value in values.items():
        path = (*prefix, str(key))
        out.append(path)
        if isinstance(value, dict):
            out += _paths(value, path)
    return out


@pytest.mark.parametrize("stack", STACKS)
def test_every_chart_values_key_we_set_exists_at_the_pinned_chart_version(rendered: Rendered, stack: str) -> None:
    for release in rendered(stack).of_type("kubernetes:helm.sh/v3:Release"):
        chart = release.inputs["chart"].rsplit("/", 1)[-1]
        data = json.loads((CHART_VALUES / f"{chart}-{release.inputs['version']}.json").read_text())
        keys, conditions = set(data["keys"]), set(data["conditions"])
        free = set(data["free_form"]) | set(FREE_FORM_VALUES.get(chart, ()))
        for path in _paths(release.inputs.get("values") or {}):
            dotted = ".".join(path)
            under_free_map = any(dotted.startswith(f + ".") for f in free)
            assert dotted in keys or dotted in conditions or under_free_map, (
                f"{stack}: {chart} {release.inputs['version']} has no values key {dotted!r} ({data['source']})")


def test_vendored_chart_values_are_the_pinned_versions() -> None:
    assert {p.name for p in sorted(CHART_VALUES.glob("*.json"))} == {f"{n}-{v}.json" for n, (_, v, _) in CHART_VERSIONS.items()}


def test_readme_versions_table_is_the_pins_table() -> None:
    readme = (ROOT / "README.md").read_text()
    assert versions_markdown() in readme, "regenerate README's versions table: python -c 'from infra.pins import versions_markdown; print(versions_markdown())'"
    assert re.search(r"\| vllm: vllm \| " + re.escape(VLLM_VERSION), readme)
    _ = BASE_IMAGES

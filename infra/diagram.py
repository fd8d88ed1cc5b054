"""Architecture diagram of a rendered stack, as SVG and PNG, drawn from the same resources `pulumi up` would create.

The picture is built from the rendering (not from a hand-kept drawing), so it cannot drift from the code: regions,
the VPC with its AZs and subnets, NAT gateways and endpoints, the EKS cluster with each node group (instance types,
capacity type, min/desired/max, GPUs), Kubernetes workloads by namespace, data stores, the edge (Route 53, WAF,
ALB, certificate) and the estimated monthly cost.

One layout feeds two painters: SVG is written as text (readable, diffable, zoomable) and PNG is painted with Pillow,
which needs no system library, so both come out the same on any machine.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Sequence
from xml.sax.saxutils import escape, quoteattr

from PIL import Image, ImageDraw, ImageFont

from infra.cost import region_order
from infra.instances import INSTANCE_SPECS
from infra.render import DEFAULT_REGION, RenderedResource, Rendering, unwrap_secrets

FONT_FAMILY = "DejaVu Sans, Verdana, Arial, sans-serif"
TITLE_SIZE, TEXT_SIZE, HEADING_SIZE = 14, 12, 20
PAD, GAP, LINE_HEIGHT, TITLE_HEIGHT = 10, 12, 16, 20


@dataclass(frozen=True)
class Style:
    fill: str
    stroke: str
    title_color: str = "#232F3E"
    dashed: bool = False
    radius: int = 6


STYLES: dict[str, Style] = {
    "canvas": Style("#FFFFFF", "#FFFFFF", radius=0),
    "clients": Style("#F2F3F3", "#545B64"),
    "dns": Style("#F6EEFF", "#8C4FFF", "#6B2FD6"),
    "region": Style("#FAFCFF", "#147EBA", "#147EBA", dashed=True, radius=2),
    "edge": Style("#F6EEFF", "#8C4FFF", "#6B2FD6"),
    "vpc": Style("#F5FAF2", "#248814", "#248814", radius=2),
    "az": Style("#FFFFFF", "#7AA116", "#5A7A10", dashed=True),
    "cluster": Style("#FFF7EE", "#ED7100", "#C45A00"),
    "cpu": Style("#FFFFFF", "#ED7100", "#C45A00"),
    "gpu": Style("#F3EDFF", "#7B3FE4", "#5B21B6"),
    "workloads": Style("#FFFFFF", "#B0B7C3", "#414D5C"),
    "namespace": Style("#F7F8FA", "#B0B7C3", "#414D5C"),
    "data": Style("#EEF3FF", "#3B48CC", "#2E3AB8"),
    "services": Style("#F2F3F3", "#879596", "#414D5C"),
    "note": Style("#FFFFFF", "#FFFFFF", "#545B64", radius=0),
}


@dataclass
class Box:
    """A titled box of text lines with child boxes laid out in a row or a column."""

    key: str
    title: str
    lines: list[str] = field(default_factory=list)
    style: str = "workloads"
    children: list[Box] = field(default_factory=list)
    direction: Literal["row", "col"] = "col"
    x: float = 0.0
    y: float = 0.0
    w: float = 0.0
    h: float = 0.0

    def walk(self) -> list[Box]:
        out = [self]
        for child in self.children:
            out.extend(child.walk())
        return out


@dataclass(frozen=True)
class Arrow:
    source: str
    target: str
    label: str = ""


# --- fonts and measuring -----------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """DejaVu Sans where the system has it (Debian's fonts-dejavu-core), else Pillow's bundled font."""
    for name in (("DejaVuSans-Bold.ttf",) if bold else ()) + ("DejaVuSans.ttf",):
        try:
            return ImageFont.truetype(name, size)
        except OSError:
            continue
    return ImageFont.load_default(size=size)


def text_width(text: str, size: int, bold: bool = False) -> float:
    return float(font(size, bold).getlength(text))


# --- what the rendering holds ----------------------------------------------------------------------------------------

MAX_LINE_CHARS = 64


def wrap(line: str, limit: int = MAX_LINE_CHARS) -> list[str]:
    """Split a long line at its list separators (", " or " · ") so no box grows wider than a readable column."""
    if len(line) <= limit:
        return [line]
    out: list[str] = []
    current = ""
    for piece in _pieces(line):
        if current and len(current) + len(piece) > limit:
            out.append(current.rstrip())
            current = "    " + piece.lstrip()
        else:
            current += piece
    out.append(current.rstrip())
    return out


def _pieces(line: str) -> list[str]:
    pieces: list[str] = []
    start = 0
    for index in range(len(line)):
        for sep in (", ", " · "):
            if line.startswith(sep, index):
                pieces.append(line[start:index + len(sep)])
                start = index + len(sep)
    pieces.append(line[start:])
    return [p for p in pieces if p]


def _num(value: Any) -> int:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return 0


def _short(name: str, prefix: str) -> str:
    return name[len(prefix) + 1:] if prefix and name.startswith(prefix + "-") else name


class _View:
    """Reads one rendering: resources by region, ids, and the helpers the boxes need."""

    def __init__(self, rendering: Rendering) -> None:
        self.rendering = rendering
        self.resources = [_plain(r) for r in rendering.resources]
        self.by_id = {r.id: r for r in self.resources if r.id}
        self.regions = region_order(rendering) or [DEFAULT_REGION]

    def region_of(self, r: RenderedResource) -> str:
        return self.rendering.region_of(r) or DEFAULT_REGION

    def of(self, type_token: str, region: str | None = None) -> list[RenderedResource]:
        return [r for r in self.resources if r.type == type_token and (region is None or self.region_of(r) == region)]

    def k8s(self, region: str) -> list[RenderedResource]:
        # Kubernetes objects go through a Kubernetes provider, not an AWS one: single-region stacks own them all.
        home_only = len(self.regions) == 1
        return [r for r in self.resources if r.type.startswith("kubernetes:")
                and (home_only or region in str(r.provider or "") or (region == self.regions[0] and not r.provider))]


def _plain(r: RenderedResource) -> RenderedResource:
    from dataclasses import replace

    return replace(r, inputs=unwrap_secrets(r.inputs))


def _network_box(view: _View, region: str, prefix: str) -> Box:
    vpcs = view.of("aws:ec2/vpc:Vpc", region)
    cidr = str(vpcs[0].inputs.get("cidrBlock", "")) if vpcs else "?"
    subnets = view.of("aws:ec2/subnet:Subnet", region)
    nats = view.of("aws:ec2/natGateway:NatGateway", region)
    nat_azs = {str(view.by_id[n.inputs["subnetId"]].inputs.get("availabilityZone"))
               for n in nats if n.inputs.get("subnetId") in view.by_id}
    azs: dict[str, list[str]] = {}
    for sn in sorted(subnets, key=lambda s: (str(s.inputs.get("availabilityZone")), "private" in s.name)):
        az = str(sn.inputs.get("availabilityZone", "?"))
        tags = sn.inputs.get("tags") or {}
        public = "kubernetes.io/role/elb" in tags or "public" in sn.name
        kind = "public " if public else "private"
        extra = "  + NAT" if public and az in nat_azs else ""
        azs.setdefault(az, []).append(f"{kind} {sn.inputs.get('cidrBlock', '?')}{extra}")
    az_boxes = [Box(f"{region}/az/{az}", az, lines, "az") for az, lines in azs.items()]
    endpoints = view.of("aws:ec2/vpcEndpoint:VpcEndpoint", region)
    interface = sorted(str(e.inputs.get("serviceName", "")).removeprefix(f"com.amazonaws.{region}.")
                       for e in endpoints if e.inputs.get("vpcEndpointType") == "Interface")
    gateway = sorted(str(e.inputs.get("serviceName", "")).removeprefix(f"com.amazonaws.{region}.")
                     for e in endpoints if e.inputs.get("vpcEndpointType") != "Interface")
    lines = [f"NAT gateways: {len(nats)}" + (" (one per AZ)" if nats and len(nats) == len(azs) and len(azs) > 1 else " (shared)" if nats else "")]
    if interface:
        lines.append(f"PrivateLink endpoints: {', '.join(interface)}")
    if gateway:
        lines.append(f"gateway endpoints: {', '.join(gateway)}")
    if view.of("aws:ec2/flowLog:FlowLog", region):
        lines.append("VPC flow logs → CloudWatch Logs")
    return Box(f"{region}/vpc", f"VPC {cidr}", lines, "vpc", [Box(f"{region}/azs", "", [], "note", az_boxes, "row")])


def _node_group_box(r: RenderedResource, region: str, prefix: str) -> Box:
    labels = r.inputs.get("labels") or {}
    name = str(labels.get("llm-platform/node-group") or _short(str(r.inputs.get("nodeGroupNamePrefix", r.name)).rstrip("-"), prefix))
    types = [str(t) for t in r.inputs.get("instanceTypes") or []]
    gpu_class = labels.get("llm-platform/gpu")
    spec = INSTANCE_SPECS.get(types[0]) if types else None
    scaling = r.inputs.get("scalingConfig") or {}
    title = f"{name} · GPU {str(gpu_class).upper()}" if gpu_class else f"{name} · CPU"
    lines = [", ".join(types) or "?"]
    if spec:
        per_node = f"{spec.gpus}× {str(spec.gpu_class).upper()} {spec.gpu_memory_gib} GiB, " if spec.gpus else ""
        lines.append(f"{per_node}{spec.vcpus} vCPU, {spec.memory_gib} GiB per node")
    capacity = str(r.inputs.get("capacityType", "ON_DEMAND")).replace("_", "-").lower()
    lines.append(f"{capacity} · min {_num(scaling.get('minSize'))} / desired {_num(scaling.get('desiredSize'))} / max {_num(scaling.get('maxSize'))}")
    return Box(f"{region}/ng/{name}", title, lines, "gpu" if gpu_class else "cpu")


def _workloads_box(view: _View, region: str) -> Box | None:
    by_ns: dict[str, list[str]] = {}
    kinds = {"Deployment": "", "StatefulSet": "statefulset ", "DaemonSet": "daemonset "}
    for r in view.k8s(region):
        kind = r.type.rsplit(":", 1)[-1]
        meta = r.inputs.get("metadata") or {}
        if kind in kinds:
            replicas = (r.inputs.get("spec") or {}).get("replicas")
            count = f" ×{_num(replicas)}" if replicas is not None else ""
            by_ns.setdefault(str(meta.get("namespace", "default")), []).append(f"{kinds[kind]}{meta.get('name', r.name)}{count}")
        elif kind == "Release":
            chart = str(r.inputs.get("chart", "")).rsplit("/", 1)[-1]
            release = str(r.inputs.get("name") or r.name)
            version = f" {r.inputs['version']}" if r.inputs.get("version") else ""
            what = f"{release}{version}" if chart in ("", release) else f"{release} ({chart}{version})"
            by_ns.setdefault(str(r.inputs.get("namespace", "default")), []).append(f"helm {what}")
    if not by_ns:
        return None
    boxes = [Box(f"{region}/ns/{ns}", f"namespace {ns}", sorted(items), "namespace") for ns, items in sorted(by_ns.items())]
    rows = [Box(f"{region}/nsrow/{i}", "", [], "note", boxes[i:i + 3], "row") for i in range(0, len(boxes), 3)]
    return Box(f"{region}/workloads", "Workloads", [], "workloads", rows)


def _cluster_box(view: _View, region: str, prefix: str) -> Box | None:
    clusters = view.of("aws:eks/cluster:Cluster", region)
    if not clusters:
        return None
    c = clusters[0]
    vpc_config = c.inputs.get("vpcConfig") or {}
    access = "private API endpoint" + (" + allow-listed public" if vpc_config.get("endpointPublicAccess") else " only")
    lines = [access]
    if c.inputs.get("encryptionConfig"):
        lines.append("secrets encrypted with KMS · control-plane logs " + str(len(c.inputs.get("enabledClusterLogTypes") or [])) + " types")
    addons = sorted(str(a.inputs.get("addonName")) for a in view.of("aws:eks/addon:Addon", region) if a.inputs.get("addonName"))
    if addons:
        lines.append("add-ons: " + ", ".join(addons))
    groups = sorted((_node_group_box(r, region, prefix) for r in view.of("aws:eks/nodeGroup:NodeGroup", region)),
                    key=lambda b: (b.style != "cpu", b.title))
    rows = [Box(f"{region}/ngrow/{i}", "", [], "note", groups[i:i + 3], "row") for i in range(0, len(groups), 3)]
    children = [Box(f"{region}/nodegroups", "Managed node groups", [], "note", rows)]
    workloads = _workloads_box(view, region)
    if workloads:
        children.append(workloads)
    return Box(f"{region}/cluster", f"EKS {c.inputs.get('name', c.name)} · Kubernetes {c.inputs.get('version', '?')}", lines, "cluster", children)


def _data_boxes(view: _View, region: str) -> list[Box]:
    boxes: list[Box] = []
    for rg in view.of("aws:elasticache/replicationGroup:ReplicationGroup", region):
        i = rg.inputs
        if i.get("numNodeGroups") is not None:
            nodes = f"{_num(i.get('numNodeGroups'))} shards × {1 + _num(i.get('replicasPerNodeGroup'))} nodes"
        else:
            nodes = f"{_num(i.get('numCacheClusters') or 1)} node(s)"
        lines = [f"{i.get('nodeType', 'primary node type')} · {nodes}"]
        flags = [f for f, on in (("Multi-AZ failover", i.get("automaticFailoverEnabled")), ("TLS", i.get("transitEncryptionEnabled")),
                                 ("KMS at rest", i.get("kmsKeyId") or i.get("atRestEncryptionEnabled")), ("AUTH", i.get("authToken"))) if on]
        if flags:
            lines.append(" · ".join(flags))
        if i.get("globalReplicationGroupId"):
            lines.append("member of the Global Datastore")
        engine = str(i.get("engine") or "").capitalize()
        title = f"ElastiCache {engine} {i.get('engineVersion', '')}".strip() if engine else "ElastiCache (Global Datastore secondary)"
        boxes.append(Box(f"{region}/redis/{rg.name}", title, lines, "data"))
    for db in view.of("aws:rds/instance:Instance", region):
        i = db.inputs
        role = "read replica" if i.get("replicateSourceDb") else "primary"
        lines = [f"{i.get('instanceClass', '?')} · {role} · {'Multi-AZ' if i.get('multiAz') else 'Single-AZ'}"]
        if i.get("allocatedStorage"):
            lines.append(f"{_num(i.get('allocatedStorage'))} GB {i.get('storageType', 'gp3')}" + (" · encrypted" if i.get("storageEncrypted") else ""))
        if i.get("deletionProtection"):
            lines.append("deletion protection")
        boxes.append(Box(f"{region}/rds/{db.name}", f"RDS PostgreSQL {i.get('engineVersion', '')}".strip(), lines, "data"))
    return boxes


def _edge_box(view: _View, region: str) -> Box | None:
    lbs = view.of("aws:lb/loadBalancer:LoadBalancer", region)
    acls = view.of("aws:wafv2/webAcl:WebAcl", region)
    if not lbs and not acls:
        return None
    children: list[Box] = []
    for acl in acls:
        rules = acl.inputs.get("rules") or []
        names = [str(r.get("name")) for r in rules if isinstance(r, dict)]
        lines = [f"{len(rules)} rules" + (f": {', '.join(names[:3])}{', …' if len(names) > 3 else ''}" if names else "")]
        children.append(Box(f"{region}/waf/{acl.name}", "WAF web ACL", lines, "edge"))
    listeners = view.of("aws:lb/listener:Listener", region)
    ports = sorted({f"{l.inputs.get('protocol', '')} {_num(l.inputs.get('port'))}" for l in listeners})
    certs = [str(c.inputs.get("domainName")) for c in view.of("aws:acm/certificate:Certificate", region) if c.inputs.get("domainName")]
    for lb in lbs:
        scheme = "internal" if lb.inputs.get("internal") else "internet-facing"
        lines = [f"{scheme} · {len(lb.inputs.get('subnets') or [])} public subnets"]
        if ports:
            lines.append("listeners: " + ", ".join(ports))
        if certs:
            lines.append("TLS certificate: " + ", ".join(certs))
        children.append(Box(f"{region}/alb/{lb.name}", "Application Load Balancer", lines, "edge"))
    return Box(f"{region}/edge", "", [], "note", children, "row")


def _services_box(view: _View, region: str) -> Box | None:
    lines: list[str] = []
    buckets = view.of("aws:s3/bucket:Bucket", region) + view.of("aws:s3/bucketV2:BucketV2", region)
    for b in buckets:
        lines.append(f"S3 {b.inputs.get('bucket') or b.inputs.get('bucketPrefix') or b.name}")
    counts = [("KMS keys", len(view.of("aws:kms/key:Key", region))),
              ("Secrets Manager secrets", len(view.of("aws:secretsmanager/secret:Secret", region))),
              ("CloudWatch log groups", len(view.of("aws:cloudwatch/logGroup:LogGroup", region))),
              ("ECR repositories", len(view.of("aws:ecr/repository:Repository", region)))]
    summary = [f"{n} {what}" for what, n in counts if n]
    if summary:
        lines.append(" · ".join(summary))
    if not lines:
        return None
    return Box(f"{region}/services", "Regional services", lines, "services")


def build_boxes(rendering: Rendering, cost_line: str = "") -> tuple[Box, list[Arrow]]:
    view = _View(rendering)
    arrows: list[Arrow] = []
    region_boxes: list[Box] = []
    zones = view.of("aws:route53/zone:Zone")
    records = view.of("aws:route53/record:Record")
    health = view.of("aws:route53/healthCheck:HealthCheck")
    prefix = ""
    for r in view.resources:
        if r.type == "aws:eks/cluster:Cluster":
            prefix = str(r.inputs.get("name", ""))
            break

    for index, region in enumerate(view.regions):
        cluster_names = [str(c.inputs.get("name", "")) for c in view.of("aws:eks/cluster:Cluster", region)]
        region_prefix = cluster_names[0] if cluster_names else prefix
        inner: list[Box] = []
        edge = _edge_box(view, region)
        if edge:
            inner.append(edge)
        network = _network_box(view, region, region_prefix)
        cluster = _cluster_box(view, region, region_prefix)
        if cluster:
            network.children.append(cluster)
        data = _data_boxes(view, region)
        if data:
            network.children.append(Box(f"{region}/data", "Data stores (private subnets)", [], "note", data, "row"))
        inner.append(network)
        services = _services_box(view, region)
        if services:
            inner.append(services)
        title = f"Region {region}" + (" (home)" if index == 0 and len(view.regions) > 1 else "")
        region_boxes.append(Box(f"{region}/region", title, [], "region", inner))
        # Traffic enters through the WAF (when there is one) in front of the ALB.
        entry = edge.children[0].key if edge and edge.children else (cluster.key if cluster else network.key)
        arrows.append(Arrow("dns" if (zones or records) else "clients", entry))
        if edge and cluster and len(edge.children) > 1:
            arrows.append(Arrow(edge.children[0].key, edge.children[-1].key))
        if edge and cluster:
            arrows.append(Arrow(edge.children[-1].key, cluster.key))
        if cluster and data:
            arrows.append(Arrow(cluster.key, f"{region}/data"))

    top: list[Box] = [Box("clients", "Clients", ["OpenAI-compatible API over HTTPS"], "clients")]
    if zones or records:
        # ACM validation records (`_<token>.name`) are plumbing, not part of the picture.
        names = sorted({str(r.inputs.get("name")).rstrip(".") for r in records
                        if r.inputs.get("name") and not str(r.inputs.get("name")).startswith("_")})
        lines = [f"records: {', '.join(names[:4])}{', …' if len(names) > 4 else ''}"] if names else []
        policies = sorted({k for r in records for k in ("latencyRoutingPolicies", "failoverRoutingPolicies", "geolocationRoutingPolicies")
                           if r.inputs.get(k)})
        if policies:
            lines.append("routing: " + ", ".join(p.removesuffix("RoutingPolicies") for p in policies))
        if health:
            lines.append(f"{len(health)} health checks")
        top.append(Box("dns", "Route 53", [piece for line in lines for piece in wrap(line, 90)], "dns"))
        arrows.insert(0, Arrow("clients", "dns"))
    for region_box in region_boxes:
        for box in region_box.walk():
            box.lines = [piece for line in box.lines for piece in wrap(line)]
    heading = Box("heading", f"llm-platform · stack {rendering.stack}",
                  [f"{sum(1 for r in rendering.resources if r.custom)} resources in {len(view.regions)} region(s)"
                   + (f" · {cost_line}" if cost_line else "")], "note")
    root = Box("canvas", "", [], "canvas", [
        heading,
        Box("top", "", [], "note", top, "row"),
        Box("regions", "", [], "note", region_boxes, "row"),
        Box("footer", "", [f"generated by `python -m infra.cli diagram {rendering.stack}` from the rendered Pulumi program"], "note"),
    ])
    return root, arrows


# --- layout ------------------------------------------------------------------------------------------------------

def _header_height(box: Box) -> float:
    height = TITLE_HEIGHT if box.title else 0.0
    return height + LINE_HEIGHT * len(box.lines)


def _text_width(box: Box) -> float:
    size = HEADING_SIZE if box.key == "heading" else TITLE_SIZE
    widths = [text_width(box.title, size, True)] + [text_width(line, TEXT_SIZE) for line in box.lines]
    return max(widths)


def measure(box: Box) -> None:
    for child in box.children:
        measure(child)
    pad = 0 if box.style == "note" and not box.title else PAD
    header = _header_height(box) + (8 if box.key == "heading" else 0)
    if box.children:
        if box.direction == "row":
            cw = sum(c.w for c in box.children) + GAP * (len(box.children) - 1)
            ch = max(c.h for c in box.children)
        else:
            cw = max(c.w for c in box.children)
            ch = sum(c.h for c in box.children) + GAP * (len(box.children) - 1)
        box.w = max(_text_width(box) + 2 * pad, cw + 2 * pad)
        box.h = pad + header + (GAP / 2 if header else 0) + ch + pad
    else:
        box.w = _text_width(box) + 2 * pad
        box.h = header + 2 * pad


def place(box: Box, x: float, y: float, w: float | None = None, h: float | None = None) -> None:
    """Position a measured box; a parent stretches its children to fill its width (column) or height (row)."""
    box.x, box.y = x, y
    box.w = max(box.w, w or 0.0)
    box.h = max(box.h, h or 0.0)
    if not box.children:
        return
    pad = 0 if box.style == "note" and not box.title else PAD
    header = _header_height(box) + (8 if box.key == "heading" else 0)
    top = y + pad + header + (GAP / 2 if header else 0)
    inner_w = box.w - 2 * pad
    if box.direction == "col":
        for child in box.children:
            place(child, x + pad, top, inner_w)
            top += child.h + GAP
    else:
        natural = sum(c.w for c in box.children) + GAP * (len(box.children) - 1)
        extra = (inner_w - natural) / len(box.children)
        inner_h = box.h - (top - y) - pad
        left = x + pad
        for child in box.children:
            place(child, left, top, child.w + extra, inner_h)
            left += child.w + GAP


def layout(root: Box) -> tuple[int, int]:
    measure(root)
    root.w += 2 * GAP
    place(root, 0, 0)
    # Stretching may have grown children; grow the canvas to fit everything.
    right = max(b.x + b.w for b in root.walk())
    bottom = max(b.y + b.h for b in root.walk())
    root.w, root.h = float(math.ceil(right + GAP)), float(math.ceil(bottom + GAP))
    return int(root.w), int(root.h)


# --- painting ------------------------------------------------------------------------------------------------------

def _anchor_points(a: Box, b: Box) -> tuple[float, float, float, float]:
    if b.y >= a.y + a.h - 1:  # b below a
        return a.x + a.w / 2, a.y + a.h, b.x + b.w / 2, b.y
    if a.y >= b.y + b.h - 1:  # b above a
        return a.x + a.w / 2, a.y, b.x + b.w / 2, b.y + b.h
    if b.x >= a.x + a.w - 1:  # b right of a
        return a.x + a.w, a.y + min(a.h, b.h) / 2, b.x, a.y + min(a.h, b.h) / 2
    return a.x, a.y + a.h / 2, b.x + b.w, a.y + a.h / 2


def _text_runs(box: Box) -> list[tuple[float, float, str, int, bool, str]]:
    """(x, baseline y, text, size, bold, color) for a box's title and lines."""
    style = STYLES[box.style]
    pad = 0 if box.style == "note" and not box.title else PAD
    runs: list[tuple[float, float, str, int, bool, str]] = []
    y = box.y + pad
    if box.title:
        size = HEADING_SIZE if box.key == "heading" else TITLE_SIZE
        y += TITLE_HEIGHT + (8 if box.key == "heading" else 0)
        runs.append((box.x + pad, y - 5, box.title, size, True, style.title_color))
    for line in box.lines:
        y += LINE_HEIGHT
        runs.append((box.x + pad, y - 4, line, TEXT_SIZE, False, "#232F3E"))
    return runs


def _drawn(box: Box) -> bool:
    return box.style not in ("note", "canvas")


def backgrounds(root: Box) -> dict[str, str]:
    """The colour behind each box's text: its own fill, or the nearest drawn ancestor's for undrawn boxes."""
    out: dict[str, str] = {}

    def visit(box: Box, behind: str) -> None:
        fill = STYLES[box.style].fill if _drawn(box) else behind
        out[box.key] = fill
        for child in box.children:
            visit(child, fill)

    visit(root, "#FFFFFF")
    return out


def to_svg(root: Box, arrows: Sequence[Arrow]) -> str:
    """Boxes, then arrows, then text with a halo of its background, so a crossing arrow never hides a word."""
    width, height = int(root.w), int(root.h)
    boxes = {b.key: b for b in root.walk()}
    behind = backgrounds(root)
    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'font-family={quoteattr(FONT_FAMILY)}>',
        "<title>llm-platform architecture</title>",
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="8" markerHeight="8" orient="auto-start-reverse">'
        '<path d="M 0 0 L 10 5 L 0 10 z" fill="#545B64"/></marker></defs>',
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#FFFFFF"/>',
    ]
    for box in root.walk():
        style = STYLES[box.style]
        if _drawn(box):
            dash = ' stroke-dasharray="6 4"' if style.dashed else ""
            out.append(f'<rect x="{box.x:.1f}" y="{box.y:.1f}" width="{box.w:.1f}" height="{box.h:.1f}" rx="{style.radius}" '
                       f'fill="{style.fill}" stroke="{style.stroke}" stroke-width="1.5"{dash}/>')
    for arrow in arrows:
        if arrow.source in boxes and arrow.target in boxes:
            x1, y1, x2, y2 = _anchor_points(boxes[arrow.source], boxes[arrow.target])
            out.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" stroke="#545B64" stroke-width="1.5" '
                       'marker-end="url(#arrow)"/>')
    for box in root.walk():
        for x, y, text, size, bold, color in _text_runs(box):
            weight = ' font-weight="bold"' if bold else ""
            out.append(f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}"{weight} fill="{color}" '
                       f'stroke="{behind[box.key]}" stroke-width="3" paint-order="stroke">{escape(text)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _dashed_rect(draw: ImageDraw.ImageDraw, box: tuple[float, float, float, float], color: str, width: int, dash: float) -> None:
    x0, y0, x1, y1 = box
    for (ax, ay, bx, by) in ((x0, y0, x1, y0), (x1, y0, x1, y1), (x1, y1, x0, y1), (x0, y1, x0, y0)):
        length = max(abs(bx - ax), abs(by - ay))
        steps = int(length // (dash * 1.6)) + 1
        for i in range(steps):
            s = i * dash * 1.6 / length if length else 0
            e = min(1.0, s + dash / length) if length else 0
            draw.line((ax + (bx - ax) * s, ay + (by - ay) * s, ax + (bx - ax) * e, ay + (by - ay) * e), fill=color, width=width)


def to_png(root: Box, arrows: Sequence[Arrow], path: Path, scale: float = 2.0) -> None:
    """Paint the same layout with Pillow (DejaVu or Pillow's bundled font): no system graphics library needed."""
    image = Image.new("RGB", (int(root.w * scale), int(root.h * scale)), "#FFFFFF")
    draw = ImageDraw.Draw(image)
    boxes = {b.key: b for b in root.walk()}
    behind = backgrounds(root)
    line_width = max(1, round(1.5 * scale))
    for box in root.walk():
        style = STYLES[box.style]
        rect = (box.x * scale, box.y * scale, (box.x + box.w) * scale, (box.y + box.h) * scale)
        if _drawn(box):
            if style.dashed:
                draw.rounded_rectangle(rect, radius=style.radius * scale, fill=style.fill)
                _dashed_rect(draw, rect, style.stroke, line_width, 6 * scale)
            else:
                draw.rounded_rectangle(rect, radius=style.radius * scale, fill=style.fill, outline=style.stroke, width=line_width)
    for arrow in arrows:
        if arrow.source in boxes and arrow.target in boxes:
            x1, y1, x2, y2 = (v * scale for v in _anchor_points(boxes[arrow.source], boxes[arrow.target]))
            draw.line((x1, y1, x2, y2), fill="#545B64", width=line_width)
            _arrow_head(draw, x1, y1, x2, y2, 8 * scale)
    halo = max(1, round(1.5 * scale))
    for box in root.walk():
        for x, y, text, size, bold, color in _text_runs(box):
            draw.text((x * scale, y * scale), text, font=font(round(size * scale), bold), fill=color, anchor="ls",
                      stroke_width=halo, stroke_fill=behind[box.key])
    image.save(path, format="PNG", optimize=True)


def _arrow_head(draw: ImageDraw.ImageDraw, x1: float, y1: float, x2: float, y2: float, size: float) -> None:
    angle = math.atan2(y2 - y1, x2 - x1)
    left = (x2 - size * math.cos(angle - 0.45), y2 - size * math.sin(angle - 0.45))
    right = (x2 - size * math.cos(angle + 0.45), y2 - size * math.sin(angle + 0.45))
    draw.polygon([(x2, y2), left, right], fill="#545B64")


# --- entry points ------------------------------------------------------------------------------------------------

def write_diagram(rendering: Rendering, out_dir: Path, cost_line: str = "", scale: float = 2.0) -> tuple[Path, Path]:
    """Write `<stack>-architecture.svg` and `.png` into `out_dir`; returns both paths."""
    root, arrows = build_boxes(rendering, cost_line)
    layout(root)
    out_dir.mkdir(parents=True, exist_ok=True)
    svg_path = out_dir / f"{rendering.stack}-architecture.svg"
    png_path = out_dir / f"{rendering.stack}-architecture.png"
    svg_path.write_text(to_svg(root, arrows))
    to_png(root, arrows, png_path, scale)
    return svg_path, png_path


def cost_summary(rendering: Rendering) -> str:
    from infra.cost import estimate
    from infra.pricelist import PriceError

    try:
        est = estimate(rendering)
    except PriceError:
        return ""
    return f"est. ${est.total_desired:,.0f}/month at desired size, ${est.total_max:,.0f} with every node group at max"


def cmd_diagram(args: argparse.Namespace) -> int:
    from infra.cli import render_stack

    rendering = render_stack(args.stack)
    svg_path, png_path = write_diagram(rendering, Path(args.out), cost_summary(rendering), args.scale)
    print(f"wrote {svg_path}")
    print(f"wrote {png_path}")
    return 0


def register(sub: Any) -> None:
    """Add `diagram <stack> --out DIR` to the CLI's subcommands."""
    parser = sub.add_parser("diagram", help="draw the stack's architecture (SVG and PNG) from the rendered program")
    parser.add_argument("stack", help="stack name")
    parser.add_argument("--out", default="diagrams", help="output folder (default: diagrams/)")
    parser.add_argument("--scale", type=float, default=2.0, help="PNG pixels per SVG unit (default 2)")
    parser.set_defaults(func=cmd_diagram)

"""Offline check of rendered AWS inputs against AWS's own API model (botocore's service models, pinned boto3).

The Terraform AWS provider (pulumi-aws is bridged from it) turns each resource's inputs into AWS API requests
(`Create*`, `Put*`, `Modify*`). AWS validates those requests against its service model: enums, patterns, length
and value ranges, required members. botocore ships the same models, so a rendered stack can be checked offline:
`TABLE` says, per Pulumi resource type, which service and operation(s) receive its inputs and where an input lands
when its AWS member name is not the plain name (read from the provider's `expand*` code). `check_rendering` walks
every rendered input through that table and reports every value AWS would refuse.

Why here (infra/, not tests/): it is a fact table about AWS used by the test suite (`tests/guards/`) and available
to the CLI; like `infra/provider_limits.py`, program code may read it, tests must not be its only home.

Name matching: an input with no entry in `Api.members` lands on the member of the same name (case and
underscores ignored: `cloudwatchMetricsEnabled` = `CloudWatchMetricsEnabled`), searched in `Api.operations` in
order. An input that matches nothing and is not declared in `Api.members` or `Api.not_sent` is an error: the
table is incomplete, never silently skipped.

Values that only exist after another resource is created (ids, ARNs; the mocks stand in made-up ones) are unknown
at preview: they are skipped and counted (`Report.unknown`), as are secrets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Iterable, Mapping

import botocore.session
import regex  # AWS patterns are Java regexes (\p{L}, \p{Z} ...): the stdlib `re` has no Unicode classes
from botocore.model import ListShape, MapShape, OperationModel, Shape, StructureShape

AUTONAME = "<autoname>"
"""`Api.supplied` value: Pulumi auto-names the resource `<resource name>-<7 random hex>`; that name is checked."""
FLATTEN = "*"
"""`Api.members` target: the input is a block whose fields are members of the request root (health_check)."""
AUTONAME_SUFFIX = "-a1b2c3d"  # what Pulumi's auto-naming appends: '-' + 7 random hex characters

PULUMI_AWS_TF_SOURCE = (
    "Pulumi token -> Terraform resource type: pulumi-aws bridge metadata "
    "(pulumi/pulumi-aws provider/cmd/pulumi-resource-aws/bridge-metadata.json, Apache-2.0)"
)


@dataclass(frozen=True)
class Api:
    """Where a resource type's inputs go: `service` (botocore name), `operations` (the first is the create call)."""

    service: str
    operations: tuple[str, ...]
    tf_type: str
    """Terraform type the Pulumi token is bridged from (its Go file is `source`)."""
    source: str
    """Provider file whose expander was read, e.g. internal/service/wafv2/web_acl.go."""
    members: Mapping[str, str] = field(default_factory=dict)
    """Pulumi input path (dots; list levels implicit) -> member path. Top-level inputs: from the request root,
    `"Operation:Member.Sub"` picks another operation; nested inputs: relative to the enclosing shape."""
    not_sent: Mapping[str, str] = field(default_factory=dict)
    """Pulumi input path -> why the value is not an AWS request member (provider-side or Pulumi-side setting)."""
    supplied: Mapping[str, str] = field(default_factory=dict)
    """Required member (of the first operation's request) -> who supplies it when no input maps to it."""


@dataclass(frozen=True)
class NoApi:
    """A resource type used by a stack whose inputs map to no AWS request member, and why."""

    reason: str


@dataclass(frozen=True)
class Violation:
    stack: str
    resource: str
    type: str
    input_path: str
    member: str
    value: Any
    rule: str

    def __str__(self) -> str:
        shown = repr(self.value)
        if len(shown) > 120:
            shown = shown[:117] + "..."
        return f"{self.stack}: {self.type} {self.resource}: {self.input_path} = {shown} -> {self.member}: {self.rule}"


@dataclass
class Report:
    checked: int = 0
    """Leaf values checked against a member's shape."""
    unknown: list[str] = field(default_factory=list)
    """`resource.input` values unknown at preview (outputs of other resources, secrets): skipped."""
    violations: list[Violation] = field(default_factory=list)
    types_used: set[str] = field(default_factory=set)
    types_mapped: set[str] = field(default_factory=set)
    types_unmappable: set[str] = field(default_factory=set)
    types_missing: set[str] = field(default_factory=set)

    def merge(self, other: "Report") -> None:
        self.checked += other.checked
        self.unknown += other.unknown
        self.violations += other.violations
        self.types_used |= other.types_used
        self.types_mapped |= other.types_mapped
        self.types_unmappable |= other.types_unmappable
        self.types_missing |= other.types_missing

    def summary(self) -> str:
        used = len(self.types_used)
        return (f"AWS API model: {len(self.types_mapped)} of {used} resource types mapped to API members, "
                f"{len(self.types_unmappable)} with no API member (reason in the table), {len(self.types_missing)} "
                f"unmapped; {self.checked} values checked, {len(self.unknown)} unknown at preview skipped, "
                f"{len(self.violations)} violations")


# --- botocore --------------------------------------------------------------------------------------------------

@lru_cache(maxsize=None)
def service_model(service: str) -> Any:
    return botocore.session.get_session().get_service_model(service)


def operation_model(service: str, operation: str) -> OperationModel:
    return service_model(service).operation_model(operation)


def _norm(name: str) -> str:
    return name.replace("_", "").lower()


def member_named(shape: Shape, name: str) -> tuple[str, Shape] | None:
    """The member of a structure whose name equals `name`, ignoring case and underscores."""
    if not isinstance(shape, StructureShape):
        return None
    for member_name, member in shape.members.items():
        if _norm(member_name) == _norm(name):
            return member_name, member
    return None


def resolve_member(shape: Shape, path: str) -> tuple[str, Shape]:
    """Walk `A.B.C` (lists transparent) from `shape`; KeyError if a step does not exist."""
    names: list[str] = []
    for step in path.split("."):
        while isinstance(shape, ListShape):
            shape = shape.member
        if not isinstance(shape, StructureShape) or step not in shape.members:
            raise KeyError(f"{shape.name} has no member {step}")
        shape = shape.members[step]
        names.append(step)
    return ".".join(names), shape


# --- value checks ------------------------------------------------------------------------------------------------

UNCOMPILABLE_PATTERNS: set[str] = set()
"""Model patterns in a Java-only syntax the `regex` module refuses (reported by the guard, not silently passed)."""


@lru_cache(maxsize=None)
def _compiled(pattern: str) -> Any:
    try:
        return regex.compile(pattern)
    except regex.error:
        UNCOMPILABLE_PATTERNS.add(pattern)
        return None


def _scalar_rules(shape: Shape, value: Any) -> list[str]:
    meta = shape.metadata
    kind = shape.type_name
    problems: list[str] = []
    if kind in ("integer", "long"):
        if isinstance(value, bool) or not isinstance(value, (int, float, str)):
            return [f"{shape.name} is an {kind}, got {type(value).__name__}"]
        try:
            number = float(value)
        except ValueError:
            return [f"{shape.name} is an {kind}, got {value!r}"]
        if number != int(number):
            problems.append(f"{shape.name} is an {kind}, got a fraction")
        if "min" in meta and number < meta["min"]:
            problems.append(f"{shape.name} minimum {meta['min']}")
        if "max" in meta and number > meta["max"]:
            problems.append(f"{shape.name} maximum {meta['max']}")
        return problems
    if kind in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return [f"{shape.name} is a {kind}, got {type(value).__name__}"]
        if "min" in meta and value < meta["min"]:
            problems.append(f"{shape.name} minimum {meta['min']}")
        if "max" in meta and value > meta["max"]:
            problems.append(f"{shape.name} maximum {meta['max']}")
        return problems
    if kind == "boolean":
        if isinstance(value, bool) or value in ("true", "false"):
            return []
        return [f"{shape.name} is a boolean, got {value!r}"]
    if kind in ("string", "blob"):
        if isinstance(value, bool) or isinstance(value, (dict, list)):
            return [f"{shape.name} is a {kind}, got {type(value).__name__}"]
        text = str(int(value)) if isinstance(value, float) and value == int(value) else str(value)
        if shape.enum and text not in shape.enum:
            problems.append(f"{shape.name} enum {sorted(shape.enum)}")
        if "min" in meta and len(text) < meta["min"]:
            problems.append(f"{shape.name} min length {meta['min']} (is {len(text)})")
        if "max" in meta and len(text) > meta["max"]:
            problems.append(f"{shape.name} max length {meta['max']} (is {len(text)})")
        # Smithy/AWS patterns are not implicitly anchored (most carry ^...$ themselves): search, not fullmatch.
        if "pattern" in meta and _compiled(meta["pattern"]) is not None and _compiled(meta["pattern"]).search(text) is None:
            problems.append(f"{shape.name} pattern {meta['pattern']}")
        return problems
    if kind == "timestamp":
        return []
    return [f"{shape.name}: cannot check a {kind} against {type(value).__name__}"]


def _is_secret(value: Any) -> bool:
    from infra.render import is_secret

    return bool(is_secret(value))


class _Walker:
    def __init__(self, stack: str, resource: Any, api: Api, unknown_marks: tuple[str, ...], report: Report) -> None:
        self.stack, self.resource, self.api, self.report = stack, resource, api, report
        self.unknown_marks = unknown_marks

    def violation(self, path: str, member: str, value: Any, rule: str) -> None:
        self.report.violations.append(Violation(self.stack, self.resource.name, self.resource.type, path, member, value, rule))

    def is_unknown(self, value: Any, dependent: bool) -> bool:
        if _is_secret(value):
            return True
        return dependent and isinstance(value, str) and any(mark in value for mark in self.unknown_marks)

    def value(self, path: str, member: str, shape: Shape, value: Any, dependent: bool) -> None:
        if value is None:
            return
        if self.is_unknown(value, dependent):
            self.report.unknown.append(f"{self.resource.name}.{path}")
            return
        if isinstance(shape, ListShape):
            items = value if isinstance(value, list) else [value]
            self._count(path, member, shape, len(items))
            for item in items:
                self.value(path, member + "[]", shape.member, item, dependent)
            return
        if isinstance(value, list):
            # A Terraform block Pulumi renders as a list: the provider sends one item per block (or per call).
            for item in value:
                self.value(path, member, shape, item, dependent)
            return
        if isinstance(shape, MapShape):
            if not isinstance(value, dict):
                self.violation(path, member, value, f"{shape.name} is a map, got {type(value).__name__}")
                return
            self._count(path, member, shape, len(value))
            for key, item in value.items():
                self.value(path, f"{member}<key>", shape.key, key, dependent)
                self.value(path, f"{member}[{key}]", shape.value, item, dependent)
            return
        if isinstance(shape, StructureShape):
            if not isinstance(value, dict):
                self.violation(path, member, value, f"{shape.name} is a structure, got {type(value).__name__}")
                return
            self.structure(path, member, shape, value, dependent, root=False)
            return
        self.report.checked += 1
        for problem in _scalar_rules(shape, value):
            self.violation(path, member, value, problem)

    def _count(self, path: str, member: str, shape: Shape, count: int) -> None:
        meta = shape.metadata
        if "min" in meta and count < meta["min"]:
            self.violation(path, member, count, f"{shape.name} at least {meta['min']} items")
        if "max" in meta and count > meta["max"]:
            self.violation(path, member, count, f"{shape.name} at most {meta['max']} items")

    def structure(self, path: str, member: str, shape: StructureShape, value: Mapping[str, Any], dependent: bool,
                  root: bool, flattened: bool = False) -> None:
        """Check a dict of inputs against a structure; `root`: the resource's top-level inputs."""
        present: set[str] = set()
        for key, item in value.items():
            sub_path = f"{path}.{key}" if path else key
            if sub_path in self.api.not_sent:
                continue
            sub_dependent = dependent or (root and key in self.resource.property_dependencies)
            target = self.locate(sub_path, key, shape, root)
            if target is None:
                self.violation(sub_path, member or "<request>", item,
                               "no API member: map it in aws_api_model.TABLE (members) or say why it is not sent")
                continue
            operation, member_path, member_shape = target
            if member_path == FLATTEN:
                # The block's fields are top-level members of the request (e.g. health_check -> HealthCheck*).
                for flat in (item if isinstance(item, list) else [item]):
                    if isinstance(flat, dict):
                        self.structure(sub_path, "", member_shape, flat, sub_dependent, root=False, flattened=True)
                continue
            if operation == self.api.operations[0] and item is not None:
                present.add(member_path.split(".")[0])
            prefix = f"{member}." if member else (f"{operation}:" if operation != self.api.operations[0] else "")
            self.value(sub_path, prefix + member_path, member_shape, _pair_list(key, item, member_shape), sub_dependent)
        if flattened:
            return
        required = [m for m in shape.required_members if m not in present]
        for name in required:
            key = f"{member}.{name}" if member else name
            how = self.api.supplied.get(key)
            if how is None:
                self.violation(path or "<inputs>", key, None, f"required member {name} of {shape.name} has no input")
            elif how == AUTONAME and root:
                autoname = self.resource.name + AUTONAME_SUFFIX
                self.value(f"<autoname {autoname}>", name, shape.members[name], autoname, False)

    def locate(self, path: str, key: str, shape: StructureShape, root: bool) -> tuple[str, str, Shape] | None:
        """(operation, member path, shape) an input lands on, or None."""
        target = self.api.members.get(path)
        ops = self.api.operations
        if target is not None:
            operation = ops[0]
            if ":" in target:
                operation, target = target.split(":", 1)
            base = operation_model(self.api.service, operation).input_shape if (root or ":" in self.api.members[path]) else shape
            if target == FLATTEN:
                return operation, FLATTEN, base
            name, member_shape = resolve_member(base, target)
            return operation, name, member_shape
        if not root:
            found = member_named(shape, key)
            return (ops[0], found[0], found[1]) if found else None
        for operation in ops:
            found = member_named(operation_model(self.api.service, operation).input_shape, key)
            if found:
                return operation, found[0], found[1]
        return None


PAIR_INPUTS = ("tags", "resourceTags", "dimensions")
"""Pulumi maps the provider sends as a list of {key, value} structures."""
PAIR_MEMBERS = (("Key", "Value"), ("TagKey", "TagValue"), ("Name", "Value"))


def _pair_list(key: str, value: Any, shape: Shape) -> Any:
    """Pulumi's `tags` map becomes AWS's list of {Key, Value} (or {TagKey, TagValue}, ...) where the API takes a list."""
    if key in PAIR_INPUTS and isinstance(value, dict) and isinstance(shape, ListShape) \
            and isinstance(shape.member, StructureShape):
        names = set(shape.member.members)
        for key_name, value_name in PAIR_MEMBERS:
            if {key_name, value_name} <= names:
                return [{key_name: k, value_name: v} for k, v in value.items()]
    return value


def _unknown_marks(rendering: Any, resource: Any) -> tuple[str, ...]:
    """Strings that only a created resource can produce: its dependencies' ids and any ARN of the mock account."""
    from infra.render import ACCOUNT_ID

    marks = {ACCOUNT_ID}
    for urns in resource.property_dependencies.values():
        for urn in urns:
            try:
                dep = rendering.by_urn(urn)
            except LookupError:
                continue
            if dep.id:
                marks.add(dep.id)
    return tuple(sorted(marks))


def check_rendering(rendering: Any, table: Mapping[str, Api | NoApi] | None = None) -> Report:
    """Check every AWS resource of a rendered stack against `table` (default `TABLE`)."""
    table = TABLE if table is None else table
    report = Report()
    default_tags = _provider_default_tags(rendering)
    for resource in rendering.resources:
        if not resource.custom or not (resource.type.startswith("aws:") or resource.type == "pulumi:providers:aws"):
            continue
        report.types_used.add(resource.type)
        entry = table.get(resource.type)
        if entry is None:
            report.types_missing.add(resource.type)
            continue
        if isinstance(entry, NoApi):
            report.types_unmappable.add(resource.type)
            continue
        report.types_mapped.add(resource.type)
        walker = _Walker(rendering.stack, resource, entry, _unknown_marks(rendering, resource), report)
        root = operation_model(entry.service, entry.operations[0]).input_shape
        inputs = dict(resource.inputs)
        provider_tags = default_tags.get((resource.provider or "").rsplit("::", 1)[0], {})
        if provider_tags and isinstance(inputs.get("tags"), dict):
            # The provider merges its default_tags into every resource's tags (tags_all): AWS receives both.
            inputs["tags"] = {**provider_tags, **inputs["tags"]}
        walker.structure("", "", root, inputs, dependent=False, root=True)
    return report


def _provider_default_tags(rendering: Any) -> dict[str, dict[str, str]]:
    """Provider URN -> its `default_tags.tags` (the engine hands provider inputs over as JSON strings)."""
    import json

    found: dict[str, dict[str, str]] = {}
    for resource in rendering.resources:
        if resource.type == "pulumi:providers:aws":
            value = resource.inputs.get("defaultTags")
            if isinstance(value, str):
                value = json.loads(value)
            if isinstance(value, dict) and isinstance(value.get("tags"), dict):
                found[resource.urn] = dict(value["tags"])
    return found


def check_table(table: Mapping[str, Api | NoApi] | None = None) -> list[str]:
    """Every operation and explicit member path of the table exists in the pinned botocore model."""
    table = TABLE if table is None else table
    problems: list[str] = []
    for token, entry in table.items():
        if isinstance(entry, NoApi):
            continue
        for operation in entry.operations:
            try:
                operation_model(entry.service, operation)
            except Exception as exc:  # botocore raises OperationNotFoundError / UnknownServiceError
                problems.append(f"{token}: {entry.service}.{operation}: {exc}")
        for path, target in entry.members.items():
            if ("." in path and ":" not in target) or target.endswith(FLATTEN):
                continue  # nested: relative to a shape only known while walking a value
            operation = entry.operations[0]
            if ":" in target:
                operation, target = target.split(":", 1)
            try:
                resolve_member(operation_model(entry.service, operation).input_shape, target)
            except Exception as exc:
                problems.append(f"{token}: {path} -> {operation}:{target}: {exc}")
    return problems


def iter_types(entries: Iterable[str]) -> list[str]:
    return sorted(set(entries))


# --- the table ---------------------------------------------------------------------------------------------------
# Source of each mapping: the Terraform AWS provider (hashicorp/terraform-provider-aws, MPL-2.0),
# internal/service/<svc>/<file>.go, the resource's Create/Update function and its expand* helpers.

TAGS_NOTE = "tags: the provider sends them in the create call (or Tag*/CreateTags right after)"

TABLE: dict[str, Api | NoApi] = {}


def _api(service: str, operations: str, tf_type: str, source: str, members: Mapping[str, str] | None = None,
         not_sent: Mapping[str, str] | None = None, supplied: Mapping[str, str] | None = None) -> Api:
    return Api(service, tuple(operations.split()), tf_type, source, dict(members or {}), dict(not_sent or {}),
               dict(supplied or {}))


EC2_TAGS = {"tags": "CreateTags:Tags"}
LB_ATTRIBUTE = "ModifyLoadBalancerAttributes: a key/value string attribute (the model has no per-attribute rule)"
# expandIPPermission (internal/service/ec2/vpc_security_group_ingress_rule.go): one rule = one IpPermission. The
# description goes on the IpRange (or the UserIdGroupPair when the rule references a group; same shape rules).
SG_RULE: dict[str, Any] = dict(
    members={"securityGroupId": "GroupId", "ipProtocol": "IpPermissions.IpProtocol", "fromPort": "IpPermissions.FromPort",
             "toPort": "IpPermissions.ToPort", "cidrIpv4": "IpPermissions.IpRanges.CidrIp",
             "referencedSecurityGroupId": "IpPermissions.UserIdGroupPairs.GroupId",
             "description": "IpPermissions.IpRanges.Description", "tags": "TagSpecifications.Tags"})

TABLE.update({
    "pulumi:providers:aws": NoApi("the provider's own configuration (region, credentials, default tags): no AWS request"),
    "aws:acm/certificate:Certificate": _api("acm", "RequestCertificate AddTagsToCertificate", "aws_acm_certificate",
                                            "internal/service/acm/certificate.go"),
    "aws:acm/certificateValidation:CertificateValidation": NoApi(
        "waits for DescribeCertificate to report ISSUED; sends no request members (aws_acm_certificate_validation)"),
    "aws:autoscaling/tag:Tag": _api("autoscaling", "CreateOrUpdateTags", "aws_autoscaling_group_tag",
                                    "internal/service/autoscaling/group_tag.go",
                                    members={"autoscalingGroupName": "Tags.ResourceId", "tag": "Tags"},
                                    supplied={"Tags.ResourceId": "autoscalingGroupName",
                                              "Tags.ResourceType": "provider: auto-scaling-group"}),
    "aws:cloudwatch/logGroup:LogGroup": _api("logs", "CreateLogGroup PutRetentionPolicy", "aws_cloudwatch_log_group",
                                             "internal/service/logs/group.go", members={"name": "logGroupName"}),
    "aws:cloudwatch/logResourcePolicy:LogResourcePolicy": _api("logs", "PutResourcePolicy", "aws_cloudwatch_log_resource_policy",
                                                               "internal/service/logs/resource_policy.go"),
    "aws:cloudwatch/metricAlarm:MetricAlarm": _api("cloudwatch", "PutMetricAlarm", "aws_cloudwatch_metric_alarm",
                                                   "internal/service/cloudwatch/metric_alarm.go",
                                                   supplied={"AlarmName": AUTONAME}),
    "aws:ec2/defaultSecurityGroup:DefaultSecurityGroup": _api("ec2", "AuthorizeSecurityGroupIngress AuthorizeSecurityGroupEgress CreateTags", "aws_default_security_group",
                                                              "internal/service/ec2/vpc_default_security_group.go",
                                                              members={"ingress": "IpPermissions", "egress": "AuthorizeSecurityGroupEgress:IpPermissions",
                                                                       **EC2_TAGS},
                                                              not_sent={"vpcId": "provider: looks up the VPC's default group (DescribeSecurityGroups)"},
                                                              supplied={"GroupId": "provider: the default group's id"}),
    "aws:ec2/eip:Eip": _api("ec2", "AllocateAddress CreateTags", "aws_eip", "internal/service/ec2/ec2_eip.go"),
    "aws:ec2/flowLog:FlowLog": _api("ec2", "CreateFlowLogs CreateTags", "aws_flow_log", "internal/service/ec2/vpc_flow_log.go",
                                    members={"vpcId": "ResourceIds", "iamRoleArn": "DeliverLogsPermissionArn"},
                                    supplied={"ResourceType": "provider: VPC (from vpc_id)"}),
    "aws:ec2/internetGateway:InternetGateway": _api("ec2", "CreateInternetGateway AttachInternetGateway CreateTags", "aws_internet_gateway",
                                                    "internal/service/ec2/vpc_internet_gateway.go"),
    "aws:ec2/launchTemplate:LaunchTemplate": _api("ec2", "CreateLaunchTemplate", "aws_launch_template",
                                                  "internal/service/ec2/ec2_launch_template.go",
                                                  members={"description": "VersionDescription", **{k: f"LaunchTemplateData.{v}" for k, v in {
                                                      "networkInterfaces": "NetworkInterfaces", "metadataOptions": "MetadataOptions",
                                                      "tagSpecifications": "TagSpecifications", "monitoring": "Monitoring",
                                                      "blockDeviceMappings": "BlockDeviceMappings"}.items()}, "tags": "TagSpecifications.Tags",
                                                      "networkInterfaces.securityGroups": "Groups"},
                                                  not_sent={"updateDefaultVersion": "provider: ModifyLaunchTemplate DefaultVersion = latest"},
                                                  supplied={"LaunchTemplateName": AUTONAME, "LaunchTemplateData": "the inputs under LaunchTemplateData"}),
    "aws:ec2/natGateway:NatGateway": _api("ec2", "CreateNatGateway CreateTags", "aws_nat_gateway", "internal/service/ec2/vpc_nat_gateway.go"),
    "aws:ec2/route:Route": _api("ec2", "CreateRoute", "aws_route", "internal/service/ec2/vpc_route.go"),
    "aws:ec2/routeTable:RouteTable": _api("ec2", "CreateRouteTable CreateTags", "aws_route_table", "internal/service/ec2/vpc_route_table.go"),
    "aws:ec2/routeTableAssociation:RouteTableAssociation": _api("ec2", "AssociateRouteTable", "aws_route_table_association",
                                                                "internal/service/ec2/vpc_route_table_association.go"),
    "aws:ec2/securityGroup:SecurityGroup": _api("ec2", "CreateSecurityGroup CreateTags", "aws_security_group",
                                                "internal/service/ec2/vpc_security_group.go",
                                                supplied={"GroupName": AUTONAME}),
    "aws:ec2/subnet:Subnet": _api("ec2", "CreateSubnet ModifySubnetAttribute CreateTags", "aws_subnet", "internal/service/ec2/vpc_subnet.go",
                                  members={"mapPublicIpOnLaunch": "ModifySubnetAttribute:MapPublicIpOnLaunch.Value"}),
    "aws:ec2/vpc:Vpc": _api("ec2", "CreateVpc CreateTags", "aws_vpc", "internal/service/ec2/vpc_.go",
                            members={"enableDnsSupport": "ModifyVpcAttribute:EnableDnsSupport.Value",
                                     "enableDnsHostnames": "ModifyVpcAttribute:EnableDnsHostnames.Value"}),
    "aws:ec2/vpcEndpoint:VpcEndpoint": _api("ec2", "CreateVpcEndpoint CreateTags", "aws_vpc_endpoint", "internal/service/ec2/vpc_endpoint.go"),
    "aws:ec2/vpcPeeringConnection:VpcPeeringConnection": _api("ec2", "CreateVpcPeeringConnection CreateTags", "aws_vpc_peering_connection",
                                                              "internal/service/ec2/vpc_peering_connection.go",
                                                              not_sent={"autoAccept": "provider: calls AcceptVpcPeeringConnection when true"}),
    "aws:ec2/vpcPeeringConnectionAccepter:VpcPeeringConnectionAccepter": _api("ec2", "AcceptVpcPeeringConnection CreateTags", "aws_vpc_peering_connection_accepter",
                                                                              "internal/service/ec2/vpc_peering_connection_accepter.go",
                                                                              not_sent={"autoAccept": "provider: calls AcceptVpcPeeringConnection when true"}),
    "aws:ecr/lifecyclePolicy:LifecyclePolicy": _api("ecr", "PutLifecyclePolicy", "aws_ecr_lifecycle_policy", "internal/service/ecr/lifecycle_policy.go",
                                                    members={"repository": "repositoryName", "policy": "lifecyclePolicyText"}),
    "aws:ecr/replicationConfiguration:ReplicationConfiguration": _api("ecr", "PutReplicationConfiguration", "aws_ecr_replication_configuration",
                                                                      "internal/service/ecr/replication_configuration.go"),
    "aws:ecr/repository:Repository": _api("ecr", "CreateRepository", "aws_ecr_repository", "internal/service/ecr/repository.go",
                                          members={"name": "repositoryName", "encryptionConfigurations": "encryptionConfiguration"},
                                          not_sent={"forceDelete": "provider: DeleteRepository force flag"}),
    "aws:ecr/repositoryCreationTemplate:RepositoryCreationTemplate": _api("ecr", "CreateRepositoryCreationTemplate", "aws_ecr_repository_creation_template",
                                                                          "internal/service/ecr/repository_creation_template.go",
                                                                          members={"appliedFors": "appliedFor",
                                                                                   "encryptionConfigurations": "encryptionConfiguration"}),
    "aws:eks/accessEntry:AccessEntry": _api("eks", "CreateAccessEntry", "aws_eks_access_entry", "internal/service/eks/access_entry.go"),
    "aws:eks/accessPolicyAssociation:AccessPolicyAssociation": _api("eks", "AssociateAccessPolicy", "aws_eks_access_policy_association",
                                                                    "internal/service/eks/access_policy_association.go"),
    "aws:eks/addon:Addon": _api("eks", "CreateAddon", "aws_eks_addon", "internal/service/eks/addon.go",
                                members={"resolveConflictsOnCreate": "resolveConflicts", "resolveConflictsOnUpdate": "UpdateAddon:resolveConflicts"}),
    "aws:eks/cluster:Cluster": _api("eks", "CreateCluster", "aws_eks_cluster", "internal/service/eks/cluster.go",
                                    members={"vpcConfig": "resourcesVpcConfig", "enabledClusterLogTypes": "logging.clusterLogging.types"}),
    "aws:eks/nodeGroup:NodeGroup": _api("eks", "CreateNodegroup", "aws_eks_node_group", "internal/service/eks/node_group.go",
                                        members={"nodeGroupNamePrefix": "nodegroupName", "nodeRoleArn": "nodeRole", "subnetIds": "subnets"}),
    "aws:elasticache/globalReplicationGroup:GlobalReplicationGroup": _api("elasticache", "CreateGlobalReplicationGroup", "aws_elasticache_global_replication_group",
                                                                          "internal/service/elasticache/global_replication_group.go"),
    "aws:elasticache/parameterGroup:ParameterGroup": _api("elasticache", "CreateCacheParameterGroup ModifyCacheParameterGroup", "aws_elasticache_parameter_group",
                                                          "internal/service/elasticache/parameter_group.go",
                                                          members={"family": "CacheParameterGroupFamily", "parameters": "ModifyCacheParameterGroup:ParameterNameValues",
                                                                   "parameters.name": "ParameterName", "parameters.value": "ParameterValue"},
                                                          supplied={"CacheParameterGroupName": AUTONAME}),
    "aws:elasticache/replicationGroup:ReplicationGroup": _api("elasticache", "CreateReplicationGroup ModifyReplicationGroup DeleteReplicationGroup", "aws_elasticache_replication_group",
                                                              "internal/service/elasticache/replication_group.go",
                                                              members={"description": "ReplicationGroupDescription", "nodeType": "CacheNodeType",
                                                                       "parameterGroupName": "CacheParameterGroupName", "subnetGroupName": "CacheSubnetGroupName",
                                                                       "maintenanceWindow": "PreferredMaintenanceWindow", "numNodeGroups": "NumNodeGroups",
                                                                       "logDeliveryConfigurations.destination": "DestinationDetails.CloudWatchLogsDetails.LogGroup"},
                                                              supplied={"ReplicationGroupId": AUTONAME}),
    "aws:elasticache/subnetGroup:SubnetGroup": _api("elasticache", "CreateCacheSubnetGroup", "aws_elasticache_subnet_group",
                                                    "internal/service/elasticache/subnet_group.go",
                                                    members={"description": "CacheSubnetGroupDescription"},
                                                    supplied={"CacheSubnetGroupName": AUTONAME}),
    "aws:iam/openIdConnectProvider:OpenIdConnectProvider": _api("iam", "CreateOpenIDConnectProvider", "aws_iam_openid_connect_provider",
                                                                "internal/service/iam/openid_connect_provider.go",
                                                                members={"clientIdLists": "ClientIDList"}),
    "aws:iam/policy:Policy": _api("iam", "CreatePolicy", "aws_iam_policy", "internal/service/iam/policy.go",
                                  members={"name": "PolicyName", "policy": "PolicyDocument"}, supplied={"PolicyName": AUTONAME}),
    # The provider tags the role after creating it (CreateServiceLinkedRole takes no tags): TagRole.
    "aws:iam/serviceLinkedRole:ServiceLinkedRole": _api("iam", "CreateServiceLinkedRole TagRole", "aws_iam_service_linked_role",
                                                        "internal/service/iam/service_linked_role.go",
                                                        members={"tags": "TagRole:Tags"}),
    "aws:iam/role:Role": _api("iam", "CreateRole", "aws_iam_role", "internal/service/iam/role.go",
                              members={"name": "RoleName", "assumeRolePolicy": "AssumeRolePolicyDocument"},
                              supplied={"RoleName": AUTONAME}),
    "aws:iam/rolePolicy:RolePolicy": _api("iam", "PutRolePolicy", "aws_iam_role_policy", "internal/service/iam/role_policy.go",
                                          members={"role": "RoleName", "policy": "PolicyDocument"}, supplied={"PolicyName": AUTONAME}),
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment": _api("iam", "AttachRolePolicy", "aws_iam_role_policy_attachment",
                                                              "internal/service/iam/role_policy_attachment.go",
                                                              members={"role": "RoleName"}),
    "aws:kms/alias:Alias": _api("kms", "CreateAlias", "aws_kms_alias", "internal/service/kms/alias.go", members={"name": "AliasName"}),
    "aws:kms/key:Key": _api("kms", "CreateKey ScheduleKeyDeletion EnableKeyRotation", "aws_kms_key", "internal/service/kms/key.go",
                            members={"deletionWindowInDays": "ScheduleKeyDeletion:PendingWindowInDays"},
                            not_sent={"enableKeyRotation": "provider: calls EnableKeyRotation (KeyId only) when true",
                                      "bypassPolicyLockoutSafetyCheck": "CreateKey BypassPolicyLockoutSafetyCheck (boolean)"}),
    "aws:lb/listener:Listener": _api("elbv2", "CreateListener", "aws_lb_listener", "internal/service/elbv2/listener.go",
                                     members={"defaultActions": "DefaultActions", "certificateArn": "Certificates.CertificateArn",
                                              "defaultActions.redirect": "RedirectConfig", "defaultActions.forward": "ForwardConfig",
                                              "defaultActions.fixedResponse": "FixedResponseConfig"}),
    "aws:lb/listenerCertificate:ListenerCertificate": _api("elbv2", "AddListenerCertificates", "aws_lb_listener_certificate",
                                                           "internal/service/elbv2/listener_certificate.go",
                                                           members={"certificateArn": "Certificates.CertificateArn"}),
    "aws:lb/loadBalancer:LoadBalancer": _api("elbv2", "CreateLoadBalancer", "aws_lb", "internal/service/elbv2/load_balancer.go",
                                             members={"loadBalancerType": "Type"},
                                             not_sent={"internal": "provider: Scheme internal / internet-facing (both in the enum)",
                                                       **{k: LB_ATTRIBUTE for k in ("accessLogs", "desyncMitigationMode", "dropInvalidHeaderFields",
                                                                                    "enableDeletionProtection", "enableHttp2", "enableWafFailOpen",
                                                                                    "idleTimeout")}},
                                             supplied={"Name": AUTONAME}),
    "aws:lb/targetGroup:TargetGroup": _api("elbv2", "CreateTargetGroup", "aws_lb_target_group", "internal/service/elbv2/target_group.go",
                                           members={"healthCheck": FLATTEN, **{f"healthCheck.{k}": f"CreateTargetGroup:{v}" for k, v in {
                                               "enabled": "HealthCheckEnabled", "path": "HealthCheckPath", "port": "HealthCheckPort",
                                               "protocol": "HealthCheckProtocol", "interval": "HealthCheckIntervalSeconds",
                                               "timeout": "HealthCheckTimeoutSeconds", "healthyThreshold": "HealthyThresholdCount",
                                               "unhealthyThreshold": "UnhealthyThresholdCount", "matcher": "Matcher.HttpCode"}.items()}},
                                           not_sent={k: LB_ATTRIBUTE.replace("LoadBalancer", "TargetGroup") for k in (
                                               "deregistrationDelay", "loadBalancingAlgorithmType")},
                                           supplied={"Name": AUTONAME}),
    "aws:rds/instance:Instance": _api("rds", "CreateDBInstance ModifyDBInstance DeleteDBInstance", "aws_db_instance", "internal/service/rds/instance.go",
                                      members={"identifier": "DBInstanceIdentifier", "instanceClass": "DBInstanceClass", "username": "MasterUsername",
                                               "password": "MasterUserPassword", "backupWindow": "PreferredBackupWindow",
                                               "maintenanceWindow": "PreferredMaintenanceWindow", "parameterGroupName": "DBParameterGroupName",
                                               "iamDatabaseAuthenticationEnabled": "EnableIAMDatabaseAuthentication",
                                               "performanceInsightsEnabled": "EnablePerformanceInsights",
                                               "enabledCloudwatchLogsExports": "EnableCloudwatchLogsExports",
                                               "finalSnapshotIdentifier": "DeleteDBInstance:FinalDBSnapshotIdentifier",
                                               "replicateSourceDb": "CreateDBInstanceReadReplica:SourceDBInstanceIdentifier"},
                                      supplied={"Engine": "read replicas (replicate_source_db, CreateDBInstanceReadReplica): the source's engine"}),
    "aws:rds/parameterGroup:ParameterGroup": _api("rds", "CreateDBParameterGroup ModifyDBParameterGroup", "aws_db_parameter_group",
                                                  "internal/service/rds/parameter_group.go",
                                                  members={"family": "DBParameterGroupFamily", "parameters": "ModifyDBParameterGroup:Parameters",
                                                           "parameters.name": "ParameterName", "parameters.value": "ParameterValue"},
                                                  supplied={"DBParameterGroupName": AUTONAME}),
    "aws:rds/subnetGroup:SubnetGroup": _api("rds", "CreateDBSubnetGroup", "aws_db_subnet_group", "internal/service/rds/subnet_group.go",
                                            members={"description": "DBSubnetGroupDescription"}, supplied={"DBSubnetGroupName": AUTONAME}),
    "aws:route53/healthCheck:HealthCheck": _api("route53", "CreateHealthCheck ChangeTagsForResource", "aws_route53_health_check",
                                                "internal/service/route53/health_check.go",
                                                members={**{k: f"HealthCheckConfig.{v}" for k, v in {
                                                    "requestInterval": "RequestInterval", "enableSni": "EnableSNI", "type": "Type",
                                                    "failureThreshold": "FailureThreshold", "resourcePath": "ResourcePath",
                                                    "fqdn": "FullyQualifiedDomainName", "measureLatency": "MeasureLatency", "port": "Port"}.items()},
                                                    "tags": "ChangeTagsForResource:AddTags"},
                                                supplied={"CallerReference": "provider: a unique id per create"}),
    "aws:route53/record:Record": _api("route53", "ChangeResourceRecordSets", "aws_route53_record", "internal/service/route53/record.go",
                                      members={"zoneId": "HostedZoneId", **{k: f"ChangeBatch.Changes.ResourceRecordSet.{v}" for k, v in {
                                          "type": "Type", "ttl": "TTL", "records": "ResourceRecords.Value", "name": "Name",
                                          "aliases": "AliasTarget", "setIdentifier": "SetIdentifier",
                                          "geolocationRoutingPolicies": "GeoLocation", "healthCheckId": "HealthCheckId",
                                          }.items()},
                                          "latencyRoutingPolicies": "ChangeBatch.Changes.ResourceRecordSet",
                                          "aliases.name": "DNSName", "aliases.zoneId": "HostedZoneId",
                                          "geolocationRoutingPolicies.continent": "ContinentCode",
                                          "geolocationRoutingPolicies.country": "CountryCode",
                                          "geolocationRoutingPolicies.subdivision": "SubdivisionCode"},
                                      not_sent={"allowOverwrite": "provider: UPSERT instead of CREATE"},
                                      supplied={"ChangeBatch": "the inputs under ChangeBatch",
                                                **{f"ChangeBatch.Changes.ResourceRecordSet.{m}": "the name and type inputs" for m in ("Name", "Type")}}),
    "aws:route53/zone:Zone": _api("route53", "CreateHostedZone ChangeTagsForResource", "aws_route53_zone", "internal/service/route53/zone.go",
                                  members={"comment": "HostedZoneConfig.Comment", "vpcs": "AssociateVPCWithHostedZone:VPC", "tags": "ChangeTagsForResource:AddTags"},
                                  supplied={"CallerReference": "provider: a unique id per create"}),
    "aws:s3/bucket:Bucket": _api("s3", "CreateBucket PutBucketTagging", "aws_s3_bucket", "internal/service/s3/bucket.go",
                                 members={"tags": "PutBucketTagging:Tagging.TagSet"},
                                 not_sent={"forceDestroy": "provider: empties the bucket before DeleteBucket"},
                                 supplied={"Bucket": AUTONAME}),
    "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration": _api("s3", "PutBucketLifecycleConfiguration", "aws_s3_bucket_lifecycle_configuration",
                                                                             "internal/service/s3/bucket_lifecycle_configuration.go",
                                                                             members={"rules": "LifecycleConfiguration.Rules"}),
    "aws:s3/bucketOwnershipControls:BucketOwnershipControls": _api("s3", "PutBucketOwnershipControls", "aws_s3_bucket_ownership_controls",
                                                                   "internal/service/s3/bucket_ownership_controls.go",
                                                                   members={"rule": "OwnershipControls.Rules"}),
    "aws:s3/bucketLogging:BucketLogging": _api("s3", "PutBucketLogging", "aws_s3_bucket_logging", "internal/service/s3/bucket_logging.go",
                                               members={"targetBucket": "BucketLoggingStatus.LoggingEnabled.TargetBucket",
                                                        "targetPrefix": "BucketLoggingStatus.LoggingEnabled.TargetPrefix",
                                                        "targetObjectKeyFormat": "BucketLoggingStatus.LoggingEnabled.TargetObjectKeyFormat"}),
    "aws:s3/bucketPolicy:BucketPolicy": _api("s3", "PutBucketPolicy", "aws_s3_bucket_policy", "internal/service/s3/bucket_policy.go"),
    "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock": _api("s3", "PutPublicAccessBlock", "aws_s3_bucket_public_access_block",
                                                                   "internal/service/s3/bucket_public_access_block.go",
                                                                   members={k: f"PublicAccessBlockConfiguration.{k[0].upper()}{k[1:]}" for k in (
                                                                       "blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")},
                                                                   supplied={"PublicAccessBlockConfiguration": "the four block/ignore/restrict inputs"}),
    "aws:s3/bucketReplicationConfig:BucketReplicationConfig": _api("s3", "PutBucketReplication", "aws_s3_bucket_replication_configuration",
                                                                   "internal/service/s3/bucket_replication_configuration.go",
                                                                   members={"rules": "ReplicationConfiguration.Rules", "role": "ReplicationConfiguration.Role"},
                                                                   supplied={"ReplicationConfiguration": "rules and role"}),
    "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration": _api(
        "s3", "PutBucketEncryption", "aws_s3_bucket_server_side_encryption_configuration",
        "internal/service/s3/bucket_server_side_encryption_configuration.go",
        members={"rules": "ServerSideEncryptionConfiguration.Rules"}, supplied={"ServerSideEncryptionConfiguration": "rules"}),
    "aws:s3/bucketVersioning:BucketVersioning": _api("s3", "PutBucketVersioning", "aws_s3_bucket_versioning",
                                                     "internal/service/s3/bucket_versioning.go"),
    "aws:secretsmanager/secret:Secret": _api("secretsmanager", "CreateSecret DeleteSecret", "aws_secretsmanager_secret",
                                             "internal/service/secretsmanager/secret.go",
                                             members={"replicas": "AddReplicaRegions"}, supplied={"Name": AUTONAME}),
    "aws:secretsmanager/secretVersion:SecretVersion": _api("secretsmanager", "PutSecretValue", "aws_secretsmanager_secret_version",
                                                           "internal/service/secretsmanager/secret_version.go"),
    "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule": _api("ec2", "AuthorizeSecurityGroupEgress", "aws_vpc_security_group_egress_rule",
                                                                    "internal/service/ec2/vpc_security_group_egress_rule.go",
                                                                    **SG_RULE),
    "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule": _api("ec2", "AuthorizeSecurityGroupIngress", "aws_vpc_security_group_ingress_rule",
                                                                      "internal/service/ec2/vpc_security_group_ingress_rule.go",
                                                                      **SG_RULE),
    "aws:wafv2/webAcl:WebAcl": _api("wafv2", "CreateWebACL", "aws_wafv2_web_acl", "internal/service/wafv2/web_acl.go",
                                    supplied={"Name": AUTONAME}),
    "aws:wafv2/webAclAssociation:WebAclAssociation": _api("wafv2", "AssociateWebACL", "aws_wafv2_web_acl_association",
                                                          "internal/service/wafv2/web_acl_association.go",
                                                          members={"webAclArn": "WebACLArn"}),
    "aws:wafv2/webAclLoggingConfiguration:WebAclLoggingConfiguration": _api("wafv2", "PutLoggingConfiguration", "aws_wafv2_web_acl_logging_configuration",
                                                                            "internal/service/wafv2/web_acl_logging_configuration.go",
                                                                            members={k: f"LoggingConfiguration.{v}" for k, v in {
                                                                                "resourceArn": "ResourceArn", "redactedFields": "RedactedFields",
                                                                                "logDestinationConfigs": "LogDestinationConfigs", "loggingFilter": "LoggingFilter"}.items()},
                                                                            supplied={"LoggingConfiguration": "the inputs under LoggingConfiguration"}),
})

"""Render a stack offline: run the real Pulumi program under Pulumi's mocks.

One harness for the CLI (`python -m infra.cli plan`) and for the tests. The program, the stack config file and the
components are the ones `pulumi up` runs; only the engine is replaced by a mock monitor that records every resource
registration and answers with realistic outputs (ids, ARNs, endpoints, AZ lists) so dependent resources resolve.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pulumi
import yaml
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime.stack import wait_for_rpcs

PROJECT = "llm-platform"
ROOT_DIR = Path(__file__).resolve().parent.parent
STACKS_DIR = ROOT_DIR / "stacks"
ACCOUNT_ID = "123456789012"
SECRET_SIG = {"4dabf18193072939515e22adb298388d": "1b47061264138c4ac30d75fd1eb44270"}
SECRET_MARK = "[secret]"

# Per-region zones as DescribeAvailabilityZones reports them to one account: (name, zone id, opt-in status). Names
# map to IDs differently in every account; the IDs, the opted-in Local Zone sorting first by name, and the zone
# EKS refuses (use1-az3, usw1-az2, cac1-az3) are what the program's AZ choice must get right.
REGION_ZONES: dict[str, list[tuple[str, str, str]]] = {
    "us-east-1": [("us-east-1-bos-1a", "use1-bos1-az1", "opted-in"), ("us-east-1a", "use1-az4", "opt-in-not-required"),
                  ("us-east-1b", "use1-az3", "opt-in-not-required"), ("us-east-1c", "use1-az6", "opt-in-not-required"),
                  ("us-east-1d", "use1-az1", "opt-in-not-required"), ("us-east-1e", "use1-az2", "opt-in-not-required"),
                  ("us-east-1f", "use1-az5", "opt-in-not-required")],
    "us-east-2": [("us-east-2a", "use2-az1", "opt-in-not-required"), ("us-east-2b", "use2-az2", "opt-in-not-required"),
                  ("us-east-2c", "use2-az3", "opt-in-not-required")],
    "us-west-1": [("us-west-1a", "usw1-az2", "opt-in-not-required"), ("us-west-1b", "usw1-az1", "opt-in-not-required"),
                  ("us-west-1c", "usw1-az3", "opt-in-not-required")],
    "us-west-2": [("us-west-2-lax-1a", "usw2-lax1-az1", "opted-in"), ("us-west-2a", "usw2-az2", "opt-in-not-required"),
                  ("us-west-2b", "usw2-az1", "opt-in-not-required"), ("us-west-2c", "usw2-az3", "opt-in-not-required"),
                  ("us-west-2d", "usw2-az4", "opt-in-not-required")],
    "ca-central-1": [("ca-central-1a", "cac1-az1", "opt-in-not-required"), ("ca-central-1b", "cac1-az2", "opt-in-not-required"),
                     ("ca-central-1d", "cac1-az4", "opt-in-not-required")],
    "eu-west-1": [("eu-west-1a", "euw1-az3", "opt-in-not-required"), ("eu-west-1b", "euw1-az1", "opt-in-not-required"),
                  ("eu-west-1c", "euw1-az2", "opt-in-not-required")],
    "eu-central-1": [("eu-central-1a", "euc1-az2", "opt-in-not-required"), ("eu-central-1b", "euc1-az3", "opt-in-not-required"),
                     ("eu-central-1c", "euc1-az1", "opt-in-not-required")],
    "ap-northeast-1": [("ap-northeast-1a", "apne1-az4", "opt-in-not-required"), ("ap-northeast-1c", "apne1-az1", "opt-in-not-required"),
                       ("ap-northeast-1d", "apne1-az2", "opt-in-not-required")],
    "ap-southeast-1": [("ap-southeast-1a", "apse1-az1", "opt-in-not-required"), ("ap-southeast-1b", "apse1-az2", "opt-in-not-required"),
                       ("ap-southeast-1c", "apse1-az3", "opt-in-not-required")],
    "ap-southeast-2": [("ap-southeast-2a", "apse2-az1", "opt-in-not-required"), ("ap-southeast-2b", "apse2-az3", "opt-in-not-required"),
                       ("ap-southeast-2c", "apse2-az2", "opt-in-not-required")],
}
# Zones (by name) lacking an instance type that the region's other regular zones offer: GPU types are offered in
# few zones (the pattern `aws ec2 describe-instance-type-offerings --location-type availability-zone` shows).
# Local Zones offer only a few general-purpose types (LOCAL_ZONE_TYPES).
NOT_OFFERED_IN: dict[str, dict[str, set[str]]] = {
    "us-east-1": {"g5.xlarge": {"us-east-1e"}, "g5.2xlarge": {"us-east-1e"},
                  "p4d.24xlarge": {"us-east-1a", "us-east-1b", "us-east-1c", "us-east-1e"},
                  "p4de.24xlarge": {"us-east-1a", "us-east-1b", "us-east-1c", "us-east-1e"}},
    "eu-west-1": {"p4d.24xlarge": {"eu-west-1b", "eu-west-1c"}},
    "ap-northeast-1": {"p4d.24xlarge": {"ap-northeast-1a", "ap-northeast-1d"}},
}
LOCAL_ZONE_TYPES = {"t3.medium", "t3.large", "t3.xlarge", "c5.2xlarge", "r5.2xlarge"}
DEFAULT_REGION = "us-east-1"
# Who runs `pulumi up` under the mocks: CI's deploy role (with a path, as SSO and many org roles have), assumed.
DEPLOYER_ROLE_NAME = "llm-platform-ci-deploy"
DEPLOYER_ROLE_PATH = "/ci/"
DEPLOYER_SESSION = "GitHubActions"
DEPLOYER_SESSION_ARN = f"arn:aws:sts::{ACCOUNT_ID}:assumed-role/{DEPLOYER_ROLE_NAME}/{DEPLOYER_SESSION}"
DEPLOYER_ROLE_ARN = f"arn:aws:iam::{ACCOUNT_ID}:role{DEPLOYER_ROLE_PATH}{DEPLOYER_ROLE_NAME}"


class RenderError(Exception):
    """The program could not be rendered (a bug or an invalid stack), with a one-line reason."""


@dataclass(frozen=True)
class RenderedResource:
    urn: str
    type: str
    name: str
    parent: str | None
    provider: str | None
    inputs: dict[str, Any]
    custom: bool
    id: str | None = None
    """The physical id the mocks assigned (what other resources receive when they reference this one)."""
    # Input name -> URNs of the resources its value came from (what the engine hands policies as
    # property_dependencies): how a stack policy links a FlowLog to its Vpc without knowing the Vpc's id.
    property_dependencies: dict[str, list[str]] = field(default_factory=dict)
    dependencies: list[str] = field(default_factory=list)
    """Every URN the engine makes this resource wait for: its `depends_on` (components expanded to their
    children by the SDK), the resources its inputs came from, and its explicit provider."""
    custom_timeouts: dict[str, str] = field(default_factory=dict)
    """The `custom_timeouts` resource option as the engine receives it (`create`/`update`/`delete`, Go durations)."""
    delete_before_replace: bool = False
    """The `delete_before_replace` resource option (a fixed physical name cannot be replaced create-first)."""

    def to_json(self) -> dict[str, Any]:
        return {
            "urn": self.urn,
            "type": self.type,
            "name": self.name,
            "parent": self.parent,
            "provider": self.provider,
            "dependencies": self.dependencies,
            "inputs": mask_secrets(self.inputs),
        }


@dataclass
class Rendering:
    stack: str
    resources: list[RenderedResource]
    outputs: dict[str, Any]
    secret_outputs: set[str] = field(default_factory=set)
    generated_secrets: list[str] = field(default_factory=list)

    def of_type(self, type_token: str) -> list[RenderedResource]:
        return [r for r in self.resources if r.type == type_token]

    def one(self, type_token: str, name_contains: str = "") -> RenderedResource:
        found = [r for r in self.of_type(type_token) if name_contains in r.name]
        if len(found) != 1:
            raise LookupError(f"expected one {type_token} named *{name_contains}*, found {[r.name for r in found]}")
        return found[0]

    def by_urn(self, urn: str) -> RenderedResource:
        for r in self.resources:
            if r.urn == urn:
                return r
        raise LookupError(urn)

    def waits_for(self, resource: RenderedResource) -> set[str]:
        """URNs `resource` waits for, directly or through what it waits for (the engine's create order)."""
        by_urn = {r.urn: r for r in self.resources}
        seen: set[str] = set()
        todo = list(resource.dependencies)
        while todo:
            urn = todo.pop()
            if urn in seen:
                continue
            seen.add(urn)
            if urn in by_urn:
                todo.extend(by_urn[urn].dependencies)
        return seen

    def public_outputs(self) -> dict[str, Any]:
        return {k: (SECRET_MARK if k in self.secret_outputs else mask_secrets(v)) for k, v in self.outputs.items()}

    def region_of(self, resource: RenderedResource) -> str | None:
        """The AWS region a resource is deployed to, read from its explicit provider."""
        if not resource.provider:
            return None
        provider_urn = resource.provider.rsplit("::", 1)[0]  # "<provider urn>::<provider id>"
        for r in self.resources:
            if r.urn == provider_urn and r.type == "pulumi:providers:aws":
                region = r.inputs.get("region")
                return str(region) if region is not None else None
        return None


def is_secret(value: Any) -> bool:
    return isinstance(value, dict) and all(value.get(k) == v for k, v in SECRET_SIG.items())


def mask_secrets(value: Any) -> Any:
    if is_secret(value):
        return SECRET_MARK
    if isinstance(value, dict):
        return {k: mask_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_secrets(v) for v in value]
    return value


def unwrap_secrets(value: Any) -> Any:
    if is_secret(value):
        return unwrap_secrets(value.get("value"))
    if isinstance(value, dict):
        return {k: unwrap_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [unwrap_secrets(v) for v in value]
    return value


def _short_hash(*parts: str) -> str:
    return hashlib.sha256("/".join(parts).encode()).hexdigest()[:17]


@dataclass
class MockAccount:
    """What already exists in the account before the program runs. Default: a fresh account (nothing)."""

    roles: dict[str, dict[str, str]] = field(default_factory=dict)
    """IAM role path+name after `role/` (e.g. `aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling`) -> tags."""
    node_groups: dict[str, dict[str, dict[str, int]]] = field(default_factory=dict)
    """Cluster name -> node group name -> running scalingConfig (minSize, maxSize, desiredSize)."""


class PlatformMocks(pulumi_mocks.Mocks):
    """Answers resource registrations and invokes the way AWS and the providers would."""

    def __init__(self, account: MockAccount | None = None) -> None:
        self.provider_regions: dict[str, str] = {}
        self.generated_secrets: list[str] = []
        self.account = account or MockAccount()

    def _region(self, provider: str | None) -> str:
        if provider:
            return self.provider_regions.get(provider.rsplit("::", 1)[-1], DEFAULT_REGION)
        return DEFAULT_REGION

    @staticmethod
    def zones(region: str) -> list[tuple[str, str, str]]:
        default = [(f"{region}{x}", f"{region[:2]}{region.split('-')[1][0]}{region[-1]}-az{i + 1}", "opt-in-not-required")
                   for i, x in enumerate("abc")]
        return list(REGION_ZONES.get(region, default))

    # --- invokes -----------------------------------------------------------------------------------------
    def call(self, args: pulumi_mocks.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        token, a = args.token, args.args
        region = self._region(args.provider)
        if token == "aws:index/getAvailabilityZones:getAvailabilityZones":
            zones = self.zones(region)
            # What the provider sends DescribeAvailabilityZones, and what it filters after the call.
            for f in a.get("filters") or []:
                field = {"opt-in-status": 2, "zone-name": 0, "zone-id": 1}.get(str(f.get("name")))
                if field is None:
                    raise RenderError(f"mock getAvailabilityZones: unsupported filter {f.get('name')!r}")
                zones = [z for z in zones if z[field] in (f.get("values") or [])]
            zones = [z for z in zones if z[0] not in (a.get("excludeNames") or []) and z[1] not in (a.get("excludeZoneIds") or [])]
            zones.sort(key=lambda z: z[0])
            return {"names": [z[0] for z in zones], "zoneIds": [z[1] for z in zones], "id": region,
                    "state": a.get("state", "available")}, []
        if token == "aws:ec2/getInstanceTypeOfferings:getInstanceTypeOfferings":
            if a.get("locationType") != "availability-zone":
                raise RenderError(f"mock getInstanceTypeOfferings: locationType {a.get('locationType')!r} not modelled")
            wanted = {str(f.get("name")): set(f.get("values") or []) for f in a.get("filters") or []}
            offers = [(t, name) for name, _, opt_in in self.zones(region)
                      for t in sorted(wanted.get("instance-type", set()))
                      if name in wanted.get("location", {name})
                      and (t in LOCAL_ZONE_TYPES if opt_in != "opt-in-not-required" else name not in NOT_OFFERED_IN.get(region, {}).get(t, set()))]
            return {"instanceTypes": [t for t, _ in offers], "locations": [n for _, n in offers],
                    "locationTypes": ["availability-zone"] * len(offers), "id": region}, []
        if token == "aws:index/getCallerIdentity:getCallerIdentity":
            # The deploy job's credentials, as STS reports them: an assumed-role session, not the IAM role itself.
            return {"accountId": ACCOUNT_ID, "arn": DEPLOYER_SESSION_ARN, "userId": f"AROAMOCK:{DEPLOYER_SESSION}",
                    "id": ACCOUNT_ID}, []
        if token == "aws:iam/getSessionContext:getSessionContext":
            arn = str(a.get("arn", ""))
            issuer = arn
            if ":assumed-role/" in arn:
                role, session = arn.split(":assumed-role/", 1)[1].split("/", 1)
                issuer = f"arn:aws:iam::{arn.split(':')[4]}:role{DEPLOYER_ROLE_PATH}{role}"
                return {"arn": arn, "issuerArn": issuer, "issuerId": "AROAMOCK", "issuerName": role,
                        "sessionName": session, "id": arn}, []
            return {"arn": arn, "issuerArn": issuer, "issuerId": "", "issuerName": "", "sessionName": "", "id": arn}, []
        if token == "aws:iam/getRoles:getRoles":
            prefix = str(a.get("pathPrefix") or "/")
            pattern = re.compile(str(a.get("nameRegex") or ".*"))
            paths = [p for p in self.account.roles if ("/" + p).startswith(prefix) and pattern.search(p.rsplit("/", 1)[-1])]
            return {"arns": [f"arn:aws:iam::{ACCOUNT_ID}:role/{p}" for p in paths], "names": [p.rsplit("/", 1)[-1] for p in paths],
                    "id": "roles"}, []
        if token == "aws:iam/getRole:getRole":
            name = str(a.get("name"))
            for path, tags in self.account.roles.items():
                if path.rsplit("/", 1)[-1] == name:
                    return {"arn": f"arn:aws:iam::{ACCOUNT_ID}:role/{path}", "name": name, "tags": dict(tags), "id": name,
                            "path": "/" + path.rsplit("/", 1)[0] + "/" if "/" in path else "/"}, []
            raise RenderError(f"mock getRole: no role {name!r} (the real invoke fails the same way)")
        if token == "aws:index/getPartition:getPartition":
            return {"partition": "aws", "dnsSuffix": "amazonaws.com", "id": "aws"}, []
        if token == "aws:index/getRegion:getRegion":
            return {"name": region, "region": region, "id": region, "endpoint": f"ec2.{region}.amazonaws.com"}, []
        if token == "aws:route53/getZone:getZone":
            zone = str(a.get("name", "example.com")).rstrip(".")
            return {"zoneId": "Z" + _short_hash(zone)[:12].upper(), "name": zone, "id": "Z" + _short_hash(zone)[:12].upper()}, []
        if token == "aws:eks/getClusterAuth:getClusterAuth":
            return {"name": a.get("name"), "token": "k8s-aws-v1.mock", "id": a.get("name")}, []
        return {}, []

    # --- resources ---------------------------------------------------------------------------------------
    def new_resource(self, args: pulumi_mocks.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        if not args.custom:
            return "", {}
        typ, name, inputs = args.typ, args.name, dict(args.inputs)
        if typ.startswith("pulumi:providers:"):
            rid = f"{name}-provider-id"
            if typ == "pulumi:providers:aws":
                self.provider_regions[rid] = str(inputs.get("region") or DEFAULT_REGION)
            return rid, inputs
        region = self._region(args.provider)
        h = _short_hash(typ, name, region)
        service = typ.split(":")[1].split("/")[0]
        arn = f"arn:aws:{service}:{region}:{ACCOUNT_ID}:{typ.rsplit(':', 1)[-1].lower()}/{inputs.get('name', name)}"
        out: dict[str, Any] = {**inputs, "arn": arn}
        rid = f"{name}-{h[:8]}"

        if typ == "aws:ec2/vpc:Vpc":
            rid = f"vpc-{h}"
            out.update(defaultSecurityGroupId=f"sg-{h[:16]}d", mainRouteTableId=f"rtb-{h}", defaultNetworkAclId=f"acl-{h}")
        elif typ == "aws:ec2/subnet:Subnet":
            rid = f"subnet-{h}"
        elif typ == "aws:ec2/securityGroup:SecurityGroup":
            rid = f"sg-{h}"
        elif typ == "aws:ec2/internetGateway:InternetGateway":
            rid = f"igw-{h}"
        elif typ == "aws:ec2/natGateway:NatGateway":
            rid = f"nat-{h}"
        elif typ == "aws:ec2/eip:Eip":
            rid = f"eipalloc-{h}"
            out["publicIp"] = "203.0.113." + str(int(h[:2], 16) % 250 + 1)
        elif typ == "aws:ec2/routeTable:RouteTable":
            rid = f"rtb-{h}"
        elif typ == "aws:ec2/vpcEndpoint:VpcEndpoint":
            rid = f"vpce-{h}"
        elif typ == "aws:ec2/launchTemplate:LaunchTemplate":
            rid = f"lt-{h}"
            out["latestVersion"] = 1
        elif typ == "aws:iam/role:Role":
            out["arn"] = f"arn:aws:iam::{ACCOUNT_ID}:role/{inputs.get('name', name)}"
            out["name"] = inputs.get("name", name)
            rid = str(out["name"])
        elif typ == "aws:iam/serviceLinkedRole:ServiceLinkedRole":
            from infra.preconditions import BY_SERVICE, slr_path

            path = slr_path(BY_SERVICE[str(inputs["awsServiceName"])])
            out.update(arn=f"arn:aws:iam::{ACCOUNT_ID}:role/{path}", name=path.rsplit("/", 1)[-1], path="/" + path.rsplit("/", 1)[0] + "/")
            rid = str(out["arn"])
        elif typ == "aws:iam/policy:Policy":
            out["arn"] = f"arn:aws:iam::{ACCOUNT_ID}:policy/{inputs.get('name', name)}"
        elif typ == "aws:iam/openIdConnectProvider:OpenIdConnectProvider":
            url = str(inputs.get("url", "")).removeprefix("https://")
            out["arn"] = f"arn:aws:iam::{ACCOUNT_ID}:oidc-provider/{url}"
        elif typ == "aws:kms/key:Key":
            rid = f"{h[:8]}-{h[8:12]}-4{h[12:15]}-8{h[:3]}-{h[3:15]}"
            out.update(keyId=rid, arn=f"arn:aws:kms:{region}:{ACCOUNT_ID}:key/{rid}")
        elif typ == "aws:cloudwatch/logGroup:LogGroup":
            lg = inputs.get("name", name)
            out.update(name=lg, arn=f"arn:aws:logs:{region}:{ACCOUNT_ID}:log-group:{lg}")
        elif typ == "aws:eks/cluster:Cluster":
            cname = inputs.get("name", name)
            oidc_id = h.upper()[:16] + h.upper()[:16]
            out.update(
                name=cname,
                arn=f"arn:aws:eks:{region}:{ACCOUNT_ID}:cluster/{cname}",
                endpoint=f"https://{oidc_id}.gr7.{region}.eks.amazonaws.com",
                certificateAuthority={"data": base64.b64encode(b"-----BEGIN CERTIFICATE-----mock").decode()},
                identities=[{"oidcs": [{"issuer": f"https://oidc.eks.{region}.amazonaws.com/id/{oidc_id}"}]}],
                vpcConfig={**(inputs.get("vpcConfig") or {}), "clusterSecurityGroupId": f"sg-{h[:16]}c"},
                status="ACTIVE",
                platformVersion="eks.1",
            )
            rid = str(cname)
        elif typ == "aws:eks/nodeGroup:NodeGroup":
            out.update(status="ACTIVE", resources=[{"autoscalingGroups": [{"name": f"eks-{name}-{h[:8]}"}]}])
        elif typ == "aws:elasticache/replicationGroup:ReplicationGroup":
            rg = inputs.get("replicationGroupId", name)
            out.update(primaryEndpointAddress=f"master.{rg}.{h[:6]}.use1.cache.amazonaws.com",
                       readerEndpointAddress=f"replica.{rg}.{h[:6]}.use1.cache.amazonaws.com",
                       configurationEndpointAddress=f"clustercfg.{rg}.{h[:6]}.use1.cache.amazonaws.com",
                       port=inputs.get("port", 6379), memberClusters=[f"{rg}-001"])
        elif typ in ("aws:rds/instance:Instance", "aws:rds/cluster:Cluster"):
            ident = inputs.get("identifier", name)
            address = f"{ident}.c{h[:10]}.{region}.rds.amazonaws.com"
            port = inputs.get("port", 5432)
            out.update(address=address, endpoint=f"{address}:{port}", port=port,
                       masterUserSecrets=[{"secretArn": f"arn:aws:secretsmanager:{region}:{ACCOUNT_ID}:secret:rds!{ident}-{h[:6]}",
                                           "kmsKeyId": inputs.get("masterUserSecretKmsKeyId"), "secretStatus": "active"}],
                       resourceId=f"db-{h.upper()}",
                       arn=f"arn:aws:rds:{region}:{ACCOUNT_ID}:{'db' if typ == 'aws:rds/instance:Instance' else 'cluster'}:{ident}")
        elif typ == "aws:lb/loadBalancer:LoadBalancer":
            lb = inputs.get("name", name)
            out.update(dnsName=f"{lb}-{int(h[:8], 16)}.{region}.elb.amazonaws.com", zoneId="Z35SXDOTRQ7X7K",
                       arnSuffix=f"app/{lb}/{h[:16]}",
                       arn=f"arn:aws:elasticloadbalancing:{region}:{ACCOUNT_ID}:loadbalancer/app/{lb}/{h[:16]}")
        elif typ == "aws:lb/targetGroup:TargetGroup":
            tg = inputs.get("name", name)
            out.update(arnSuffix=f"targetgroup/{tg}/{h[:16]}",
                       arn=f"arn:aws:elasticloadbalancing:{region}:{ACCOUNT_ID}:targetgroup/{tg}/{h[:16]}")
        elif typ == "aws:acm/certificate:Certificate":
            domain = inputs.get("domainName", "example.com")
            # Like ACM: one validation CNAME per domain and account, whatever the region.
            dh = _short_hash(ACCOUNT_ID, domain)
            out.update(domainValidationOptions=[{"domainName": domain, "resourceRecordName": f"_{dh[:8]}.{domain}.",
                                                 "resourceRecordType": "CNAME",
                                                 "resourceRecordValue": f"_{dh[8:16]}.acm-validations.aws."}],
                       arn=f"arn:aws:acm:{region}:{ACCOUNT_ID}:certificate/{h}")
        elif typ == "aws:s3/bucket:Bucket" or typ == "aws:s3/bucketV2:BucketV2":
            bucket = inputs.get("bucket") or f"{name}-{h[:8]}"
            out.update(bucket=bucket, arn=f"arn:aws:s3:::{bucket}", bucketRegionalDomainName=f"{bucket}.s3.{region}.amazonaws.com")
            rid = str(bucket)
        elif typ == "aws:secretsmanager/secret:Secret":
            out["arn"] = f"arn:aws:secretsmanager:{region}:{ACCOUNT_ID}:secret:{inputs.get('name', name)}-{h[:6]}"
        elif typ == "aws:wafv2/webAcl:WebAcl":
            out.update(arn=f"arn:aws:wafv2:{region}:{ACCOUNT_ID}:regional/webacl/{inputs.get('name', name)}/{h}", capacity=700)
        elif typ in ("aws:rds/parameterGroup:ParameterGroup", "aws:rds/subnetGroup:SubnetGroup",
                     "aws:elasticache/parameterGroup:ParameterGroup", "aws:elasticache/subnetGroup:SubnetGroup"):
            # The provider's check step auto-names these (mocks skip it): name them so references resolve.
            out["name"] = inputs.get("name") or f"{name}-{h[:7]}"
            rid = str(out["name"])
        elif typ == "aws:route53/healthCheck:HealthCheck":
            rid = f"{h[:8]}-{h[8:12]}-{h[12:16]}"
        elif typ == "aws:route53/record:Record":
            out["fqdn"] = str(inputs.get("name", name)).rstrip(".")
        elif typ == "aws:elasticache/globalReplicationGroup:GlobalReplicationGroup":
            # AWS prefixes the suffix with a per-region code (e.g. ldgnf- for us-east-1).
            out.update(globalReplicationGroupId=f"{h[:5]}-{inputs.get('globalReplicationGroupIdSuffix', name)}",
                       arn=f"arn:aws:elasticache::{ACCOUNT_ID}:globalreplicationgroup:{h[:5]}-{inputs.get('globalReplicationGroupIdSuffix', name)}")
            rid = str(out["globalReplicationGroupId"])
        elif typ == "aws:ec2/vpcPeeringConnection:VpcPeeringConnection":
            rid = f"pcx-{h}"
        elif typ == "aws:ec2/vpcPeeringConnectionAccepter:VpcPeeringConnectionAccepter":
            rid = str(inputs.get("vpcPeeringConnectionId") or f"pcx-{h}")
        elif typ == "aws:ecr/replicationConfiguration:ReplicationConfiguration":
            out["registryId"] = ACCOUNT_ID
            rid = ACCOUNT_ID
        elif typ == "aws:route53/zone:Zone":
            rid = "Z" + h[:12].upper()
            out.update(zoneId=rid, nameServers=[f"ns-{i}.awsdns-{i}.org" for i in range(1, 5)])
        elif typ == "aws:ecr/repository:Repository":
            repo = inputs.get("name", name)
            out["repositoryUrl"] = f"{ACCOUNT_ID}.dkr.ecr.{region}.amazonaws.com/{repo}"
        elif typ == "random:index/randomPassword:RandomPassword":
            value = secrets.token_urlsafe(int(inputs.get("length", 32)))[: int(inputs.get("length", 32))]
            self.generated_secrets.append(value)
            out.update(result=value, bcryptHash="$2a$10$" + _short_hash(value))
        elif typ == "random:index/randomId:RandomId":
            out.update(hex=h[:16], b64Url=h[:11], dec=str(int(h[:12], 16)))
        elif typ.startswith("kubernetes:"):
            meta = dict(inputs.get("metadata") or {})
            meta.setdefault("name", name)
            meta.setdefault("namespace", "default")
            out["metadata"] = meta
            if typ == "kubernetes:helm.sh/v3:Release":
                out["status"] = {"status": "deployed", "name": inputs.get("name", name),
                                 "namespace": inputs.get("namespace", "default"), "version": inputs.get("version")}
            rid = f"{meta['namespace']}/{meta['name']}"
        return rid, out


class _RecordingMonitor(pulumi_mocks.MockMonitor):
    """The mock monitor, plus a record of every registration with its parent and a duplicate-URN check."""

    def __init__(self, mocks: PlatformMocks) -> None:
        super().__init__(mocks)
        self.records: list[RenderedResource] = []
        self.seen_urns: set[str] = set()
        self.duplicates: list[str] = []

    def RegisterResource(self, request: Any) -> Any:  # noqa: N802 - the gRPC method name
        from pulumi.runtime import rpc

        response = super().RegisterResource(request)
        if request.type == "pulumi:pulumi:Stack":
            return response
        urn = self.make_urn(request.parent, request.type, request.name)
        if urn in self.seen_urns:
            self.duplicates.append(urn)
        self.seen_urns.add(urn)
        inputs = rpc.deserialize_properties(request.object, keep_unknowns=True)
        property_dependencies = {k: list(v.urns) for k, v in request.propertyDependencies.items() if v.urns}
        waits_for = [*request.dependencies, *(u for urns in property_dependencies.values() for u in urns)]
        if request.provider:
            waits_for.append(request.provider.rsplit("::", 1)[0])  # "<provider urn>::<provider id>"
        self.records.append(
            RenderedResource(
                urn=urn,
                type=request.type,
                name=request.name,
                parent=request.parent or None,
                provider=request.provider or None,
                inputs=_plain(inputs),
                custom=bool(request.custom),
                property_dependencies=property_dependencies,
                dependencies=sorted(set(waits_for)),
                custom_timeouts={k: v for k in ("create", "update", "delete") if (v := getattr(request.customTimeouts, k))},
                id=getattr(response, "id", None) or None,
                delete_before_replace=bool(request.deleteBeforeReplace),
            )
        )
        return response


def _plain(value: Any) -> Any:
    """Deserialized properties as plain JSON-able data (resource references become their URN)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    urn = getattr(value, "urn", None)
    if urn is not None:
        return f"<resource {type(value).__name__}>"
    return str(value)


def read_stack_config(stack: str, stacks_dir: Path = STACKS_DIR) -> dict[str, Any]:
    """The `config:` map of stacks/Pulumi.<stack>.yaml."""
    path = stacks_dir / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        known = sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in stacks_dir.glob("Pulumi.*.yaml"))
        raise RenderError(f"stack '{stack}': no file {path}; known stacks: {', '.join(known)}")
    data = yaml.safe_load(path.read_text()) or {}
    return dict(data.get("config") or {})


def known_stacks(stacks_dir: Path = STACKS_DIR) -> list[str]:
    return sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in stacks_dir.glob("Pulumi.*.yaml"))


def render(stack: str, config: dict[str, Any] | None = None, account: MockAccount | None = None) -> Rendering:
    """Run the program for `stack` under mocks. `config` replaces the stack file's config map (for tests)."""
    from infra import program

    raw = read_stack_config(stack) if config is None else config
    return render_function(program.main, stack=stack, config=raw, account=account)


def render_function(fn: Callable[[], None], stack: str = "unit", config: dict[str, Any] | None = None,
                    account: MockAccount | None = None) -> Rendering:
    """Run any Pulumi program function under the same mocks (component tests render one component this way)."""
    raw = config or {}
    flat: dict[str, str] = {}
    secret_keys: list[str] = []
    for key, value in raw.items():
        full = key if ":" in key else f"{PROJECT}:{key}"
        if isinstance(value, dict) and set(value) == {"secure"}:
            # Ciphertext only decrypts with the stack's secrets provider: stand in a random value, kept secret.
            value = "mock-" + secrets.token_hex(8)
            secret_keys.append(full)
        flat[full] = value if isinstance(value, str) else json.dumps(value)

    mocks = PlatformMocks(account)
    monitor = _RecordingMonitor(mocks)
    result: dict[str, Any] = {}

    def run() -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            pulumi.runtime.set_mocks(mocks, project=PROJECT, stack=stack, preview=False, monitor=monitor)
            pulumi.runtime.set_all_config(flat, secret_keys)
            fn()
            loop.run_until_complete(wait_for_rpcs())
            result["outputs"], result["secret_outputs"] = loop.run_until_complete(_resolve_exports())
        except BaseException as exc:  # handed to the caller's thread
            result["error"] = exc
            # Let the registrations already queued (the root Stack at least) finish on this loop: abandoned, they
            # leave the runtime waiting for them and the next render in this process hangs.
            try:
                loop.run_until_complete(wait_for_rpcs())
            except BaseException:
                pass
        finally:
            loop.close()

    # A fresh thread gives a fresh contextvars context: every render starts with clean Pulumi runtime state.
    thread = threading.Thread(target=run, name=f"render-{stack}")
    thread.start()
    thread.join()
    if "error" in result:
        raise result["error"]
    if monitor.duplicates:
        raise RenderError(f"duplicate resource URNs: {', '.join(sorted(set(monitor.duplicates)))}")
    return Rendering(
        stack=stack,
        resources=monitor.records,
        outputs=result["outputs"],
        secret_outputs=result["secret_outputs"],
        generated_secrets=list(mocks.generated_secrets),
    )


async def _resolve_exports() -> tuple[dict[str, Any], set[str]]:
    root = pulumi.runtime.get_root_resource()
    exports: dict[str, Any] = dict(getattr(root, "outputs", {}) or {})
    values: dict[str, Any] = {}
    secret_names: set[str] = set()
    for name, value in exports.items():
        out = pulumi.Output.from_input(value)
        values[name] = _plain(unwrap_secrets(await out.future()))
        if await out.is_secret():
            secret_names.add(name)
    return values, secret_names

"""Preflight: read-only checks against the user's AWS account that catch what makes a first deploy fail.

GPU platforms usually fail their first `pulumi up` on account limits, not on code: a vCPU quota of 0 for G or P
instances (new accounts), a GPU type not offered in one of the AZs, an EKS or add-on version that AWS no longer
serves, a hosted zone or certificate that does not exist. Each check prints one line — PASS, WARN or FAIL — and,
for a failure, the fix (the quota request command with its code, the AZs that do offer a type, the versions that
exist). The command exits 1 when a check fails.

Only read APIs are called (see README "Before you deploy" for the IAM actions).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any, Callable, Iterable, Literal, Sequence

from infra.config import ConfigError, PlatformConfig, parse_platform_config
from infra.instances import INSTANCE_SPECS, family
from infra.pins import EKS_VERSIONS

Status = Literal["PASS", "WARN", "FAIL"]
ClientFactory = Callable[[str, str], Any]
"""`clients(service, region)` -> a boto3 client (tests hand in moto-backed or Stubber-backed ones)."""


@dataclass(frozen=True)
class Quota:
    code: str
    name: str


# EC2 vCPU quotas by instance class and purchase option (Service Quotas, service code `ec2`).
QUOTAS: dict[tuple[str, str], Quota] = {
    ("G and VT", "ON_DEMAND"): Quota("L-DB2E81BA", "Running On-Demand G and VT instances"),
    ("G and VT", "SPOT"): Quota("L-3819A6DF", "All G and VT Spot Instance Requests"),
    ("P", "ON_DEMAND"): Quota("L-417A185B", "Running On-Demand P instances"),
    ("P", "SPOT"): Quota("L-7212CCBC", "All P Spot Instance Requests"),
    ("Standard", "ON_DEMAND"): Quota("L-1216C47A", "Running On-Demand Standard (A, C, D, H, I, M, R, T, Z) instances"),
    ("Standard", "SPOT"): Quota("L-34B43A08", "All Standard (A, C, D, H, I, M, R, T, Z) Spot Instance Requests"),
}

IAM_ACTIONS = (
    "servicequotas:GetServiceQuota",
    "servicequotas:GetAWSDefaultServiceQuota",
    "ec2:DescribeAvailabilityZones",
    "ec2:DescribeInstanceTypeOfferings",
    "eks:DescribeClusterVersions",
    "eks:DescribeAddonVersions",
    "rds:DescribeOrderableDBInstanceOptions",
    "route53:ListHostedZonesByName",
    "acm:DescribeCertificate",
)


@dataclass(frozen=True)
class CheckResult:
    status: Status
    check: str
    region: str
    detail: str
    fix: str = ""

    def line(self) -> str:
        text = f"{self.status:<4}  {self.check:<12} {self.region:<14} {self.detail}"
        return text + (f"\n      fix: {self.fix}" if self.fix else "")

    def to_json(self) -> dict[str, str]:
        return {"status": self.status, "check": self.check, "region": self.region, "detail": self.detail, "fix": self.fix}


def quota_class(instance_type: str) -> str:
    fam = family(instance_type)
    if fam.startswith(("g", "vt")):
        return "G and VT"
    if fam.startswith("p"):
        return "P"
    return "Standard"


def _error_result(check: str, region: str, what: str, exc: Exception, action: str) -> CheckResult:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", type(exc).__name__)
    message = getattr(exc, "response", {}).get("Error", {}).get("Message", str(exc))
    fix = f"grant {action} to the credentials running preflight" if "AccessDenied" in code or "UnauthorizedOperation" in code else ""
    return CheckResult("FAIL", check, region, f"{what}: {code}: {message}", fix)


# --- vCPU quotas -----------------------------------------------------------------------------------------------

def required_vcpus(cfg: PlatformConfig) -> dict[tuple[str, str], tuple[int, list[str]]]:
    """vCPUs every node group needs at max size, summed per (quota class, capacity), with how they add up."""
    need: dict[tuple[str, str], tuple[int, list[str]]] = {}
    for group in cfg.node_groups:
        # The largest type of the group: the autoscaler may launch it for every node.
        itype = max(group.instance_types, key=lambda t: INSTANCE_SPECS[t].vcpus)
        vcpus = group.max_size * INSTANCE_SPECS[itype].vcpus
        key = (quota_class(itype), group.capacity)
        total, parts = need.get(key, (0, []))
        need[key] = (total + vcpus, [*parts, f"{group.name}: {group.max_size} × {itype} ({INSTANCE_SPECS[itype].vcpus} vCPU)"])
    return need


def _quota_value(client: Any, code: str) -> float:
    try:
        return float(client.get_service_quota(ServiceCode="ec2", QuotaCode=code)["Quota"]["Value"])
    except client.exceptions.NoSuchResourceException:
        # Never adjusted in this account: the AWS default applies.
        return float(client.get_aws_default_service_quota(ServiceCode="ec2", QuotaCode=code)["Quota"]["Value"])


def check_quotas(cfg: PlatformConfig, clients: ClientFactory) -> list[CheckResult]:
    results: list[CheckResult] = []
    need = required_vcpus(cfg)
    for region in (r.name for r in cfg.regions):
        client = clients("service-quotas", region)
        for key, (vcpus, parts) in sorted(need.items()):
            quota = QUOTAS[key]
            label = f"{quota.name} ({quota.code})"
            try:
                value = _quota_value(client, quota.code)
            except Exception as exc:  # noqa: BLE001 - any API failure is a failed check with its reason
                results.append(_error_result("quota", region, label, exc, "servicequotas:GetServiceQuota"))
                continue
            detail = f"{label}: quota {value:g} vCPUs, node groups at max need {vcpus} ({'; '.join(parts)})"
            if value >= vcpus:
                results.append(CheckResult("PASS", "quota", region, detail))
            else:
                results.append(CheckResult(
                    "FAIL", "quota", region, detail,
                    f"aws service-quotas request-service-quota-increase --service-code ec2 --quota-code {quota.code} "
                    f"--desired-value {vcpus} --region {region}   (the quota is shared with everything else running in the account)",
                ))
    return results


# --- instance types per AZ -------------------------------------------------------------------------------------

def _offerings(ec2: Any, types: Sequence[str]) -> dict[str, set[str]]:
    offered: dict[str, set[str]] = {t: set() for t in types}
    paginator = ec2.get_paginator("describe_instance_type_offerings")
    for page in paginator.paginate(LocationType="availability-zone", Filters=[{"Name": "instance-type", "Values": list(types)}]):
        for offer in page["InstanceTypeOfferings"]:
            offered.setdefault(offer["InstanceType"], set()).add(offer["Location"])
    return offered


def check_instance_offerings(cfg: PlatformConfig, clients: ClientFactory) -> list[CheckResult]:
    """Every node group's types must be offered in every AZ the program will use (the first `az_count` available)."""
    results: list[CheckResult] = []
    types = sorted({t for g in cfg.node_groups for t in g.instance_types})
    for index, region_cfg in enumerate(cfg.regions):
        region = region_cfg.name
        ec2 = clients("ec2", region)
        try:
            zones = ec2.describe_availability_zones(Filters=[{"Name": "state", "Values": ["available"]}])["AvailabilityZones"]
            available = [z["ZoneName"] for z in zones]
            offered = _offerings(ec2, types)
        except Exception as exc:  # noqa: BLE001
            results.append(_error_result("az-offering", region, "instance type offerings", exc, "ec2:DescribeInstanceTypeOfferings"))
            continue
        chosen = available[: region_cfg.az_count]
        for group in cfg.node_groups:
            gaps = {t: [az for az in chosen if az not in offered.get(t, set())] for t in group.instance_types}
            gaps = {t: azs for t, azs in gaps.items() if azs}
            if not gaps:
                results.append(CheckResult("PASS", "az-offering", region,
                                           f"{group.name}: {', '.join(group.instance_types)} offered in {', '.join(chosen)}"))
                continue
            missing = "; ".join(f"{t} not offered in {', '.join(azs)}" for t, azs in gaps.items())
            where = "; ".join(f"{t} in {', '.join(sorted(offered.get(t, set()))) or 'no AZ of ' + region}" for t in gaps)
            # The program takes the first az_count available AZs: the longest prefix that offers every type is a fix.
            prefix = 0
            for az in available:
                if all(az in offered.get(t, set()) for t in group.instance_types):
                    prefix += 1
                else:
                    break
            options = [f"AZs offering them: {where}"]
            if prefix >= 2:
                options.append(f"or set llm-platform:regions[{index}].az_count to {prefix} or less (uses {', '.join(available[:prefix])})")
            options.append(f"or remove {', '.join(gaps)} from node group {group.name!r}")
            results.append(CheckResult("FAIL", "az-offering", region, f"{group.name}: {missing} (deploy uses {', '.join(chosen)})",
                                       "; ".join(options)))
    return results


# --- EKS version and add-ons ---------------------------------------------------------------------------------

def _day(value: Any) -> date | None:
    if isinstance(value, datetime):
        return value.astimezone(timezone.utc).date()
    return value if isinstance(value, date) else None


def _support_dates(info: dict[str, Any]) -> str:
    std, ext = _day(info.get("endOfStandardSupportDate")), _day(info.get("endOfExtendedSupportDate"))
    return (f"; standard support until {std.isoformat()}" if std else "") + (f", extended until {ext.isoformat()}" if ext else "")


def _calendar_drift(version: str, info: dict[str, Any], region: str) -> list[CheckResult]:
    """AWS's dates for the version against infra/pins.py (which prices extended support and fails stale pins)."""
    ours = EKS_VERSIONS.get(version)
    aws = _day(info.get("endOfStandardSupportDate"))
    # AWS reports the instant support ends in US Pacific time; the calendar (and our table) give the UTC day.
    if ours is None or aws is None or abs((aws - ours.end_of_standard_support).days) <= 1:
        return []
    return [CheckResult("WARN", "eks-calendar", region,
                        f"EKS says standard support for {version} ends {aws.isoformat()}; infra/pins.py says "
                        f"{ours.end_of_standard_support.isoformat()}",
                        "update EKS_VERSIONS in infra/pins.py from the AWS EKS version calendar")]


def check_eks_versions(cfg: PlatformConfig, clients: ClientFactory) -> list[CheckResult]:
    results: list[CheckResult] = []
    version = cfg.cluster.version
    for region in (r.name for r in cfg.regions):
        eks = clients("eks", region)
        try:
            found = eks.describe_cluster_versions(clusterVersions=[version])["clusterVersions"]
        except Exception as exc:  # noqa: BLE001
            results.append(_error_result("eks-version", region, f"Kubernetes {version}", exc, "eks:DescribeClusterVersions"))
            continue
        match = [v for v in found if v.get("clusterVersion") == version]
        status = str(match[0].get("versionStatus", "")) if match else ""
        if not match or status == "UNSUPPORTED":
            try:
                served = [v["clusterVersion"] for v in eks.describe_cluster_versions(versionStatus="STANDARD_SUPPORT")["clusterVersions"]]
            except Exception:  # noqa: BLE001 - the fix text only loses its version list
                served = []
            results.append(CheckResult("FAIL", "eks-version", region,
                                       f"Kubernetes {version} is {'unsupported' if match else 'not offered'} by EKS here",
                                       f"set llm-platform:cluster.version to one of: {', '.join(sorted(served)) or 'a version in standard support'}"))
        elif status == "EXTENDED_SUPPORT":
            results.append(CheckResult("WARN", "eks-version", region,
                                       f"Kubernetes {version} is in extended support (control plane billed at the extended rate)"
                                       + _support_dates(match[0]),
                                       "upgrade llm-platform:cluster.version to a standard-support version"))
        else:
            results.append(CheckResult("PASS", "eks-version", region,
                                       f"Kubernetes {version} is offered ({status or 'available'})" + _support_dates(match[0])))
        if match:
            results.extend(_calendar_drift(version, match[0], region))

        for addon, wanted in sorted(cfg.cluster.addons.items()):
            try:
                addons = eks.describe_addon_versions(kubernetesVersion=version, addonName=addon)["addons"]
            except Exception as exc:  # noqa: BLE001
                results.append(_error_result("eks-addon", region, f"{addon} {wanted}", exc, "eks:DescribeAddonVersions"))
                continue
            versions = [v for a in addons if a.get("addonName") == addon for v in a.get("addonVersions", [])]
            names = [str(v["addonVersion"]) for v in versions]
            if wanted in names:
                results.append(CheckResult("PASS", "eks-addon", region, f"{addon} {wanted} exists for Kubernetes {version}"))
                continue
            default = [str(v["addonVersion"]) for v in versions
                       if any(c.get("clusterVersion") == version and c.get("defaultVersion") for c in v.get("compatibilities", []))]
            suggestion = default[0] if default else (names[0] if names else "")
            fix = (f"set llm-platform:cluster.addons.{addon} to {suggestion} (default for {version}); available: {', '.join(names[:5])}"
                   if suggestion else f"add-on {addon} is not offered for Kubernetes {version} in {region}")
            results.append(CheckResult("FAIL", "eks-addon", region, f"{addon} {wanted} does not exist for Kubernetes {version}", fix))
    return results


# --- database instance class ------------------------------------------------------------------------------------

def check_database_class(cfg: PlatformConfig, clients: ClientFactory) -> list[CheckResult]:
    """The Postgres instance class is orderable for the engine version (and Multi-AZ when asked) in every region."""
    postgres = getattr(getattr(cfg, "data", None), "postgres", None)
    if postgres is None:
        return []
    db_class, version, multi_az = str(postgres.instance_class), str(postgres.engine_version), bool(postgres.multi_az)
    results: list[CheckResult] = []
    for region in (r.name for r in cfg.regions):
        rds = clients("rds", region)
        try:
            options = [o for page in rds.get_paginator("describe_orderable_db_instance_options").paginate(
                Engine="postgres", DBInstanceClass=db_class) for o in page["OrderableDBInstanceOptions"]]
        except Exception as exc:  # noqa: BLE001
            results.append(_error_result("db-class", region, f"{db_class} for PostgreSQL {version}", exc,
                                         "rds:DescribeOrderableDBInstanceOptions"))
            continue
        # `engine_version` may be a major version ("17"): any 17.x release counts.
        matching = [o for o in options if o.get("EngineVersion") == version or str(o.get("EngineVersion", "")).startswith(version + ".")]
        usable = [o for o in matching if o.get("MultiAZCapable", True)] if multi_az else matching
        label = f"{db_class} for PostgreSQL {version}{' Multi-AZ' if multi_az else ''}"
        if usable:
            results.append(CheckResult("PASS", "db-class", region, f"{label} is orderable"))
            continue
        versions = sorted({str(o.get("EngineVersion")) for o in options}, key=lambda v: [int(x) for x in v.split(".") if x.isdigit()])
        fix = (f"{db_class} is offered here for PostgreSQL {', '.join(versions[-4:])}: change llm-platform:data.postgres.engine_version, "
               "or pick another instance_class" if versions else
               f"{db_class} is not offered for PostgreSQL in {region}: change llm-platform:data.postgres.instance_class")
        results.append(CheckResult("FAIL", "db-class", region, f"{label} is not orderable", fix))
    return results


# --- DNS zone and certificate (edge) ---------------------------------------------------------------------------

@dataclass(frozen=True)
class EdgeTarget:
    region: str
    zone_name: str | None
    certificate_arn: str | None
    hostname: str | None


def edge_targets(cfg: PlatformConfig) -> list[EdgeTarget]:
    """The hosted zone / certificate / API host name of the stack's `edge` section (none if it has no edge)."""
    edge = getattr(cfg, "edge", None)
    if edge is None:
        return []
    zone = getattr(edge, "hosted_zone", None)
    cert = getattr(edge, "certificate_arn", None)
    host = getattr(edge, "domain_name", None)
    if not zone and not cert:
        return []
    # An existing certificate serves the home region's ALB; other regions get certificates the program requests.
    return [EdgeTarget(cfg.home_region.name, zone, cert, host)]


def _hostname_covered(hostname: str, names: Iterable[str]) -> bool:
    for name in names:
        if name == hostname:
            return True
        if name.startswith("*.") and hostname.count(".") == name.count(".") and hostname.split(".", 1)[1] == name[2:]:
            return True
    return False


def check_edge(cfg: PlatformConfig, clients: ClientFactory) -> list[CheckResult]:
    results: list[CheckResult] = []
    targets = edge_targets(cfg)
    if not targets:
        return [CheckResult("PASS", "dns-cert", cfg.home_region.name, "no hosted zone or certificate configured: nothing to check")]
    zone = targets[0].zone_name
    if zone:
        wanted = zone.rstrip(".") + "."
        route53 = clients("route53", cfg.home_region.name)
        try:
            zones = route53.list_hosted_zones_by_name(DNSName=wanted, MaxItems="10")["HostedZones"]
            public = [z for z in zones if z["Name"] == wanted and not z.get("Config", {}).get("PrivateZone", False)]
            if public:
                results.append(CheckResult("PASS", "dns-zone", "global", f"public hosted zone {wanted} exists ({public[0]['Id'].rsplit('/', 1)[-1]})"))
            else:
                results.append(CheckResult("FAIL", "dns-zone", "global", f"no public Route 53 hosted zone named {wanted}",
                                           f"aws route53 create-hosted-zone --name {wanted.rstrip('.')} --caller-reference $(date +%s) "
                                           "and delegate it from your registrar, or fix the zone name in the edge config"))
        except Exception as exc:  # noqa: BLE001
            results.append(_error_result("dns-zone", "global", f"hosted zone {wanted}", exc, "route53:ListHostedZonesByName"))
    for target in targets:
        if not target.certificate_arn:
            continue
        cert_region = target.certificate_arn.split(":")[3] if target.certificate_arn.count(":") >= 5 else ""
        if cert_region and cert_region != target.region:
            results.append(CheckResult("FAIL", "certificate", target.region,
                                       f"{target.certificate_arn} is in {cert_region}; an ALB needs a certificate in its own region",
                                       f"request or import the certificate in {target.region}"))
            continue
        acm = clients("acm", target.region)
        try:
            cert = acm.describe_certificate(CertificateArn=target.certificate_arn)["Certificate"]
        except Exception as exc:  # noqa: BLE001
            results.append(_error_result("certificate", target.region, target.certificate_arn, exc, "acm:DescribeCertificate"))
            continue
        names = [str(cert.get("DomainName", "")), *[str(n) for n in cert.get("SubjectAlternativeNames", [])]]
        status = str(cert.get("Status"))
        if status != "ISSUED":
            results.append(CheckResult("FAIL", "certificate", target.region, f"{cert.get('DomainName')} certificate is {status}, not ISSUED",
                                       "complete DNS validation (the CNAME records ACM lists) or request a new certificate"))
        elif target.hostname and not _hostname_covered(target.hostname, names):
            results.append(CheckResult("FAIL", "certificate", target.region,
                                       f"certificate for {', '.join(names)} does not cover {target.hostname}",
                                       f"use a certificate whose names include {target.hostname} or *.{target.hostname.split('.', 1)[1]}"))
        else:
            results.append(CheckResult("PASS", "certificate", target.region, f"certificate for {', '.join(names)} is ISSUED"))
    return results


# --- running it ----------------------------------------------------------------------------------------------------

CHECKS: tuple[Callable[[PlatformConfig, ClientFactory], list[CheckResult]], ...] = (
    check_quotas, check_instance_offerings, check_eks_versions, check_database_class, check_edge,
)


def run_preflight(cfg: PlatformConfig, clients: ClientFactory) -> list[CheckResult]:
    results: list[CheckResult] = []
    for check in CHECKS:
        results.extend(check(cfg, clients))
    return results


def session_clients(profile: str | None = None) -> ClientFactory:
    """Clients from the user's own credentials (environment, profile, SSO...), one per (service, region)."""
    import boto3

    session = boto3.Session(profile_name=profile)
    if session.get_credentials() is None:
        raise ConfigError("preflight needs AWS credentials: none found (set AWS_PROFILE, run `aws sso login`, or export AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY)")
    cache: dict[tuple[str, str], Any] = {}

    def client(service: str, region: str) -> Any:
        if (service, region) not in cache:
            cache[(service, region)] = session.client(service, region_name=region)
        return cache[(service, region)]

    return client


def load_stack_config(stack: str) -> PlatformConfig:
    from infra.render import read_stack_config

    raw = read_stack_config(stack)
    keys = {k.split(":", 1)[1]: v for k, v in raw.items() if k.startswith("llm-platform:")}
    return parse_platform_config(keys, source=f"stacks/Pulumi.{stack}.yaml")


def report(results: Sequence[CheckResult]) -> tuple[str, int]:
    """The printed report and the exit code (1 if any check failed)."""
    failed = sum(1 for r in results if r.status == "FAIL")
    warned = sum(1 for r in results if r.status == "WARN")
    lines = [r.line() for r in results]
    lines.append(f"{len(results)} checks: {len(results) - failed - warned} passed, {warned} warnings, {failed} failed")
    return "\n".join(lines), 1 if failed else 0


def cmd_preflight(args: argparse.Namespace) -> int:
    import json

    from infra.cli import stack_platform_config  # honours the CLI's --stacks-dir

    cfg = stack_platform_config(args.stack)
    results = run_preflight(cfg, session_clients(args.profile))
    text, code = report(results)
    if args.json:
        print(json.dumps({"stack": args.stack, "checks": [r.to_json() for r in results], "ok": code == 0}, indent=2))
    else:
        print(f"Preflight for stack {args.stack} (read-only calls with your AWS credentials)")
        print(text)
    return code


def register(sub: Any) -> None:
    """Add `preflight <stack>` to the CLI's subcommands."""
    parser = sub.add_parser("preflight", help="check the AWS account can take the stack: quotas, AZs, versions, DNS")
    parser.add_argument("stack", help="stack name")
    parser.add_argument("--profile", default=None, help="AWS profile to use (default: the usual credential chain)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.set_defaults(func=cmd_preflight)


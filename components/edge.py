"""`Edge`: how clients reach the gateway. Route53 alias -> ALB (TLS 1.2+/1.3) guarded by WAFv2 -> gateway pods.

The ALB is owned here (not by the AWS Load Balancer Controller): internet-facing in the public subnets, invalid
headers dropped, desync mitigation on, access logs to a private bucket, an idle timeout long enough for streamed
completions. Port 80 only redirects to 443. The `ip` target group is empty at creation: the Load Balancer
Controller's TargetGroupBinding registers gateway pod IPs into it. The WebACL runs the AWS managed baseline (its
body-inspecting rules counted: prompts contain code, paths and URLs) plus a rate limit per API key with a per-IP
backstop, and logs (with the `authorization` header redacted) to an encrypted `aws-waf-logs-*` log group. There is
no body-size rule: an ALB forwards WAF at most the first 8 KB of a body (64 KB with a paid AssociationConfig), so a
prompt-sized limit can only be enforced by the gateway itself.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Literal, Sequence

import pulumi
import pulumi_aws as aws

from components.certificate import dns_validated_certificate
from components.naming import AUTONAME_SUFFIX, short_name
from components.private_bucket import harden_private_bucket, tls_only_statements

# ALB-supported TLS policies that allow nothing below TLS 1.2 (ELB.17/18); the first is the default.
TLS_POLICIES = (
    "ELBSecurityPolicy-TLS13-1-2-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-Res-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-Ext1-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-Ext2-2021-06",
    "ELBSecurityPolicy-TLS13-1-3-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-FIPS-2023-04",
    "ELBSecurityPolicy-TLS13-1-3-FIPS-2023-04",
)
# The Common rule set's 8 KB body rule would block ordinary prompts; it is always set to count.
SIZE_RESTRICTIONS_BODY = "SizeRestrictions_BODY"
COMMON_RULE_SET = "AWSManagedRulesCommonRuleSet"
KNOWN_BAD_INPUTS_RULE_SET = "AWSManagedRulesKnownBadInputsRuleSet"
# Rule names of the two managed groups we override, as AWS publishes them (developer guide, "Baseline rule groups":
# docs.aws.amazon.com/waf/latest/developerguide/aws-managed-rule-groups-baseline.html). WAF silently ignores a
# RuleActionOverride whose name matches no rule, so a misspelt override would leave the rule blocking.
MANAGED_RULE_NAMES: dict[str, tuple[str, ...]] = {
    COMMON_RULE_SET: (
        "NoUserAgent_HEADER", "UserAgent_BadBots_HEADER", "SizeRestrictions_QUERYSTRING", "SizeRestrictions_Cookie_HEADER",
        "SizeRestrictions_BODY", "SizeRestrictions_URIPATH", "EC2MetaDataSSRF_BODY", "EC2MetaDataSSRF_COOKIE",
        "EC2MetaDataSSRF_URIPATH", "EC2MetaDataSSRF_QUERYARGUMENTS", "GenericLFI_QUERYARGUMENTS", "GenericLFI_URIPATH",
        "GenericLFI_BODY", "RestrictedExtensions_URIPATH", "RestrictedExtensions_QUERYARGUMENTS", "GenericRFI_QUERYARGUMENTS",
        "GenericRFI_BODY", "GenericRFI_URIPATH", "CrossSiteScripting_COOKIE", "CrossSiteScripting_QUERYARGUMENTS",
        "CrossSiteScripting_BODY", "CrossSiteScripting_URIPATH",
    ),
    KNOWN_BAD_INPUTS_RULE_SET: (
        "JavaDeserializationRCE_HEADER", "JavaDeserializationRCE_BODY", "JavaDeserializationRCE_URIPATH",
        "JavaDeserializationRCE_QUERYSTRING", "Host_localhost_HEADER", "PROPFIND_METHOD", "ExploitablePaths_URIPATH",
        "Log4JRCE_HEADER", "Log4JRCE_QUERYSTRING", "Log4JRCE_BODY", "Log4JRCE_URIPATH", "ReactJSRCE_BODY",
    ),
}
# Every rule that inspects the body: a prompt is free text (code, file paths, URLs, "169.254.169.254", "${jndi:"),
# so in block mode these would reject ordinary requests. They count (visible in metrics and logs) instead.
BODY_RULES: dict[str, tuple[str, ...]] = {group: tuple(r for r in rules if r.endswith("_BODY")) for group, rules in MANAGED_RULE_NAMES.items()}
# The header API keys travel in (`Authorization: Bearer <key>`): the rate limit's aggregation key.
API_KEY_HEADER = "authorization"
# Regions launched before August 2022 deliver ALB logs from a regional ELB account; later ones use the service
# principal `logdelivery.elasticloadbalancing.amazonaws.com` (granted everywhere below).
ELB_LOG_ACCOUNTS = {
    "us-east-1": "127311923021", "us-east-2": "033677994240", "us-west-1": "027434742980", "us-west-2": "797873946194",
    "af-south-1": "098369216593", "ap-east-1": "754344448648", "ap-southeast-3": "589379963580",
    "ap-south-1": "718504428378", "ap-northeast-3": "383597477331", "ap-northeast-2": "600734575887",
    "ap-southeast-1": "114774131450", "ap-southeast-2": "783225319266", "ap-northeast-1": "582318560864",
    "ca-central-1": "985666609251", "eu-central-1": "054676820928", "eu-west-1": "156460612806",
    "eu-west-2": "652711504416", "eu-south-1": "635631232127", "eu-west-3": "009996457667", "eu-north-1": "897822967062",
    "me-south-1": "076674570225", "sa-east-1": "507241528517", "us-gov-west-1": "048591011584",
    "us-gov-east-1": "190560391635",
}
ACCESS_LOG_PREFIX = "alb"


@dataclass
class WafArgs:
    log_kms_key_arn: pulumi.Input[str]
    """KMS key of the WAF log group (its policy must admit `logs.<region>.amazonaws.com`)."""
    mode: Literal["count", "block"] = "block"
    """`count` only records what would have been blocked (for tuning); `block` enforces."""
    rate_limit_per_key: int = 30_000
    """Requests per API key (`authorization` header value) in any window before that key is blocked for a while.
    A flood backstop: the gateway enforces each key's real quotas."""
    rate_limit_per_ip: int = 150_000
    """Requests per source IP in any window: a backstop for requests without a key or with made-up keys, sized so a
    customer's backend behind one NAT address is never the one blocked."""
    rate_limit_window_seconds: int = 300
    """Window both rates are counted over: 60, 120, 300 or 600 seconds."""
    anonymous_ip_list: bool = False
    """Also block VPNs, Tor exit nodes and hosting providers (AWSManagedRulesAnonymousIpList)."""
    common_rules_to_count: Sequence[str] = BODY_RULES[COMMON_RULE_SET]
    """Common-rule-set rules overridden to count: the body rules fire on ordinary prompts (long, or containing code)."""
    known_bad_inputs_rules_to_count: Sequence[str] = BODY_RULES[KNOWN_BAD_INPUTS_RULE_SET]
    """Known-bad-inputs rules overridden to count (its body rules match prompts that quote exploit strings)."""
    log_retention_days: int = 90
    """Retention of the `aws-waf-logs-*` log group."""
    log_allowed_requests: bool = False
    """Log every request (costly at high RPS) instead of only blocked and counted ones."""

    def __post_init__(self) -> None:
        if self.mode not in ("count", "block"):
            raise ValueError(f"waf.mode: got {self.mode!r}; allowed: count, block")
        for key in ("rate_limit_per_key", "rate_limit_per_ip"):
            if not 10 <= getattr(self, key) <= 2_000_000_000:  # RateBasedStatement.Limit (botocore wafv2 RateLimit)
                raise ValueError(f"waf.{key}: got {getattr(self, key)}; allowed: 10 to 2000000000")
        if self.rate_limit_window_seconds not in (60, 120, 300, 600):
            raise ValueError(f"waf.rate_limit_window_seconds: got {self.rate_limit_window_seconds}; allowed: 60, 120, 300, 600")
        for key, group in (("common_rules_to_count", COMMON_RULE_SET), ("known_bad_inputs_rules_to_count", KNOWN_BAD_INPUTS_RULE_SET)):
            unknown = [r for r in getattr(self, key) if r not in MANAGED_RULE_NAMES[group]]
            if unknown:
                raise ValueError(f"waf.{key}: got {unknown}; allowed: rules of {group}: {', '.join(MANAGED_RULE_NAMES[group])}")
        if SIZE_RESTRICTIONS_BODY not in self.common_rules_to_count:
            raise ValueError(
                f"waf.common_rules_to_count: got {list(self.common_rules_to_count)}; must include {SIZE_RESTRICTIONS_BODY} "
                "(its 8 KB limit blocks ordinary prompts; the gateway enforces the body limit)"
            )


@dataclass
class EdgeArgs:
    vpc_id: pulumi.Input[str]
    """VPC of the ALB and its target group."""
    public_subnet_ids: Sequence[pulumi.Input[str]]
    """Public subnets in at least two AZs."""
    target_security_group_id: pulumi.Input[str]
    """Security group the gateway pods carry (the EKS cluster security group): the ALB may reach only it."""
    domain_name: str
    """API host name, e.g. `api.llm.example.com`."""
    waf: WafArgs
    """The WebACL in front of the ALB."""
    hosted_zone_id: pulumi.Input[str] | None = None
    """Public Route53 zone holding `domain_name`: gets the certificate validation record and the alias record."""
    certificate_arn: str | None = None
    """An existing ACM certificate for `domain_name` (in this region); else one is requested and DNS-validated."""
    target_port: int = 8080
    """Port the gateway pods listen on."""
    health_check_path: str = "/health/ready"
    """Gateway readiness path (200 when it can serve)."""
    ssl_policy: str = TLS_POLICIES[0]
    """HTTPS listener policy, one of `TLS_POLICIES` (TLS 1.2+ only)."""
    idle_timeout_seconds: int = 300
    """Seconds a connection may sit idle; a streamed completion can pause this long between tokens."""
    deregistration_delay_seconds: int = 120
    """Seconds a draining pod keeps its in-flight (streaming) requests before the ALB cuts them."""
    deletion_protection: bool = True
    """Refuse ALB deletion until turned off; off also lets destroy empty the access-log bucket."""
    desync_mitigation_mode: Literal["defensive", "strictest"] = "defensive"
    """HTTP desync (request smuggling) protection level."""
    ingress_cidrs: Sequence[str] = ("0.0.0.0/0",)
    """IPv4 CIDRs allowed to connect on 80/443 (the public by default; narrow it for a private preview)."""
    access_log_retention_days: int = 90
    """Days ALB access logs are kept."""
    tags: dict[str, str] = field(default_factory=dict)
    """Tags for every resource (the provider adds the stack's default tags)."""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"(?=.{4,253}$)([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}", self.domain_name):
            raise ValueError(f"domain_name: got {self.domain_name!r}; allowed: a lowercase DNS name such as api.example.com")
        if self.hosted_zone_id is None and self.certificate_arn is None:
            raise ValueError("certificate_arn: got None and no hosted_zone_id; allowed: a certificate ARN, or a Route53 zone to validate one in")
        if self.ssl_policy not in TLS_POLICIES:
            raise ValueError(f"ssl_policy: got {self.ssl_policy!r}; allowed: {', '.join(TLS_POLICIES)}")
        if not 1 <= self.idle_timeout_seconds <= 4000:
            raise ValueError(f"idle_timeout_seconds: got {self.idle_timeout_seconds}; allowed: 1 to 4000")
        if not 0 <= self.deregistration_delay_seconds <= 3600:
            raise ValueError(f"deregistration_delay_seconds: got {self.deregistration_delay_seconds}; allowed: 0 to 3600")
        if self.desync_mitigation_mode not in ("defensive", "strictest"):
            raise ValueError(f"desync_mitigation_mode: got {self.desync_mitigation_mode!r}; allowed: defensive, strictest")
        if not self.health_check_path.startswith("/"):
            raise ValueError(f"health_check_path: got {self.health_check_path!r}; allowed: a path starting with /")


def _visibility(metric: str) -> aws.wafv2.WebAclRuleVisibilityConfigArgsDict:
    return {"cloudwatch_metrics_enabled": True, "metric_name": metric, "sampled_requests_enabled": True}


def web_acl_rules(prefix: str, waf: WafArgs) -> list[aws.wafv2.WebAclRuleArgsDict]:
    """The WebACL's rules in evaluation order. Count mode turns every block into a count."""
    group_override: aws.wafv2.WebAclRuleOverrideActionArgsDict = {"count": {}} if waf.mode == "count" else {"none": {}}
    own_action: aws.wafv2.WebAclRuleActionArgsDict = {"count": {}} if waf.mode == "count" else {"block": {}}
    managed = ["AWSManagedRulesAmazonIpReputationList"]
    if waf.anonymous_ip_list:
        managed.append("AWSManagedRulesAnonymousIpList")
    managed += [COMMON_RULE_SET, KNOWN_BAD_INPUTS_RULE_SET]
    counted = {COMMON_RULE_SET: waf.common_rules_to_count, KNOWN_BAD_INPUTS_RULE_SET: waf.known_bad_inputs_rules_to_count}

    rules: list[aws.wafv2.WebAclRuleArgsDict] = [
        {
            # First and cheap: one abusive key should not cost managed-rule evaluations. Requests without the header
            # are left out of this rule (WAF skips a request missing a custom key) and met by the per-IP one.
            "name": "rate-limit-per-key",
            "priority": 0,
            "action": own_action,
            "statement": {
                "rate_based_statement": {
                    "limit": waf.rate_limit_per_key,
                    "evaluation_window_sec": waf.rate_limit_window_seconds,
                    "aggregate_key_type": "CUSTOM_KEYS",
                    "custom_keys": [{"header": {"name": API_KEY_HEADER, "text_transformations": [{"priority": 0, "type": "NONE"}]}}],
                }
            },
            "visibility_config": _visibility(f"{prefix}-rate-limit-per-key"),
        },
        {
            "name": "rate-limit-per-ip",
            "priority": 1,
            "action": own_action,
            "statement": {
                "rate_based_statement": {
                    "limit": waf.rate_limit_per_ip,
                    "evaluation_window_sec": waf.rate_limit_window_seconds,
                    "aggregate_key_type": "IP",
                }
            },
            "visibility_config": _visibility(f"{prefix}-rate-limit-per-ip"),
        },
    ]
    for group in managed:
        statement: aws.wafv2.WebAclRuleStatementManagedRuleGroupStatementArgsDict = {"name": group, "vendor_name": "AWS"}
        if counted.get(group):
            statement["rule_action_overrides"] = [{"name": rule, "action_to_use": {"count": {}}} for rule in counted[group]]
        rules.append(
            {
                "name": group,
                "priority": len(rules),
                "override_action": group_override,
                "statement": {"managed_rule_group_statement": statement},
                "visibility_config": _visibility(f"{prefix}-{group}"),
            }
        )
    return rules


class Edge(pulumi.ComponentResource):
    """ALB + listeners + target group + certificate + DNS + WAF, with access and WAF logs."""

    load_balancer: aws.lb.LoadBalancer
    target_group: aws.lb.TargetGroup
    https_listener: aws.lb.Listener
    web_acl: aws.wafv2.WebAcl
    alb_dns_name: pulumi.Output[str]
    alb_zone_id: pulumi.Output[str]
    alb_security_group_id: pulumi.Output[str]
    target_group_arn: pulumi.Output[str]
    certificate_arn: pulumi.Output[str]
    api_url: str
    access_log_bucket: pulumi.Output[str]
    waf_log_group_name: pulumi.Output[str]
    _log_bucket_policy: aws.s3.BucketPolicy

    def __init__(self, name: str, args: EdgeArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llm-platform:edge:Edge", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = args.tags
        invoke = pulumi.InvokeOutputOptions(parent=self)
        account_id = aws.get_caller_identity_output(opts=invoke).account_id
        region = aws.get_region_output(opts=invoke).region
        partition = aws.get_partition_output(opts=invoke).partition

        log_bucket = self._access_log_bucket(name, args, account_id, region, partition)
        self.access_log_bucket = log_bucket.bucket

        alb_sg = aws.ec2.SecurityGroup(
            f"{name}-alb",
            vpc_id=args.vpc_id,
            description=f"ALB {name}: HTTPS (and HTTP redirect) from clients; out only to the gateway pods",
            tags={**tags, "Name": f"{name}-alb"},
            opts=child,
        )
        for index, cidr in enumerate(args.ingress_cidrs):
            for port, what in ((443, "HTTPS API traffic"), (80, "HTTP, redirected to HTTPS")):
                aws.vpc.SecurityGroupIngressRule(
                    f"{name}-alb-in-{port}-{index}",
                    security_group_id=alb_sg.id,
                    description=f"{what} from {cidr}",
                    ip_protocol="tcp",
                    from_port=port,
                    to_port=port,
                    cidr_ipv4=cidr,
                    tags=tags,
                    opts=child,
                )
        aws.vpc.SecurityGroupEgressRule(
            f"{name}-alb-to-gateway",
            security_group_id=alb_sg.id,
            description=f"Requests and health checks to gateway pods on {args.target_port}",
            ip_protocol="tcp",
            from_port=args.target_port,
            to_port=args.target_port,
            referenced_security_group_id=args.target_security_group_id,
            tags=tags,
            opts=child,
        )
        # `ip` targets are pod IPs carrying the cluster security group, which only admits itself by default.
        aws.vpc.SecurityGroupIngressRule(
            f"{name}-gateway-from-alb",
            security_group_id=args.target_security_group_id,
            description=f"Gateway pods on {args.target_port} from the {name} ALB",
            ip_protocol="tcp",
            from_port=args.target_port,
            to_port=args.target_port,
            referenced_security_group_id=alb_sg.id,
            tags=tags,
            opts=child,
        )
        self.alb_security_group_id = alb_sg.id

        self.load_balancer = aws.lb.LoadBalancer(
            short_name(name, 32 - AUTONAME_SUFFIX),  # ALB names: at most 32 characters
            load_balancer_type="application",
            internal=False,
            ip_address_type="ipv4",
            subnets=list(args.public_subnet_ids),
            security_groups=[alb_sg.id],
            drop_invalid_header_fields=True,
            desync_mitigation_mode=args.desync_mitigation_mode,
            enable_deletion_protection=args.deletion_protection,
            enable_http2=True,
            enable_waf_fail_open=False,
            idle_timeout=args.idle_timeout_seconds,
            access_logs={"bucket": log_bucket.bucket, "prefix": ACCESS_LOG_PREFIX, "enabled": True},
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self._log_bucket_policy]),
        )
        lb = self.load_balancer

        self.target_group = aws.lb.TargetGroup(
            short_name(f"{name}-gw", 32 - AUTONAME_SUFFIX),
            target_type="ip",
            protocol="HTTP",
            protocol_version="HTTP1",
            port=args.target_port,
            vpc_id=args.vpc_id,
            deregistration_delay=args.deregistration_delay_seconds,
            # Streams hold a connection for seconds to minutes: balance on in-flight requests, not turns.
            load_balancing_algorithm_type="least_outstanding_requests",
            health_check={
                "enabled": True,
                "path": args.health_check_path,
                "port": "traffic-port",
                "protocol": "HTTP",
                "matcher": "200",
                "interval": 10,
                "timeout": 5,
                "healthy_threshold": 2,
                "unhealthy_threshold": 3,
            },
            tags=tags,
            opts=child,
        )

        certificate_arn = self._certificate(name, args) if args.certificate_arn is None else pulumi.Output.from_input(args.certificate_arn)
        self.certificate_arn = certificate_arn

        # Kept: the global tier attaches its API-hostname certificate to this listener (SNI).
        self.https_listener = aws.lb.Listener(
            f"{name}-https",
            load_balancer_arn=lb.arn,
            port=443,
            protocol="HTTPS",
            ssl_policy=args.ssl_policy,
            certificate_arn=certificate_arn,
            default_actions=[{"type": "forward", "target_group_arn": self.target_group.arn}],
            tags=tags,
            opts=child,
        )
        aws.lb.Listener(
            f"{name}-http",
            load_balancer_arn=lb.arn,
            port=80,
            protocol="HTTP",
            default_actions=[{"type": "redirect", "redirect": {"port": "443", "protocol": "HTTPS", "status_code": "HTTP_301"}}],
            tags=tags,
            opts=child,
        )

        if args.hosted_zone_id is not None:
            aws.route53.Record(
                f"{name}-api",
                zone_id=args.hosted_zone_id,
                name=args.domain_name,
                type="A",
                aliases=[{"name": lb.dns_name, "zone_id": lb.zone_id, "evaluate_target_health": True}],
                opts=child,
            )

        self.web_acl = self._waf(name, args.waf, lb, account_id, region, partition, tags)

        self.alb_dns_name = lb.dns_name
        self.alb_zone_id = lb.zone_id
        self.target_group_arn = self.target_group.arn
        self.api_url = f"https://{args.domain_name}"
        self.register_outputs(
            {
                "alb_dns_name": self.alb_dns_name,
                "target_group_arn": self.target_group_arn,
                "api_url": self.api_url,
                "web_acl_arn": self.web_acl.arn,
                "access_log_bucket": self.access_log_bucket,
            }
        )

    def _access_log_bucket(
        self, name: str, args: EdgeArgs, account_id: pulumi.Output[str], region: pulumi.Output[str], partition: pulumi.Output[str]
    ) -> aws.s3.Bucket:
        child = pulumi.ResourceOptions(parent=self)
        bucket = aws.s3.Bucket(f"{name}-access-logs", force_destroy=not args.deletion_protection, tags=args.tags, opts=child)
        def policy(values: list[str]) -> str:
            arn, account, region_name, part = values
            log_objects = f"{arn}/{ACCESS_LOG_PREFIX}/AWSLogs/{account}/*"
            statements: list[dict[str, object]] = [
                {
                    "Sid": "ElbLogDelivery",
                    "Effect": "Allow",
                    "Principal": {"Service": "logdelivery.elasticloadbalancing.amazonaws.com"},
                    "Action": "s3:PutObject",
                    "Resource": log_objects,
                }
            ]
            if region_name in ELB_LOG_ACCOUNTS:
                statements.append(
                    {
                        "Sid": "ElbLogDeliveryLegacyRegion",
                        "Effect": "Allow",
                        "Principal": {"AWS": f"arn:{part}:iam::{ELB_LOG_ACCOUNTS[region_name]}:root"},
                        "Action": "s3:PutObject",
                        "Resource": log_objects,
                    }
                )
            return json.dumps({"Version": "2012-10-17", "Statement": [*statements, *tls_only_statements(arn)]})

        self._log_bucket_policy = harden_private_bucket(
            self,
            f"{name}-access-logs",
            bucket,
            # ELB log delivery writes only to SSE-S3 buckets (SSE-KMS is refused for ALB access logs), so AES256 here.
            kms_key_arn=None,
            lifecycle_rules=[
                {
                    "id": "expire-access-logs",
                    "status": "Enabled",
                    "filter": {"prefix": ""},
                    "expiration": {"days": args.access_log_retention_days},
                    "noncurrent_version_expiration": {"noncurrent_days": 1},
                    "abort_incomplete_multipart_upload": {"days_after_initiation": 1},
                }
            ],
            policy=pulumi.Output.all(bucket.arn, account_id, region, partition).apply(policy),
        )
        return bucket

    def _certificate(self, name: str, args: EdgeArgs) -> pulumi.Output[str]:
        child = pulumi.ResourceOptions(parent=self)
        assert args.hosted_zone_id is not None  # EdgeArgs guarantees a zone when no certificate is given
        return dns_validated_certificate(
            f"{name}-api",
            f"{name}-api-validation",
            domain_name=args.domain_name,
            zone_id=args.hosted_zone_id,
            tags=args.tags,
            opts=child,
            record_opts=child,
        )

    def _waf(
        self,
        name: str,
        waf: WafArgs,
        lb: aws.lb.LoadBalancer,
        account_id: pulumi.Output[str],
        region: pulumi.Output[str],
        partition: pulumi.Output[str],
        tags: dict[str, str],
    ) -> aws.wafv2.WebAcl:
        child = pulumi.ResourceOptions(parent=self)
        web_acl = aws.wafv2.WebAcl(
            f"{name}-waf",
            description=f"{name}: AWS managed baseline, rate limits per API key and per IP, {waf.mode} mode",
            scope="REGIONAL",
            default_action={"allow": {}},
            rules=web_acl_rules(name, waf),
            visibility_config={"cloudwatch_metrics_enabled": True, "metric_name": f"{name}-waf", "sampled_requests_enabled": True},
            tags=tags,
            opts=child,
        )
        aws.wafv2.WebAclAssociation(f"{name}-waf", resource_arn=lb.arn, web_acl_arn=web_acl.arn, opts=child)

        log_group = aws.cloudwatch.LogGroup(
            f"{name}-waf-logs",
            name=f"aws-waf-logs-{name}",  # WAF only delivers to log groups with this prefix
            retention_in_days=waf.log_retention_days,
            kms_key_id=waf.log_kms_key_arn,
            tags=tags,
            opts=pulumi.ResourceOptions(parent=self, delete_before_replace=True),  # fixed name
        )
        delivery_policy = aws.cloudwatch.LogResourcePolicy(
            f"{name}-waf-logs",
            policy_name=f"{name}-waf-log-delivery",
            policy_document=pulumi.Output.all(log_group.arn, account_id, region, partition).apply(
                lambda v: json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [
                            {
                                "Sid": "WafLogDelivery",
                                "Effect": "Allow",
                                "Principal": {"Service": "delivery.logs.amazonaws.com"},
                                "Action": ["logs:CreateLogStream", "logs:PutLogEvents"],
                                "Resource": f"{v[0]}:*",
                                "Condition": {
                                    "StringEquals": {"aws:SourceAccount": v[1]},
                                    "ArnLike": {"aws:SourceArn": f"arn:{v[3]}:logs:{v[2]}:{v[1]}:*"},
                                },
                            }
                        ],
                    }
                )
            ),
            opts=child,
        )
        logging_filter: aws.wafv2.WebAclLoggingConfigurationLoggingFilterArgsDict | None = None
        if not waf.log_allowed_requests:
            logging_filter = {
                "default_behavior": "DROP",
                "filters": [
                    {
                        "behavior": "KEEP",
                        "requirement": "MEETS_ANY",
                        "conditions": [
                            {"action_condition": {"action": "BLOCK"}},
                            {"action_condition": {"action": "COUNT"}},
                            {"action_condition": {"action": "EXCLUDED_AS_COUNT"}},
                        ],
                    }
                ],
            }
        aws.wafv2.WebAclLoggingConfiguration(
            f"{name}-waf",
            resource_arn=web_acl.arn,
            log_destination_configs=[log_group.arn],
            # API keys travel in this header: they must never land in a log.
            redacted_fields=[{"single_header": {"name": "authorization"}}, {"single_header": {"name": "x-api-key"}}],
            logging_filter=logging_filter,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[delivery_policy]),
        )
        self.waf_log_group_name = log_group.name
        return web_acl

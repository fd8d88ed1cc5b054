"""Application Load Balancer and listeners, and the WAF in front of it (POLICIES.md 27-31)."""

from __future__ import annotations

from collections.abc import Iterator

from policies.core import MANDATORY, Res, Rule, Settings, Stack, as_list, dig, truthy

LOAD_BALANCERS = ("aws:lb/loadBalancer:LoadBalancer", "aws:alb/loadBalancer:LoadBalancer")
LISTENERS = ("aws:lb/listener:Listener", "aws:alb/listener:Listener")
WAF_ASSOCIATION = "aws:wafv2/webAclAssociation:WebAclAssociation"

# TLS 1.2+ policies with forward secrecy (AWS ELB security policies documentation).
TLS_POLICIES = [
    "ELBSecurityPolicy-TLS13-1-2-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-Res-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-Ext1-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-Ext2-2021-06",
    "ELBSecurityPolicy-TLS13-1-3-2021-06",
    "ELBSecurityPolicy-TLS13-1-2-FIPS-2023-04",
    "ELBSecurityPolicy-TLS13-1-3-FIPS-2023-04",
    "ELBSecurityPolicy-FS-1-2-Res-2020-10",
    "ELBSecurityPolicy-FS-1-2-Res-2019-08",
    "ELBSecurityPolicy-TLS-1-2-Ext-2018-06",
    "ELBSecurityPolicy-TLS-1-2-2017-01",
]


def _is_alb(r: Res) -> bool:
    return str(r.get("loadBalancerType", default="application")) == "application"


def https_or_redirect(r: Res, s: Settings) -> Iterator[str]:
    protocol = str(r.get("protocol", default="HTTP"))
    if protocol in ("HTTPS", "TLS"):
        return
    if protocol in ("TCP", "UDP", "TCP_UDP"):
        yield f"protocol {protocol} carries plaintext; use TLS"
        return
    actions = as_list(r.get("defaultActions"))
    redirects = [a for a in actions if str(a.get("type")) == "redirect"
                 and str(dig(a, "redirect", "protocol", default="#{protocol}")) == "HTTPS"]
    if not actions or len(redirects) != len(actions):
        yield f"{protocol} listener serves traffic instead of redirecting to HTTPS"


def tls_policy(r: Res, s: Settings) -> Iterator[str]:
    if str(r.get("protocol", default="HTTP")) not in ("HTTPS", "TLS"):
        return
    policy = r.get("sslPolicy")
    if policy is None:
        yield "sslPolicy is not set (AWS default ELBSecurityPolicy-2016-08 accepts TLS 1.0)"
    elif str(policy) not in s["allowed_policies"]:
        yield f"sslPolicy {policy} is not in the TLS 1.2+ allowlist"


def hardening(r: Res, s: Settings) -> Iterator[str]:
    if not _is_alb(r):
        return
    if not truthy(r.get("dropInvalidHeaderFields")):
        yield "dropInvalidHeaderFields is not true"
    mode = str(r.get("desyncMitigationMode", default="defensive"))
    if mode not in ("defensive", "strictest"):
        yield f"desyncMitigationMode is {mode}; use defensive or strictest"
    subnets = as_list(r.get("subnets")) or as_list(r.get("subnetMappings"))
    if len(subnets) < 2:
        yield f"spans {len(subnets)} subnet(s); at least 2 AZs required"


def access_logs(r: Res, s: Settings) -> Iterator[str]:
    if not truthy(r.get("accessLogs", "enabled")) or not r.get("accessLogs", "bucket"):
        yield "accessLogs are not enabled to an S3 bucket"


def deletion_protection(r: Res, s: Settings) -> Iterator[str]:
    if s["required"] and not truthy(r.get("enableDeletionProtection")):
        yield "enableDeletionProtection is not true"


def waf_associated(subject: Res, stack: Stack, s: Settings) -> Iterator[str]:
    if truthy(subject.get("internal")) or not _is_alb(subject):
        return
    if not stack.dependents(subject, (WAF_ASSOCIATION,), "resourceArn"):
        yield "internet-facing ALB has no aws.wafv2.WebAclAssociation"


RULES = [
    Rule(
        id="lb-listener-https",
        controls=("FSBP ELB.1", "CIS EKS 5.4.5", "CKV_AWS_2"),
        summary="Load balancer listeners serve HTTPS; plain HTTP listeners only redirect to HTTPS",
        remediation="Use protocol HTTPS with a certificate, or make the HTTP listener's only default action a redirect "
                    "with protocol HTTPS.",
        enforcement=MANDATORY, types=LISTENERS, checks=(https_or_redirect,), policies_md=(27,),
    ),
    Rule(
        id="lb-listener-tls-policy",
        controls=("FSBP ELB.17", "FSBP ELB.18", "CKV_AWS_103"),
        summary="HTTPS listeners use a TLS 1.2+ security policy from the allowlist (policy config allowed_policies)",
        remediation="Set sslPolicy='ELBSecurityPolicy-TLS13-1-2-2021-06'.",
        enforcement=MANDATORY, types=LISTENERS, checks=(tls_policy,), policies_md=(28,),
        config={"allowed_policies": {"type": "array", "items": {"type": "string"}, "default": TLS_POLICIES}},
    ),
    Rule(
        id="lb-hardening",
        controls=("FSBP ELB.4", "FSBP ELB.12", "FSBP ELB.13", "CKV_AWS_131", "CKV_AWS_328"),
        summary="ALBs drop invalid headers, mitigate HTTP desync (defensive or strictest) and span at least 2 AZs",
        remediation="Set dropInvalidHeaderFields=true, keep desyncMitigationMode defensive/strictest, pass 2+ subnets.",
        enforcement=MANDATORY, types=LOAD_BALANCERS, checks=(hardening,), policies_md=(29,),
    ),
    Rule(
        id="lb-access-logs",
        controls=("FSBP ELB.5", "CKV_AWS_91"),
        summary="Load balancers write access logs to S3",
        remediation="Set accessLogs={enabled: true, bucket: <log bucket>}.",
        enforcement=MANDATORY, types=LOAD_BALANCERS, checks=(access_logs,), policies_md=(30,),
    ),
    Rule(
        id="lb-deletion-protection",
        controls=("FSBP ELB.6", "CKV_AWS_150"),
        summary="Load balancers have deletion protection where the tier requires it (policy config `required`)",
        remediation="Set enableDeletionProtection=true (turn it off explicitly before an intended delete).",
        enforcement=MANDATORY, types=LOAD_BALANCERS, checks=(deletion_protection,), policies_md=(30,),
        config={"required": {"type": "boolean", "default": True}},
    ),
    Rule(
        id="alb-waf-association",
        controls=("FSBP ELB.16", "CKV2_AWS_28"),
        summary="Every internet-facing ALB is protected by a WAFv2 web ACL",
        remediation="Add aws.wafv2.WebAclAssociation(resource_arn=alb.arn, web_acl_arn=acl.arn).",
        enforcement=MANDATORY, types=LOAD_BALANCERS, stack_checks=(waf_associated,), policies_md=(31,),
    ),
]

"""WAFv2 web ACLs (POLICIES.md 32)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from policies.core import MANDATORY, Res, Rule, Settings, Stack, as_list, dig, truthy

WEB_ACL = "aws:wafv2/webAcl:WebAcl"
WEB_ACL_LOGGING = "aws:wafv2/webAclLoggingConfiguration:WebAclLoggingConfiguration"
WEB_ACL_RULE = "aws:wafv2/webAclRule:WebAclRule"


def _all_rules(acl: Res, stack: Stack) -> list[Any]:
    """Inline rules plus standalone aws.wafv2.WebAclRule resources attached to this ACL."""
    return [*as_list(acl.get("rules")), *(r.props for r in stack.dependents(acl, (WEB_ACL_RULE,), "webAclArn"))]


def managed_groups(r: Res, stack: Stack, s: Settings) -> Iterator[str]:
    present: dict[str, object] = {}
    for rule in _all_rules(r, stack):
        statement = dig(rule, "statement", "managedRuleGroupStatement")
        if statement is not None and str(statement.get("vendorName")) == "AWS":
            present[str(statement.get("name"))] = rule
    for group in s["required_managed_groups"]:
        if group not in present:
            yield f"managed rule group AWS/{group} is missing"
        elif s["require_blocking"] and dig(present[group], "overrideAction", "count") is not None:
            yield f"managed rule group AWS/{group} only counts (overrideAction count); this tier requires blocking"


def metrics(r: Res, stack: Stack, s: Settings) -> Iterator[str]:
    if not truthy(r.get("visibilityConfig", "cloudwatchMetricsEnabled")):
        yield "visibilityConfig.cloudwatchMetricsEnabled is not true"
    for rule in _all_rules(r, stack):
        if not truthy(dig(rule, "visibilityConfig", "cloudwatchMetricsEnabled")):
            yield f"rule {rule.get('name')}: visibilityConfig.cloudwatchMetricsEnabled is not true"


def logging_configured(subject: Res, stack: Stack, s: Settings) -> Iterator[str]:
    if not stack.dependents(subject, (WEB_ACL_LOGGING,), "resourceArn"):
        yield "has no aws.wafv2.WebAclLoggingConfiguration"


RULES = [
    Rule(
        id="waf-managed-rules",
        controls=("FSBP WAF.10", "FSBP WAF.12", "CKV_AWS_192"),
        summary="Web ACLs run the AWS Common and KnownBadInputs managed rule groups with CloudWatch metrics on",
        remediation="Add managedRuleGroupStatement rules AWSManagedRulesCommonRuleSet and "
                    "AWSManagedRulesKnownBadInputsRuleSet (overrideAction none) with visibilityConfig metrics enabled.",
        enforcement=MANDATORY, types=(WEB_ACL,), stack_checks=(managed_groups, metrics), policies_md=(32,),
        config={
            "required_managed_groups": {"type": "array", "items": {"type": "string"},
                                        "default": ["AWSManagedRulesCommonRuleSet", "AWSManagedRulesKnownBadInputsRuleSet"]},
            "require_blocking": {"type": "boolean", "default": True},
        },
    ),
    Rule(
        id="waf-logging",
        controls=("FSBP WAF.11", "CKV2_AWS_31"),
        summary="Every web ACL has logging configured",
        remediation="Add aws.wafv2.WebAclLoggingConfiguration(resource_arn=acl.arn, log_destination_configs=[...]).",
        enforcement=MANDATORY, types=(WEB_ACL,), stack_checks=(logging_configured,), policies_md=(32,),
    ),
]

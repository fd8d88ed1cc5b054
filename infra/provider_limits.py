"""Limits the Terraform AWS provider enforces (or creates) that AWS's API model does not hold.

pulumi-aws is bridged from hashicorp/terraform-provider-aws: its schema validators (`validation.StringLenBetween`,
`IntBetween`, `ConflictsWith`, ...) run before any AWS call, and `*_prefix` arguments get a suffix appended by the
provider. botocore's models (`infra/aws_api_model.py`) cannot see these, so they live here, one place, each with its
source file in the provider (or the AWS API reference where the model's documentation states a rule its shape
does not encode). `check_rendering` applies them to every resource of a rendered stack; `infra/config.py` and the
components read the same constants.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable

from components.postgres_database import PERFORMANCE_INSIGHTS_RETENTION_DAYS

# terraform-plugin-sdk helper/id/id.go: UniqueIDSuffixLength = 26 (a timestamp and a counter), appended by
# create.Name(name, prefix) (internal/create/naming.go) to every `*_prefix` argument.
UNIQUE_ID_SUFFIX_LENGTH = 26

# internal/service/eks/node_group.go: node_group_name StringLenBetween(0, 63);
# node_group_name_prefix StringLenBetween(0, 63-id.UniqueIDSuffixLength); ConflictsWith each other.
EKS_NODE_GROUP_NAME_MAX = 63
EKS_NODE_GROUP_NAME_PREFIX_MAX = EKS_NODE_GROUP_NAME_MAX - UNIQUE_ID_SUFFIX_LENGTH  # 37

# RDS CreateDBInstance PerformanceInsightsRetentionPeriod (botocore rds model documentation; the shape is a plain
# integer and internal/service/rds/instance.go has no validator): 7, month * 31 for month 1-23, or 731. Written once
# in the component (components may not import infra/).
RDS_PERFORMANCE_INSIGHTS_RETENTION_DAYS = PERFORMANCE_INSIGHTS_RETENTION_DAYS


def check_performance_insights_retention(days: int) -> int:
    """`days` if RDS accepts it as a Performance Insights retention, else ValueError saying what is allowed."""
    if days not in RDS_PERFORMANCE_INSIGHTS_RETENTION_DAYS:
        raise ValueError(f"got {days}; allowed: 7, a multiple of 31 from 31 to 713 (1-23 months), or 731")
    return days


@dataclass(frozen=True)
class Limit:
    """One provider rule on one input of one resource type."""

    type: str
    input: str
    rule: str
    source: str
    check: Callable[[Any], bool]
    """True when the value is allowed (called only when the input is present)."""
    autoname: bool = False
    """The input is Pulumi's auto-named `name`: when absent, check `<resource name>-<7 hex>`, the name it will get."""


@dataclass(frozen=True)
class Conflict:
    """`ConflictsWith`: at most one of `inputs` may be set."""

    type: str
    inputs: tuple[str, ...]
    source: str


def _length_at_most(limit: int) -> Callable[[Any], bool]:
    return lambda value: len(str(value)) <= limit


def _each(path: str, ok: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """Apply `ok` to `path` of every item of a list input."""
    return lambda items: all(ok(item.get(path)) for item in (items or []) if isinstance(item, dict) and item.get(path) is not None)


def _elbv2_name(value: Any) -> bool:
    text = str(value)
    return len(text) <= 32 and re.fullmatch(r"[0-9A-Za-z-]+", text) is not None and not text.startswith(("-", "internal-")) \
        and not text.endswith("-")


def _s3_bucket_name(value: Any) -> bool:
    return re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", str(value)) is not None and ".." not in str(value)


ELBV2_SOURCE = "hashicorp/terraform-provider-aws internal/service/elbv2/validate.go (validName, validTargetGroupName)"
S3_BUCKET_SOURCE = ("AWS S3 bucket naming rules, docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html "
                    "(botocore's BucketName shape carries no length or pattern)")
AUTONAME_SUFFIX = "-a1b2c3d"  # Pulumi auto-naming: '-' + 7 random hex characters

NODE_GROUP = "aws:eks/nodeGroup:NodeGroup"
NODE_GROUP_SOURCE = "hashicorp/terraform-provider-aws internal/service/eks/node_group.go"
RDS_INSTANCE = "aws:rds/instance:Instance"

LIMITS: tuple[Limit, ...] = (
    Limit(NODE_GROUP, "nodeGroupNamePrefix",
          f"at most {EKS_NODE_GROUP_NAME_PREFIX_MAX} characters (63 minus the {UNIQUE_ID_SUFFIX_LENGTH}-character suffix)",
          NODE_GROUP_SOURCE, _length_at_most(EKS_NODE_GROUP_NAME_PREFIX_MAX)),
    Limit(NODE_GROUP, "nodeGroupName", f"at most {EKS_NODE_GROUP_NAME_MAX} characters", NODE_GROUP_SOURCE,
          _length_at_most(EKS_NODE_GROUP_NAME_MAX)),
    Limit(NODE_GROUP, "taints", "at most 50 taints", NODE_GROUP_SOURCE, lambda v: len(v or []) <= 50),
    Limit(NODE_GROUP, "taints", "taint key 1-63 characters", NODE_GROUP_SOURCE,
          _each("key", lambda k: 1 <= len(str(k)) <= 63)),
    Limit(NODE_GROUP, "taints", "taint value 0-63 characters", NODE_GROUP_SOURCE, _each("value", lambda v: len(str(v)) <= 63)),
    Limit(NODE_GROUP, "updateConfig", "max_unavailable(_percentage) 1-100", NODE_GROUP_SOURCE,
          lambda v: all(1 <= float(v[k]) <= 100 for k in ("maxUnavailable", "maxUnavailablePercentage") if (v or {}).get(k) is not None)),
    Limit(NODE_GROUP, "scalingConfig", "min_size >= 0, desired_size >= 0, max_size >= 1", NODE_GROUP_SOURCE,
          lambda v: float(v.get("minSize", 0)) >= 0 and float(v.get("desiredSize", 0)) >= 0 and float(v.get("maxSize", 1)) >= 1),
    Limit(RDS_INSTANCE, "performanceInsightsRetentionPeriod", "7, 31 x 1-23 months, or 731",
          "botocore rds model, CreateDBInstance PerformanceInsightsRetentionPeriod (documentation)",
          lambda v: int(v) in RDS_PERFORMANCE_INSIGHTS_RETENTION_DAYS),
    Limit("aws:lb/loadBalancer:LoadBalancer", "name", "1-32 letters, digits, hyphens; no leading/trailing hyphen, no 'internal-'",
          ELBV2_SOURCE, _elbv2_name, autoname=True),
    Limit("aws:lb/targetGroup:TargetGroup", "name", "1-32 letters, digits, hyphens; no leading/trailing hyphen",
          ELBV2_SOURCE, _elbv2_name, autoname=True),
    Limit("aws:s3/bucket:Bucket", "bucket", "3-63 lowercase letters, digits, dots, hyphens; starts and ends alphanumeric",
          S3_BUCKET_SOURCE, _s3_bucket_name),
)

CONFLICTS: tuple[Conflict, ...] = (
    Conflict(NODE_GROUP, ("nodeGroupName", "nodeGroupNamePrefix"), NODE_GROUP_SOURCE),
    Conflict(RDS_INSTANCE, ("password", "manageMasterUserPassword"),
             "hashicorp/terraform-provider-aws internal/service/rds/instance.go (password ConflictsWith manage_master_user_password)"),
)


def check_rendering(rendering: Any) -> list[str]:
    """Every provider rule broken by a rendered resource, one line each (resource, input, value, rule, source)."""
    problems: list[str] = []
    limited = {(limit.type, limit.input) for limit in LIMITS}
    for resource in rendering.resources:
        for limit in LIMITS:
            if resource.type != limit.type:
                continue
            value = resource.inputs.get(limit.input)
            if value is None and limit.autoname and resource.custom:
                value = resource.name + AUTONAME_SUFFIX
            if value is not None:
                if not limit.check(value):
                    problems.append(f"{rendering.stack}: {resource.type} {resource.name}: {limit.input} = {value!r}: "
                                    f"{limit.rule} ({limit.source})")
        for conflict in CONFLICTS:
            if resource.type == conflict.type:
                set_inputs = [k for k in conflict.inputs if resource.inputs.get(k) not in (None, False, "")]
                if len(set_inputs) > 1:
                    problems.append(f"{rendering.stack}: {resource.type} {resource.name}: {' and '.join(set_inputs)} are both "
                                    f"set: ConflictsWith ({conflict.source})")
        # A name prefix with no limit here is a limit nobody checked: the provider appends 26 characters to it.
        for key in resource.inputs:
            if key.endswith("NamePrefix") or key == "namePrefix":
                if (resource.type, key) not in limited:
                    problems.append(f"{rendering.stack}: {resource.type} {resource.name}: {key} has no limit in "
                                    f"infra/provider_limits.py (the provider appends {UNIQUE_ID_SUFFIX_LENGTH} characters)")
    return problems

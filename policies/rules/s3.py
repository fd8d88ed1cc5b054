"""S3 buckets and their companion configuration resources (POLICIES.md 33-35).

pulumi-aws 7 configures a bucket through separate resources (public access block, ownership controls,
encryption, versioning, lifecycle, policy) that take `bucket=bucket.id`: the checks follow that dependency.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

from policies.core import ADVISORY, MANDATORY, Res, Rule, Settings, Stack, as_list, dig, truthy

BUCKETS = ("aws:s3/bucket:Bucket", "aws:s3/bucketV2:BucketV2")
PUBLIC_ACCESS_BLOCK = "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
OWNERSHIP = "aws:s3/bucketOwnershipControls:BucketOwnershipControls"
ENCRYPTION = ("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
              "aws:s3/bucketServerSideEncryptionConfigurationV2:BucketServerSideEncryptionConfigurationV2")
VERSIONING = ("aws:s3/bucketVersioning:BucketVersioning", "aws:s3/bucketVersioningV2:BucketVersioningV2")
LIFECYCLE = ("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
             "aws:s3/bucketLifecycleConfigurationV2:BucketLifecycleConfigurationV2")
POLICY = "aws:s3/bucketPolicy:BucketPolicy"
BLOCK_FLAGS = ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")


def public_access_blocked(subject: Res, stack: Stack, s: Settings) -> Iterator[str]:
    blocks = stack.dependents(subject, (PUBLIC_ACCESS_BLOCK,), "bucket")
    if not blocks:
        yield "has no aws.s3.BucketPublicAccessBlock"
    for block in blocks:
        off = [f for f in BLOCK_FLAGS if not truthy(block.get(f))]
        if off:
            yield f"public access block {block.name} leaves {off} off"


def acls_disabled(subject: Res, stack: Stack, s: Settings) -> Iterator[str]:
    owners = stack.dependents(subject, (OWNERSHIP,), "bucket")
    if not any(str(dig(o.props, "rule", "objectOwnership")) == "BucketOwnerEnforced" for o in owners):
        yield "ACLs are not disabled (aws.s3.BucketOwnershipControls with objectOwnership BucketOwnerEnforced)"


def _sse_rules(subject: Res, stack: Stack) -> list[Any]:
    rules = [rule for cfg in stack.dependents(subject, ENCRYPTION, "bucket") for rule in as_list(cfg.get("rules"))]
    inline = subject.get("serverSideEncryptionConfiguration", "rule")
    return [*rules, *([inline] if inline is not None else [])]


def sse_kms(subject: Res, stack: Stack, s: Settings) -> Iterator[str]:
    rules = _sse_rules(subject, stack)
    kms = [r for r in rules if str(dig(r, "applyServerSideEncryptionByDefault", "sseAlgorithm")) in ("aws:kms", "aws:kms:dsse")]
    if not kms:
        yield "default encryption is not SSE-KMS"
    elif not any(truthy(r.get("bucketKeyEnabled")) for r in kms):
        yield "SSE-KMS without bucketKeyEnabled (one KMS call per object)"


def _denies_insecure_transport(document: Any) -> bool:
    for statement in as_list(document.get("Statement")) if isinstance(document, Mapping) else []:
        condition = dig(statement, "Condition", "Bool", "aws:SecureTransport")
        if str(statement.get("Effect")) == "Deny" and str(condition).lower() == "false":
            return True
    return False


def tls_only(subject: Res, stack: Stack, s: Settings) -> Iterator[str]:
    documents = [p.get("policy") for p in stack.dependents(subject, (POLICY,), "bucket")] + [subject.get("policy")]
    parsed = []
    for doc in documents:
        if doc is None:
            continue
        try:
            parsed.append(json.loads(doc) if isinstance(doc, str) else doc)
        except ValueError:
            yield "bucket policy is not valid JSON"
    if not any(_denies_insecure_transport(d) for d in parsed):
        yield "no bucket policy denies requests with aws:SecureTransport false"


def versioning(subject: Res, stack: Stack, s: Settings) -> Iterator[str]:
    states = [str(dig(v.props, "versioningConfiguration", "status")) for v in stack.dependents(subject, VERSIONING, "bucket")]
    if truthy(subject.get("versioning", "enabled")):
        states.append("Enabled")
    if "Enabled" not in states:
        yield "versioning is not enabled"


def lifecycle(subject: Res, stack: Stack, s: Settings) -> Iterator[str]:
    configs = stack.dependents(subject, LIFECYCLE, "bucket")
    enabled = [r for c in configs for r in as_list(c.get("rules")) if str(r.get("status")) == "Enabled"]
    if not enabled and not as_list(subject.get("lifecycleRules")):
        yield "has no enabled lifecycle rule (objects and old versions are kept forever)"


RULES = [
    Rule(
        id="s3-public-access-block",
        controls=("FSBP S3.8", "CKV2_AWS_6"),
        summary="Every bucket blocks public access with all four flags",
        remediation="Add aws.s3.BucketPublicAccessBlock(bucket=b.id) with blockPublicAcls, blockPublicPolicy, "
                    "ignorePublicAcls and restrictPublicBuckets true.",
        enforcement=MANDATORY, types=BUCKETS, stack_checks=(public_access_blocked,), policies_md=(33,),
    ),
    Rule(
        id="s3-acls-disabled",
        controls=("FSBP S3.12",),
        summary="Every bucket disables ACLs (object ownership BucketOwnerEnforced)",
        remediation="Add aws.s3.BucketOwnershipControls(bucket=b.id, rule={objectOwnership: 'BucketOwnerEnforced'}).",
        enforcement=MANDATORY, types=BUCKETS, stack_checks=(acls_disabled,), policies_md=(33,),
    ),
    Rule(
        id="s3-sse-kms",
        controls=("FSBP S3.17", "CKV_AWS_145"),
        summary="Every bucket encrypts by default with SSE-KMS and an S3 bucket key",
        remediation="Add aws.s3.BucketServerSideEncryptionConfiguration with sseAlgorithm 'aws:kms', kmsMasterKeyId and "
                    "bucketKeyEnabled=true. (ALB access-log buckets accept only SSE-S3: list them as exceptions.)",
        enforcement=MANDATORY, types=BUCKETS, stack_checks=(sse_kms,), policies_md=(34,),
    ),
    Rule(
        id="s3-tls-only",
        controls=("FSBP S3.5", "CKV_AWS_70"),
        summary="Every bucket policy denies requests that do not use TLS",
        remediation="Attach an aws.s3.BucketPolicy with a Deny statement on Condition Bool aws:SecureTransport false.",
        enforcement=MANDATORY, types=BUCKETS, stack_checks=(tls_only,), policies_md=(35,),
    ),
    Rule(
        id="s3-versioning",
        controls=("FSBP S3.14", "CKV_AWS_21"),
        summary="Every bucket has versioning enabled",
        remediation="Add aws.s3.BucketVersioning(bucket=b.id, versioningConfiguration={status: 'Enabled'}).",
        enforcement=ADVISORY, types=BUCKETS, stack_checks=(versioning,), policies_md=(35,),
    ),
    Rule(
        id="s3-lifecycle",
        controls=("FSBP S3.13", "CKV2_AWS_61"),
        summary="Every bucket has an enabled lifecycle rule",
        remediation="Add aws.s3.BucketLifecycleConfiguration(bucket=b.id) expiring logs and noncurrent versions.",
        enforcement=ADVISORY, types=BUCKETS, stack_checks=(lifecycle,), policies_md=(35,),
    ),
]

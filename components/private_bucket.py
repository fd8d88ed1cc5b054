"""The hardening every private S3 bucket of the platform carries: the model-weights bucket, the ALB access-log bucket
and the bootstrap's Pulumi state bucket.

ACLs disabled (BucketOwnerEnforced), all four public-access block flags, default encryption, versioning, a lifecycle
configuration and a bucket policy that refuses plain HTTP and TLS below 1.2. The callers choose the encryption key,
the lifecycle rules and any statements their policy needs beyond the TLS ones.
"""

from __future__ import annotations

from typing import Sequence, Union

import pulumi
import pulumi_aws as aws

LifecycleRule = Union[aws.s3.BucketLifecycleConfigurationRuleArgs, aws.s3.BucketLifecycleConfigurationRuleArgsDict]


def tls_only_statements(bucket_arn: str, outdated_tls_sid: str = "DenyOutdatedTls") -> list[dict[str, object]]:
    """Bucket-policy statements denying plain HTTP and TLS below 1.2.

    `outdated_tls_sid` exists for the bootstrap's state bucket, whose live policy names that statement `DenyOldTls`:
    renaming it would rewrite the policy of every account already bootstrapped.
    """
    resources = [bucket_arn, f"{bucket_arn}/*"]
    return [
        {
            "Sid": "DenyInsecureTransport",
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": resources,
            "Condition": {"Bool": {"aws:SecureTransport": "false"}},
        },
        {
            "Sid": outdated_tls_sid,
            "Effect": "Deny",
            "Principal": "*",
            "Action": "s3:*",
            "Resource": resources,
            "Condition": {"NumericLessThan": {"s3:TlsVersion": "1.2"}},
        },
    ]


def harden_private_bucket(
    parent: pulumi.Resource,
    name: str,
    bucket: aws.s3.Bucket,
    *,
    kms_key_arn: pulumi.Input[str] | None,
    lifecycle_rules: Sequence[LifecycleRule],
    policy: pulumi.Input[str],
    policy_name: str | None = None,
) -> aws.s3.BucketPolicy:
    """Ownership, public-access block, encryption, versioning, lifecycle and bucket policy of `bucket`.

    Resources are children of `parent`, named `<name>-ownership`, `-public-access`, `-encryption`, `-versioning`,
    `-lifecycle` and `policy_name` (default `<name>-policy`). `kms_key_arn` None means SSE-S3 (AES256), for the
    buckets AWS services write to that refuse SSE-KMS. `policy` is the whole policy document (start from
    `tls_only_statements`). Returns the bucket policy, for whatever must wait until the bucket admits its writers.
    """
    child = pulumi.ResourceOptions(parent=parent)
    ownership = aws.s3.BucketOwnershipControls(
        f"{name}-ownership", bucket=bucket.id, rule={"object_ownership": "BucketOwnerEnforced"}, opts=child
    )
    public_access = aws.s3.BucketPublicAccessBlock(
        f"{name}-public-access",
        bucket=bucket.id,
        block_public_acls=True,
        block_public_policy=True,
        ignore_public_acls=True,
        restrict_public_buckets=True,
        opts=child,
    )
    encryption: aws.s3.BucketServerSideEncryptionConfigurationRuleArgsDict = (
        {"apply_server_side_encryption_by_default": {"sse_algorithm": "AES256"}}
        if kms_key_arn is None
        else {
            "apply_server_side_encryption_by_default": {"sse_algorithm": "aws:kms", "kms_master_key_id": kms_key_arn},
            # One KMS call per object instead of per request.
            "bucket_key_enabled": True,
        }
    )
    aws.s3.BucketServerSideEncryptionConfiguration(f"{name}-encryption", bucket=bucket.id, rules=[encryption], opts=child)
    versioning = aws.s3.BucketVersioning(
        f"{name}-versioning", bucket=bucket.id, versioning_configuration={"status": "Enabled"}, opts=child
    )
    aws.s3.BucketLifecycleConfiguration(
        f"{name}-lifecycle",
        bucket=bucket.id,
        rules=list(lifecycle_rules),
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[versioning]),
    )
    return aws.s3.BucketPolicy(
        policy_name or f"{name}-policy",
        bucket=bucket.id,
        policy=policy,
        # S3 rejects a policy while the public-access block is being written; order them.
        opts=pulumi.ResourceOptions(parent=parent, depends_on=[public_access, ownership]),
    )

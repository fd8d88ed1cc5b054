"""`ModelBucket`: the S3 bucket model weights are staged in, and the read-only policy model servers use to fetch them.

SSE-KMS with a customer-managed key and S3 Bucket Keys (one KMS call per object, not per request); versioning so a
bad upload can be rolled back; ACLs disabled and every public-access block on; a bucket policy refusing anything
but TLS 1.2+. The read policy grants object reads under the bucket and `kms:Decrypt` only when called through S3 in
this region: the workloads' IRSA role attaches `read_policy_arn` and nothing else.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import pulumi
import pulumi_aws as aws

from components.private_bucket import harden_private_bucket, tls_only_statements


@dataclass
class ModelBucketArgs:
    kms_key_arn: pulumi.Input[str]
    """Customer-managed KMS key for objects at rest."""
    noncurrent_version_retention_days: int = 30
    """Days a replaced or deleted weight file stays recoverable before S3 expires it."""
    abort_incomplete_upload_days: int = 7
    """Days after which unfinished multipart uploads (multi-GB weight shards) are cleaned up."""
    force_destroy: bool = False
    """Allow `pulumi destroy` to delete a bucket that still holds objects."""
    tags: dict[str, str] = field(default_factory=dict)
    """Tags for the bucket and the read policy."""

    def __post_init__(self) -> None:
        if not 1 <= self.noncurrent_version_retention_days <= 3650:
            raise ValueError(f"noncurrent_version_retention_days: got {self.noncurrent_version_retention_days}; allowed: 1 to 3650")
        if not 1 <= self.abort_incomplete_upload_days <= 365:
            raise ValueError(f"abort_incomplete_upload_days: got {self.abort_incomplete_upload_days}; allowed: 1 to 365")


def read_only_policy(bucket_arn: str, kms_key_arn: str, region: str) -> str:
    """IAM policy: list the bucket, read objects (any version), decrypt through S3 only."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Sid": "ListModels", "Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"], "Resource": bucket_arn},
                {"Sid": "ReadModels", "Effect": "Allow", "Action": ["s3:GetObject", "s3:GetObjectVersion"], "Resource": f"{bucket_arn}/*"},
                {
                    "Sid": "DecryptThroughS3",
                    "Effect": "Allow",
                    "Action": "kms:Decrypt",
                    "Resource": kms_key_arn,
                    "Condition": {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"}},
                },
            ],
        }
    )


class ModelBucket(pulumi.ComponentResource):
    """Private, KMS-encrypted, versioned model-weights bucket plus its read-only IAM policy."""

    bucket: aws.s3.Bucket
    bucket_name: pulumi.Output[str]
    bucket_arn: pulumi.Output[str]
    read_policy_json: pulumi.Output[str]
    read_policy_arn: pulumi.Output[str]

    def __init__(self, name: str, args: ModelBucketArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llm-platform:data:ModelBucket", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        region = aws.get_region_output(opts=pulumi.InvokeOutputOptions(parent=self))

        self.bucket = aws.s3.Bucket(f"{name}", force_destroy=args.force_destroy, tags=args.tags, opts=child)
        bucket = self.bucket
        harden_private_bucket(
            self,
            name,
            bucket,
            kms_key_arn=args.kms_key_arn,
            lifecycle_rules=[
                {
                    "id": "expire-noncurrent-and-abandoned-uploads",
                    "status": "Enabled",
                    "filter": {"prefix": ""},
                    "noncurrent_version_expiration": {"noncurrent_days": args.noncurrent_version_retention_days},
                    "abort_incomplete_multipart_upload": {"days_after_initiation": args.abort_incomplete_upload_days},
                }
            ],
            policy=bucket.arn.apply(lambda arn: json.dumps({"Version": "2012-10-17", "Statement": tls_only_statements(arn)})),
        )

        self.read_policy_json = pulumi.Output.all(bucket.arn, args.kms_key_arn, region.region).apply(
            lambda v: read_only_policy(str(v[0]), str(v[1]), str(v[2]))
        )
        read_policy = aws.iam.Policy(
            f"{name}-read",
            description="Read-only access to the model-weights bucket (attached to the model servers' IRSA role)",
            policy=self.read_policy_json,
            tags=args.tags,
            opts=child,
        )
        self.bucket_name = bucket.bucket
        self.bucket_arn = bucket.arn
        self.read_policy_arn = read_policy.arn
        self.register_outputs({"bucket_name": self.bucket_name, "bucket_arn": self.bucket_arn, "read_policy_arn": self.read_policy_arn})

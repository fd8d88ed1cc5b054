"""`ModelBucket`: the S3 bucket model weights are staged in, and the read-only policy model servers use to fetch them.

SSE-KMS with a customer-managed key and S3 Bucket Keys (one KMS call per object, not per request); versioning so a
bad upload can be rolled back; ACLs disabled and every public-access block on; a bucket policy refusing anything
but TLS 1.2+. The read policy grants object reads under the bucket and `kms:Decrypt` only when called through S3 in
this region: the workloads' IRSA role attaches `read_policy_arn` and nothing else.

Every request on the bucket (who read which weights file, when, from where) is recorded by S3 server access
logging into a second private bucket, `<name>-access-logs`, hardened the same way. That bucket is SSE-S3: S3 log
delivery cannot write to an SSE-KMS-default bucket. Its policy admits only `logging.s3.amazonaws.com`, for this
bucket and account.
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
    access_log_retention_days: int = 365
    """Days the server access logs (the record of every weights read) are kept."""
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
        if not 1 <= self.access_log_retention_days <= 3650:
            raise ValueError(f"access_log_retention_days: got {self.access_log_retention_days}; allowed: 1 to 3650")


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


ACCESS_LOG_PREFIX = "s3-access/"


def access_log_policy(log_bucket_arn: str, source_bucket_arn: str, account_id: str) -> str:
    """Bucket policy of the access-log bucket: S3 log delivery may write the source bucket's logs, nothing else."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "S3ServerAccessLogDelivery",
                    "Effect": "Allow",
                    "Principal": {"Service": "logging.s3.amazonaws.com"},
                    "Action": "s3:PutObject",
                    "Resource": f"{log_bucket_arn}/{ACCESS_LOG_PREFIX}*",
                    "Condition": {"ArnLike": {"aws:SourceArn": source_bucket_arn}, "StringEquals": {"aws:SourceAccount": account_id}},
                },
                *tls_only_statements(log_bucket_arn),
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
    access_log_bucket_name: pulumi.Output[str]

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
        self._access_logging(name, args, bucket)
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
        self.register_outputs({"bucket_name": self.bucket_name, "bucket_arn": self.bucket_arn, "read_policy_arn": self.read_policy_arn,
                               "access_log_bucket_name": self.access_log_bucket_name})

    def _access_logging(self, name: str, args: ModelBucketArgs, bucket: aws.s3.Bucket) -> None:
        """Server access logs of `bucket` into its own hardened log bucket."""
        child = pulumi.ResourceOptions(parent=self)
        account_id = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self)).account_id
        log_bucket = aws.s3.Bucket(f"{name}-access-logs", force_destroy=args.force_destroy, tags=args.tags, opts=child)
        policy = harden_private_bucket(
            self,
            f"{name}-access-logs",
            log_bucket,
            kms_key_arn=None,  # S3 server access logging refuses target buckets whose default encryption is SSE-KMS
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
            policy=pulumi.Output.all(log_bucket.arn, bucket.arn, account_id).apply(
                lambda v: access_log_policy(str(v[0]), str(v[1]), str(v[2]))
            ),
        )
        aws.s3.BucketLogging(
            f"{name}-access-logging",
            bucket=bucket.id,
            target_bucket=log_bucket.id,
            target_prefix=ACCESS_LOG_PREFIX,
            # Partitioned keys (<prefix><account>/<region>/<bucket>/<yyyy>/<mm>/<dd>/...) keep Athena scans to the days asked.
            target_object_key_format={"partitioned_prefix": {"partition_date_source": "EventTime"}},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[policy]),
        )
        self.access_log_bucket_name = log_bucket.bucket

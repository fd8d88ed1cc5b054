"""`ArtifactReplication`: our container images and model weights present in every region, encrypted there with that region's key.

Images: one ECR registry replication configuration in the home region copies every repository under the platform
prefix (the ones `bootstrap/` creates) to each other region on push. Replicated repositories are created by ECR;
a repository creation template in each destination region makes them immutable and KMS-encrypted with the
destination's own key (ECR needs a role it can assume for that).

Weights: each region has its own model bucket (the regional platform creates one); S3 Cross-Region Replication
copies every object version from the home bucket into the others, re-encrypting with the destination bucket's
KMS key, with delete markers replicated so a withdrawn model disappears everywhere. Replication Time Control
(15 minutes for 99.99% of objects, with metrics) is on by default: a new model is servable in every region within
a known time. Both buckets are versioned (a CRR prerequisite; the model bucket is versioned by design).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Sequence

import pulumi
import pulumi_aws as aws

from components.irsa import service_trust_policy
from components.kms import EncryptionKey, EncryptionKeyArgs


@dataclass
class ReplicaRegion:
    region: str
    provider: aws.Provider
    """The destination region's explicit AWS provider."""
    kms_key_arn: pulumi.Input[str] | None = None
    """KMS key of the destination region for replicated images; None creates one there (rotated, alias `<name>-images-<region>`)."""
    bucket_arn: pulumi.Input[str] | None = None
    """The destination region's model bucket; None leaves weights out of this region."""
    bucket_kms_key_arn: pulumi.Input[str] | None = None
    """KMS key of the destination bucket (replicated weights are re-encrypted with it); required with `bucket_arn`."""


@dataclass
class ArtifactReplicationArgs:
    home_region: str
    destinations: Sequence[ReplicaRegion]
    ecr_repository_prefix: str = "llm-platform"
    """Repositories whose name starts with this prefix are replicated."""
    source_bucket_id: pulumi.Input[str] | None = None
    """The home region's model bucket name; None skips weight replication."""
    source_bucket_arn: pulumi.Input[str] | None = None
    source_kms_key_arn: pulumi.Input[str] | None = None
    """KMS key of the source bucket (replication decrypts with it)."""
    replication_time_control: bool = True
    """S3 RTC: 99.99% of objects replicated within 15 minutes, with replication metrics."""
    source_dependencies: Sequence[pulumi.Resource] = ()
    """Resources the bucket replication must wait for (the source bucket's versioning)."""
    account_id: pulumi.Input[str] | None = None
    """The AWS account (registry id); None asks STS through the home region, which a region-loss run cannot."""
    partition: str = "aws"
    tags: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.destinations:
            raise ValueError("destinations: got none; allowed: one or more regions other than the home region")
        regions = [d.region for d in self.destinations]
        if self.home_region in regions or len(set(regions)) != len(regions):
            raise ValueError(f"destinations: got regions {regions}; allowed: distinct regions other than {self.home_region}")
        if not re.fullmatch(r"[a-z0-9][a-z0-9._/-]{0,63}", self.ecr_repository_prefix):
            raise ValueError(f"ecr_repository_prefix: got {self.ecr_repository_prefix!r}; allowed: an ECR repository name prefix such as llm-platform")
        for d in self.destinations:
            if d.bucket_arn is not None and d.bucket_kms_key_arn is None:
                raise ValueError(f"destinations[{d.region}].bucket_kms_key_arn: got None with a bucket_arn; allowed: the destination bucket's KMS key")
        bucket_parts = (self.source_bucket_id, self.source_bucket_arn, self.source_kms_key_arn)
        if any(p is not None for p in bucket_parts) and not all(p is not None for p in bucket_parts):
            raise ValueError("source_bucket_id/source_bucket_arn/source_kms_key_arn: got some but not all; allowed: all three or none")


def replicated_repository_arns(partition: str, account_id: str, regions: Sequence[str], prefix: str) -> list[str]:
    """The repositories ECR creates by replication in each destination region: every name matching the PREFIX_MATCH
    filter (a plain string prefix, so `<prefix>*`, not `<prefix>/*`)."""
    return [f"arn:{partition}:ecr:{region}:{account_id}:repository/{prefix}*" for region in regions]


def ecr_template_role_policy(key_arns: list[str], repository_arns: list[str]) -> str:
    """What ECR needs to create replicated repositories encrypted with the destination keys. All three ECR actions
    take the `repository` resource type (IAM service authorization reference), so they are scoped to the replicated
    repositories, not `*`; the KMS actions take `key`."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {"Sid": "CreateReplicatedRepositories", "Effect": "Allow",
                 "Action": ["ecr:CreateRepository", "ecr:ReplicateImage", "ecr:TagResource"], "Resource": repository_arns},
                {"Sid": "EncryptWithRegionKeys", "Effect": "Allow",
                 "Action": ["kms:CreateGrant", "kms:RetireGrant", "kms:DescribeKey"], "Resource": key_arns},
            ],
        }
    )


ECR_IMAGE_HOST = re.compile(r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com/(?P<path>.+)$")


def replica_image_ref(ref: str, region: str, prefix: str) -> str:
    """`ref` as pulled in `region`: an image of a replicated repository (`<prefix>...` in any of the account's ECR
    registries) comes from that region's replica, so a region never pulls across regions nor from a lost one.
    Other references (public registries, repositories outside the prefix) are returned unchanged."""
    m = ECR_IMAGE_HOST.match(ref)
    if m is None or not m["path"].startswith(prefix):
        return ref
    return f"{m['account']}.dkr.ecr.{region}.amazonaws.com/{m['path']}"


def _s3_key_context(bucket_arn: str) -> list[str]:
    """`kms:EncryptionContext:aws:s3:arn` values S3 uses for a bucket's objects: the bucket ARN when S3 Bucket Keys are
    on (our buckets: private_bucket.py), the object ARN for objects written before they were (S3 User Guide,
    "Replicating encrypted objects": with Bucket Keys the context is the bucket ARN, not `<bucket>/*`)."""
    return [bucket_arn, f"{bucket_arn}/*"]


def s3_replication_policy(source_bucket_arn: str, source_key_arn: str, home_region: str,
                          destinations: list[tuple[str, str, str]]) -> str:
    """Least privilege for S3 CRR: read versions from the source, write replicas to the destinations, re-encrypt.

    With S3 Bucket Keys, S3 acting for the replication role creates the destination's bucket-level key
    (GenerateDataKey) and decrypts it again to derive object keys (Decrypt): both on each destination key."""
    dest_objects = [f"{arn}/*" for _, arn, _ in destinations]
    statements: list[dict[str, object]] = [
        {"Sid": "ReadSourceConfiguration", "Effect": "Allow",
         "Action": ["s3:GetReplicationConfiguration", "s3:ListBucket"], "Resource": source_bucket_arn},
        {"Sid": "ReadSourceVersions", "Effect": "Allow",
         "Action": ["s3:GetObjectVersionForReplication", "s3:GetObjectVersionAcl", "s3:GetObjectVersionTagging"],
         "Resource": f"{source_bucket_arn}/*"},
        {"Sid": "WriteReplicas", "Effect": "Allow",
         "Action": ["s3:ReplicateObject", "s3:ReplicateDelete", "s3:ReplicateTags"], "Resource": dest_objects},
        {"Sid": "DecryptSource", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": source_key_arn,
         "Condition": {"StringEquals": {"kms:ViaService": f"s3.{home_region}.amazonaws.com"},
                       "StringLike": {"kms:EncryptionContext:aws:s3:arn": _s3_key_context(source_bucket_arn)}}},
    ]
    for region, bucket_arn, key_arn in destinations:
        statements.append(
            {"Sid": f"EncryptReplicas{re.sub(r'[^A-Za-z0-9]', '', region)}", "Effect": "Allow",
             "Action": ["kms:Encrypt", "kms:GenerateDataKey", "kms:Decrypt"], "Resource": key_arn,
             "Condition": {"StringEquals": {"kms:ViaService": f"s3.{region}.amazonaws.com"},
                           "StringLike": {"kms:EncryptionContext:aws:s3:arn": _s3_key_context(bucket_arn)}}}
        )
    return json.dumps({"Version": "2012-10-17", "Statement": statements})


class ArtifactReplication(pulumi.ComponentResource):
    """ECR cross-region replication (+ creation templates) and S3 cross-region replication of the model bucket."""

    ecr_replication: aws.ecr.ReplicationConfiguration
    image_key_arns: dict[str, pulumi.Input[str]]
    """Per destination region: the key its replicated repositories are encrypted with."""
    bucket_replication: aws.s3.BucketReplicationConfig | None

    def __init__(self, name: str, args: ArtifactReplicationArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llm-platform:global:ArtifactReplication", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = args.tags
        account_id = (pulumi.Output.from_input(args.account_id) if args.account_id is not None
                      else aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self)).account_id)

        # --- images ---------------------------------------------------------------------------------------
        image_keys: dict[str, pulumi.Input[str]] = {}
        for dest in args.destinations:
            if dest.kms_key_arn is not None:
                image_keys[dest.region] = dest.kms_key_arn
            else:
                image_keys[dest.region] = EncryptionKey(
                    f"{name}-images-{dest.region}",
                    EncryptionKeyArgs(description=f"{name}: container images replicated from {args.home_region}", tags=tags),
                    opts=pulumi.ResourceOptions(parent=self, provider=dest.provider),
                ).arn
        self.image_key_arns = image_keys
        template_role = aws.iam.Role(
            f"{name}-ecr-templates",
            description="ECR creates replicated repositories encrypted with each region's KMS key",
            assume_role_policy=service_trust_policy("ecr.amazonaws.com"),
            tags=tags,
            opts=child,
        )
        template_policy = aws.iam.RolePolicy(
            f"{name}-ecr-templates",
            role=template_role.id,
            policy=pulumi.Output.all(account_id, *image_keys.values()).apply(
                lambda v: ecr_template_role_policy(
                    [str(k) for k in v[1:]],
                    replicated_repository_arns(args.partition, str(v[0]), [d.region for d in args.destinations], args.ecr_repository_prefix),
                )
            ),
            opts=child,
        )
        templates: list[pulumi.Resource] = []
        for dest in args.destinations:
            templates.append(
                aws.ecr.RepositoryCreationTemplate(
                    f"{name}-ecr-template-{dest.region}",
                    prefix=args.ecr_repository_prefix,
                    applied_fors=["REPLICATION"],
                    description=f"Replicas of {args.ecr_repository_prefix}/* from {args.home_region}: immutable, KMS with this region's key",
                    image_tag_mutability="IMMUTABLE",
                    encryption_configurations=[{"encryption_type": "KMS", "kms_key": image_keys[dest.region]}],
                    custom_role_arn=template_role.arn,
                    resource_tags=tags,
                    opts=pulumi.ResourceOptions(parent=self, provider=dest.provider, depends_on=[template_policy]),
                )
            )
        self.ecr_replication = aws.ecr.ReplicationConfiguration(
            f"{name}-ecr",
            replication_configuration={
                "rules": [
                    {
                        "destinations": [{"region": d.region, "registry_id": account_id} for d in args.destinations],
                        "repository_filters": [{"filter": args.ecr_repository_prefix, "filter_type": "PREFIX_MATCH"}],
                    }
                ]
            },
            # Templates first: a repository replicated before its template exists would get default settings.
            opts=pulumi.ResourceOptions(parent=self, depends_on=templates),
        )

        # --- weights --------------------------------------------------------------------------------------
        self.bucket_replication = None
        targets = [d for d in args.destinations if d.bucket_arn is not None and d.bucket_kms_key_arn is not None]
        if args.source_bucket_id is not None and args.source_bucket_arn is not None and args.source_kms_key_arn is not None and targets:
            replication_role = aws.iam.Role(
                f"{name}-s3",
                description=f"S3 cross-region replication of the model bucket from {args.home_region}",
                assume_role_policy=service_trust_policy("s3.amazonaws.com"),
                tags=tags,
                opts=child,
            )
            dest_parts = pulumi.Output.all(*[pulumi.Output.all(d.region, d.bucket_arn, d.bucket_kms_key_arn) for d in targets])
            policy = aws.iam.RolePolicy(
                f"{name}-s3",
                role=replication_role.id,
                policy=pulumi.Output.all(args.source_bucket_arn, args.source_kms_key_arn, dest_parts).apply(
                    lambda v: s3_replication_policy(str(v[0]), str(v[1]), args.home_region,
                                                    [(str(r), str(b), str(k)) for r, b, k in v[2]])
                ),
                opts=child,
            )
            rules: list[aws.s3.BucketReplicationConfigRuleArgsDict] = []
            for priority, dest in enumerate(targets):
                destination: aws.s3.BucketReplicationConfigRuleDestinationArgsDict = {
                    "bucket": dest.bucket_arn,  # type: ignore[typeddict-item]
                    "storage_class": "STANDARD",
                    "encryption_configuration": {"replica_kms_key_id": dest.bucket_kms_key_arn},  # type: ignore[typeddict-item]
                }
                if args.replication_time_control:
                    destination["replication_time"] = {"status": "Enabled", "time": {"minutes": 15}}
                    destination["metrics"] = {"status": "Enabled", "event_threshold": {"minutes": 15}}
                rules.append(
                    {
                        "id": f"weights-to-{dest.region}",
                        "priority": priority,
                        "status": "Enabled",
                        "filter": {"prefix": ""},
                        "delete_marker_replication": {"status": "Enabled"},
                        "source_selection_criteria": {"sse_kms_encrypted_objects": {"status": "Enabled"}},
                        "destination": destination,
                    }
                )
            self.bucket_replication = aws.s3.BucketReplicationConfig(
                f"{name}-s3",
                bucket=args.source_bucket_id,
                role=replication_role.arn,
                rules=rules,
                opts=pulumi.ResourceOptions(parent=self, depends_on=[policy, *args.source_dependencies]),
            )

        self.register_outputs({"ecr_replication_registry": self.ecr_replication.registry_id})

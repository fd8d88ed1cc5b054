"""The bootstrap: what must exist before the platform's first `pulumi up`, and before CI can run at all.

Creates, in one region:
- an S3 bucket for Pulumi state (DIY backend `s3://...`): SSE-KMS with a bucket key, versioning, all four public
  access block flags, ACLs disabled (BucketOwnerEnforced), TLS-only bucket policy, lifecycle for old versions;
- KMS keys: one for the state bucket, one for stack secrets (`--secrets-provider awskms://alias/...`), one for ECR;
- the GitHub Actions OIDC provider (or reuses the account's existing one) and the CI roles, each trusting exactly one
  OIDC subject of this repository (audience `sts.amazonaws.com`), so no job can reach a role meant for another:
    * `<prefix>-ci-preview`          — `repo:<owner>/<repo>:pull_request`: any pull request, unattended. Read-only AWS
      (quotas, offerings, versions for preflight); it cannot read state, S3 objects, secret values or SSM parameters,
      and cannot decrypt with any KMS key;
    * `<prefix>-ci-reviewed-preview` — `...:environment:reviewed-preview`: `pulumi preview` of a pull request after a
      maintainer approved that run (the environment's required reviewers). Read-only AWS, state read (no writes: a
      DIY-backend preview takes no lock), decrypt with the state key, the secrets key (a preview decrypts the stack's secrets), EKS view access (stack config);
    * `<prefix>-ci-deploy-<env>`     — `...:environment:<env>` for dev, small, prod, global: `pulumi up` of that
      stack, only in that stack's regions;
    * `<prefix>-ci-images`           — `...:environment:images`: push to the platform's ECR repositories only;
- ECR repositories `<prefix>/gateway` and `<prefix>/vllm`: immutable tags, scan on push, KMS, lifecycle policy.

Least privilege, and where it stops (README "Deploying for real" repeats this for operators):
- Pull requests run code the PR author wrote. Stack state holds generated secrets (Redis AUTH tokens, the ledger
  password, the gateway admin token), encrypted with the secrets key; whoever can decrypt it while running the PR's
  code can print them. Pulumi writes even write-only (`*_wo`) inputs into state (as secrets), so the program cannot
  keep them out. Hence two preview roles: the unattended one cannot decrypt anything, and the one that can is
  reachable only from the `reviewed-preview` environment, i.e. after a maintainer has read the change and approved.
- A deploy role creates IAM roles for EKS, nodes and IRSA, so it is admin-equivalent inside the account however
  its policy is written. The policy still narrows it: only the services the platform uses, only its stack's
  regions, no IAM users or access keys, `iam:PassRole` only to the services that receive the platform's roles, and
  it cannot alter the bootstrap (state bucket settings, keys, CI roles and their managed policies, OIDC provider, image repositories). The real
  boundary is GitHub: protected `main`, environments with required reviewers and deployment-branch rules, and
  ideally one AWS account per tier.
"""

from __future__ import annotations

import functools
import json
import operator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pulumi
import pulumi_aws as aws

from bootstrap.config import (
    IMAGES_ENVIRONMENT,
    PROJECT,
    REVIEWED_PREVIEW_ENVIRONMENT,
    STACKS_DIR,
    BootstrapConfig,
    BootstrapConfigError,
    bootstrap_config_from_pulumi,
    known_stack_names,
    parse_bootstrap_config,
)
from components.kms import EncryptionKey, EncryptionKeyArgs
from components.private_bucket import harden_private_bucket, tls_only_statements
from infra.config import PROJECT as PLATFORM_PROJECT  # the platform's stacks' state lives under this project name

GITHUB_OIDC_HOST = "token.actions.githubusercontent.com"
# Every `pulumi login` to a DIY backend reads the backend's format version from here.
BACKEND_META_OBJECT = ".pulumi/meta.yaml"
STS_AUDIENCE = "sts.amazonaws.com"
# Services the platform's program manages (infra/, components/). A new AWS service in the program needs a line here.
# tests/delivery/test_iam_coverage.py derives them from every rendered stack and fails when one is missing here.
PLATFORM_SERVICES = (
    "acm", "autoscaling", "cloudwatch", "ec2", "ecr", "eks", "elasticache", "elasticloadbalancing", "kms", "logs",
    "pi", "rds", "route53", "s3", "secretsmanager", "wafv2",
)
# Global services (called in us-east-1 whatever the stack's region): excluded from the region guard.
GLOBAL_SERVICE_ACTIONS = ("iam:*", "sts:*", "route53:*", "route53domains:*", "support:*", "health:*", "pricing:*")
# The services the platform hands roles to: EKS cluster/node roles, RDS enhanced monitoring, VPC flow logs, S3
# replication roles and the ECR repository-creation-template role (global tier). The same test derives them from
# the trust policies of every rendered role.
PASS_ROLE_SERVICES = (
    "ec2.amazonaws.com", "ecr.amazonaws.com", "eks.amazonaws.com", "monitoring.rds.amazonaws.com", "s3.amazonaws.com",
    "vpc-flow-logs.amazonaws.com",
)
IAM_MANAGE_ACTIONS = (
    "iam:Get*", "iam:List*",
    "iam:CreateRole", "iam:DeleteRole", "iam:UpdateRole", "iam:UpdateRoleDescription", "iam:UpdateAssumeRolePolicy",
    "iam:TagRole", "iam:UntagRole", "iam:PutRolePolicy", "iam:DeleteRolePolicy", "iam:AttachRolePolicy",
    "iam:DetachRolePolicy", "iam:CreatePolicy", "iam:DeletePolicy", "iam:CreatePolicyVersion",
    "iam:DeletePolicyVersion", "iam:SetDefaultPolicyVersion", "iam:TagPolicy", "iam:UntagPolicy",
    "iam:CreateOpenIDConnectProvider", "iam:DeleteOpenIDConnectProvider", "iam:TagOpenIDConnectProvider",
    "iam:UntagOpenIDConnectProvider", "iam:UpdateOpenIDConnectProviderThumbprint",
    "iam:AddClientIDToOpenIDConnectProvider", "iam:RemoveClientIDFromOpenIDConnectProvider",
    "iam:CreateInstanceProfile", "iam:DeleteInstanceProfile", "iam:AddRoleToInstanceProfile",
    "iam:RemoveRoleFromInstanceProfile", "iam:TagInstanceProfile", "iam:CreateServiceLinkedRole",
)
IDENTITY_ESCALATION_ACTIONS = (
    "iam:CreateUser", "iam:CreateAccessKey", "iam:CreateLoginProfile", "iam:UpdateLoginProfile",
    "iam:AttachUserPolicy", "iam:PutUserPolicy", "iam:AddUserToGroup", "iam:CreateGroup", "iam:AttachGroupPolicy",
    "iam:PutGroupPolicy", "iam:CreateSAMLProvider", "iam:UpdateAccountPasswordPolicy", "organizations:*", "account:*",
)
# What a deploy role may still do to the bootstrap's image repositories (it manages ECR for the global tier).
ECR_READ_ACTIONS = (
    "ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:Describe*", "ecr:GetDownloadUrlForLayer",
    "ecr:GetLifecyclePolicy", "ecr:GetRepositoryPolicy", "ecr:ListImages", "ecr:ListTagsForResource",
)
ECR_PUSH_ACTIONS = (
    "ecr:BatchCheckLayerAvailability", "ecr:BatchGetImage", "ecr:CompleteLayerUpload", "ecr:DescribeImages",
    "ecr:DescribeImageScanFindings", "ecr:DescribeRepositories", "ecr:GetDownloadUrlForLayer",
    "ecr:InitiateLayerUpload", "ecr:PutImage", "ecr:UploadLayerPart",
)


def github_subjects(cfg: BootstrapConfig) -> dict[str, list[str]]:
    """The exact OIDC `sub` claim each CI role trusts, by role kind (GitHub's default subject format).

    A job that names an environment presents `repo:<owner>/<repo>:environment:<name>` whatever its event or branch,
    so each role below is reachable only through its environment's protection rules; the one role without an
    environment is the unattended pull-request role, which can change and decrypt nothing.
    """
    repo = f"repo:{cfg.github_repository}"
    return {
        "preview": [f"{repo}:pull_request"],
        "reviewed-preview": [f"{repo}:environment:{REVIEWED_PREVIEW_ENVIRONMENT}"],
        **{f"deploy-{env}": [f"{repo}:environment:{env}"] for env in cfg.environments},
        "images": [f"{repo}:environment:{IMAGES_ENVIRONMENT}"],
    }


def github_trust_policy(provider_arn: str, subjects: list[str]) -> dict[str, Any]:
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "GitHubActionsOidc",
                "Effect": "Allow",
                "Principal": {"Federated": provider_arn},
                "Action": "sts:AssumeRoleWithWebIdentity",
                # StringEquals, not StringLike: no wildcard subject can match a fork or another branch.
                "Condition": {
                    "StringEquals": {
                        f"{GITHUB_OIDC_HOST}:aud": STS_AUDIENCE,
                        f"{GITHUB_OIDC_HOST}:sub": subjects,
                    }
                },
            }
        ],
    }


@dataclass(frozen=True)
class BootstrapArns:
    """ARNs the CI policies refer to (plain strings, so the policy functions are testable without an engine)."""

    partition: str
    account_id: str
    region: str
    state_bucket: str
    state_key: str
    secrets_key: str
    ecr_key: str
    ecr_repositories: tuple[str, ...]
    oidc_provider: str
    ci_roles: tuple[str, ...]
    # The CI roles' managed policies (`<prefix>-ci-*`): a deploy role that could add a version to its own policy, or
    # to another environment's, would lift every limit below.
    ci_policies: tuple[str, ...] = ()

    @property
    def state_bucket_arn(self) -> str:
        return f"arn:{self.partition}:s3:::{self.state_bucket}"


def stack_state_objects(stack: str, project: str = PLATFORM_PROJECT) -> list[str]:
    """Object keys (patterns) of one stack in a DIY backend: its checkpoint (and `.bak`/`.gz` variants), update
    history, backups and locks (pulumi/pulumi pkg/backend/diy: `.pulumi/{stacks,history,backups}/<project>/<stack>`,
    locks under `.pulumi/locks/<organization/project/stack>`; the organization of a DIY stack is `organization`)."""
    return [
        f".pulumi/stacks/{project}/{stack}.json*",
        f".pulumi/history/{project}/{stack}/*",
        f".pulumi/backups/{project}/{stack}/*",
        *stack_lock_objects(stack, project),
    ]


def stack_lock_objects(stack: str, project: str = PLATFORM_PROJECT) -> list[str]:
    return [f".pulumi/locks/organization/{project}/{stack}/*"]


def _state_statements(arns: BootstrapArns, read: list[str], write: list[str]) -> list[dict[str, Any]]:
    """Access to the given state objects only (and the backend's `meta.yaml`, which every login reads): a role of
    one stack cannot read another stack's state, nor the bootstrap's. No `write`: read the state, write nothing
    (decrypt the state key, still encrypt new secret values with the secrets key)."""
    bucket = arns.state_bucket_arn
    statements: list[dict[str, Any]] = [
        {"Sid": "StateList", "Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation", "s3:GetBucketVersioning"], "Resource": bucket},
        {"Sid": "StateRead", "Effect": "Allow", "Action": ["s3:GetObject", "s3:GetObjectVersion"],
         "Resource": [f"{bucket}/{BACKEND_META_OBJECT}", *(f"{bucket}/{key}" for key in read)]},
    ]
    if write:
        statements += [
            {"Sid": "StateWrite", "Effect": "Allow", "Action": ["s3:PutObject", "s3:DeleteObject"], "Resource": [f"{bucket}/{key}" for key in write]},
            {
                "Sid": "StateAndSecretsKeys",
                "Effect": "Allow",
                "Action": ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"],
                "Resource": [arns.state_key, arns.secrets_key],
            },
        ]
    else:
        statements += [
            {"Sid": "StateKeyDecrypt", "Effect": "Allow", "Action": ["kms:Decrypt", "kms:DescribeKey"], "Resource": arns.state_key},
            {"Sid": "SecretsKey", "Effect": "Allow", "Action": ["kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:DescribeKey"],
             "Resource": arns.secrets_key},
        ]
    return statements


# Reading what is not configuration: object contents, secret values, parameters (outside AWS's public ones).
SECRET_READ_ACTIONS = ("secretsmanager:GetSecretValue", "secretsmanager:BatchGetSecretValue")
OBJECT_AND_PARAMETER_READ_ACTIONS = (
    "s3:GetObject", "s3:GetObjectVersion", "ssm:GetParameter", "ssm:GetParameters", "ssm:GetParametersByPath",
    "ssm:GetParameterHistory",
)
DECRYPT_ACTIONS = ("kms:Decrypt", "kms:ReEncryptFrom")


def _public_parameters(arns: BootstrapArns) -> str:
    # AWS public parameters have an empty account field; `*` matches it (and parliament checks the ARN format).
    return f"arn:{arns.partition}:ssm:*:*:parameter/aws/service/*"


def preview_policy(arns: BootstrapArns) -> dict[str, Any]:
    """Inline policy of the unattended pull-request role, on top of AWS `ReadOnlyAccess`: denies, nothing allowed."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "NoDecryptNoSecretValues", "Effect": "Deny", "Action": [*DECRYPT_ACTIONS, *SECRET_READ_ACTIONS], "Resource": "*"},
            {
                "Sid": "NoObjectsOrParameters",
                "Effect": "Deny",
                "Action": list(OBJECT_AND_PARAMETER_READ_ACTIONS),
                "NotResource": [_public_parameters(arns)],
            },
        ],
    }


def reviewed_preview_policy(arns: BootstrapArns, stacks: list[str]) -> dict[str, Any]:
    """Inline policy of the reviewed-preview role, on top of AWS `ReadOnlyAccess`."""
    state = [key for stack in stacks for key in stack_state_objects(stack)]
    return {
        "Version": "2012-10-17",
        "Statement": [
            # A DIY-backend preview reads the stack's state and writes nothing: it takes no lock (pulumi/pulumi
            # pkg/backend/diy/backend.go: Preview runs the update as a dry run without Lock).
            *_state_statements(arns, read=state, write=[]),
            {"Sid": "NoSecretValues", "Effect": "Deny", "Action": list(SECRET_READ_ACTIONS), "Resource": "*"},
            {
                "Sid": "NoOtherObjectsOrParameters",
                "Effect": "Deny",
                "Action": list(OBJECT_AND_PARAMETER_READ_ACTIONS),
                "NotResource": [f"{arns.state_bucket_arn}/{BACKEND_META_OBJECT}", *(f"{arns.state_bucket_arn}/{key}" for key in state),
                                _public_parameters(arns)],
            },
            {
                "Sid": "NoOtherKeys",
                "Effect": "Deny",
                "Action": list(DECRYPT_ACTIONS),
                "NotResource": [arns.state_key, arns.secrets_key],
            },
        ],
    }


# A managed policy holds at most 6,144 characters, whitespace not counted (AWS "IAM and AWS STS quotas"); one
# document of allows and guards overflows at a 16-character name_prefix and a long region. Each deploy role gets two
# managed policies: what it may do, and the denies that fence it in (a deny in any attached policy applies).
DEPLOY_POLICY_SUFFIXES = ("", "-guards")
MANAGED_POLICY_MAX_CHARS = 6144


def deploy_policies(arns: BootstrapArns, regions: list[str], stack: str) -> dict[str, dict[str, Any]]:
    """Managed policies of one environment's deploy role (`pulumi up` of its stack), by name suffix."""
    return {"": deploy_policy(arns, stack), "-guards": deploy_guards_policy(arns, regions)}


def deploy_policy(arns: BootstrapArns, stack: str) -> dict[str, Any]:
    """What one environment's deploy role may do. See the module docstring."""
    platform_actions = sorted(f"{service}:*" for service in PLATFORM_SERVICES)
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "PlatformServices", "Effect": "Allow", "Action": [a for a in platform_actions if a != "s3:*"], "Resource": "*"},
            # S3 everywhere but the state bucket, where StateRead/StateWrite admit this stack's objects only.
            {"Sid": "PlatformBuckets", "Effect": "Allow", "Action": "s3:*",
             "NotResource": [arns.state_bucket_arn, f"{arns.state_bucket_arn}/*"]},
            {"Sid": "PlatformIdentities", "Effect": "Allow", "Action": list(IAM_MANAGE_ACTIONS), "Resource": "*"},
            {
                "Sid": "PublicAmiParameters",
                "Effect": "Allow",
                "Action": ["ssm:GetParameter", "ssm:GetParameters"],
                "Resource": _public_parameters(arns),
            },
            {
                "Sid": "PreflightQuotaReads",
                "Effect": "Allow",
                "Action": ["servicequotas:GetServiceQuota", "servicequotas:GetAWSDefaultServiceQuota"],
                "Resource": "*",
            },
            {
                "Sid": "PassRolesToPlatformServices",
                "Effect": "Allow",
                "Action": "iam:PassRole",
                "Resource": "*",
                "Condition": {"StringEquals": {"iam:PassedToService": list(PASS_ROLE_SERVICES)}},
            },
            *_state_statements(arns, read=stack_state_objects(stack), write=stack_state_objects(stack)),
        ],
    }


def deploy_guards_policy(arns: BootstrapArns, regions: list[str]) -> dict[str, Any]:
    """The denies on one environment's deploy role: its regions only, no long-lived identities, the bootstrap fixed."""
    bootstrap_keys = [arns.state_key, arns.secrets_key, arns.ecr_key]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "OnlyTheStacksRegions",
                "Effect": "Deny",
                "NotAction": list(GLOBAL_SERVICE_ACTIONS),
                "Resource": "*",
                "Condition": {"StringNotEquals": {"aws:RequestedRegion": regions}},
            },
            {"Sid": "NoLongLivedIdentities", "Effect": "Deny", "Action": list(IDENTITY_ESCALATION_ACTIONS), "Resource": "*"},
            {
                "Sid": "BootstrapIdentitiesReadOnly",
                "Effect": "Deny",
                "NotAction": ["iam:Get*", "iam:List*"],
                "Resource": [*arns.ci_roles, *arns.ci_policies, arns.oidc_provider],
            },
            {
                "Sid": "StateBucketSettingsFixed",
                "Effect": "Deny",
                "NotAction": ["s3:ListBucket", "s3:GetBucket*", "s3:GetObject*", "s3:PutObject", "s3:DeleteObject",
                              "s3:GetEncryptionConfiguration", "s3:GetLifecycleConfiguration"],
                "Resource": [arns.state_bucket_arn, f"{arns.state_bucket_arn}/*"],
            },
            {
                "Sid": "BootstrapKeysFixed",
                "Effect": "Deny",
                "Action": ["kms:ScheduleKeyDeletion", "kms:DisableKey", "kms:PutKeyPolicy", "kms:DisableKeyRotation",
                           "kms:CreateGrant", "kms:RevokeGrant", "kms:UpdateAlias", "kms:DeleteAlias"],
                "Resource": bootstrap_keys,
            },
            {
                "Sid": "BootstrapRepositoriesReadOnly",
                "Effect": "Deny",
                "NotAction": list(ECR_READ_ACTIONS),
                "Resource": list(arns.ecr_repositories),
            },
        ],
    }


def images_policy(arns: BootstrapArns) -> dict[str, Any]:
    """Policy of the images role: log in to ECR and push to the platform's repositories, nothing else."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {"Sid": "RegistryLogin", "Effect": "Allow", "Action": "ecr:GetAuthorizationToken", "Resource": "*"},
            {"Sid": "PushPlatformImages", "Effect": "Allow", "Action": list(ECR_PUSH_ACTIONS), "Resource": list(arns.ecr_repositories)},
            {
                "Sid": "EcrKeyThroughEcrOnly",
                "Effect": "Allow",
                "Action": ["kms:Decrypt", "kms:GenerateDataKey"],
                "Resource": arns.ecr_key,
                "Condition": {"StringEquals": {"kms:ViaService": f"ecr.{arns.region}.amazonaws.com"}},
            },
        ],
    }


def state_bucket_policy(bucket_arn: str) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": tls_only_statements(bucket_arn, outdated_tls_sid="DenyOldTls")}


def ecr_lifecycle_policy(keep_images: int) -> dict[str, Any]:
    return {
        "rules": [
            {
                "rulePriority": 1,
                "description": "drop untagged layers left by re-pushes after a week",
                "selection": {"tagStatus": "untagged", "countType": "sinceImagePushed", "countUnit": "days", "countNumber": 7},
                "action": {"type": "expire"},
            },
            {
                "rulePriority": 2,
                "description": f"keep the newest {keep_images} images (stack configs pin digests; rollbacks need history)",
                "selection": {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": keep_images},
                "action": {"type": "expire"},
            },
        ]
    }


def backend_url(bucket: str, region: str) -> str:
    return f"s3://{bucket}?region={region}&awssdk=v2"


def secrets_provider_url(alias: str, region: str) -> str:
    return f"awskms://{alias}?region={region}"


class Bootstrap(pulumi.ComponentResource):
    """State backend, secrets key, CI identity and image registries of one AWS account."""

    def __init__(self, name: str, cfg: BootstrapConfig, stacks_dir: Path = STACKS_DIR, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("llm-platform:bootstrap:Bootstrap", name, None, opts)
        prefix = cfg.name_prefix
        tags = {"project": "llm-platform", "managed-by": "pulumi", "stack": f"{PROJECT}/{pulumi.get_stack()}"}
        child = pulumi.ResourceOptions(parent=self)
        kept = pulumi.ResourceOptions(parent=self, protect=cfg.protect)
        identity = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(parent=self))
        partition = aws.get_partition_output(opts=pulumi.InvokeOutputOptions(parent=self)).partition

        self.state_key = EncryptionKey(f"{prefix}-state", EncryptionKeyArgs(description="Pulumi state bucket (SSE-KMS)", tags=tags), opts=kept)
        self.secrets_key = EncryptionKey(f"{prefix}-secrets", EncryptionKeyArgs(description="Pulumi stack secrets (awskms secrets provider)", tags=tags), opts=kept)
        self.ecr_key = EncryptionKey(f"{prefix}-ecr", EncryptionKeyArgs(description="ECR image repositories", tags=tags), opts=kept)
        self.secrets_alias = f"alias/{prefix}-secrets"

        # --- Pulumi state bucket -----------------------------------------------------------------------------
        bucket_name = identity.account_id.apply(lambda account: f"{prefix}-state-{account}-{cfg.region}")
        self.state_bucket = aws.s3.Bucket(f"{prefix}-state", bucket=bucket_name, force_destroy=cfg.force_destroy, tags=tags, opts=kept)
        harden_private_bucket(
            self,
            f"{prefix}-state",
            self.state_bucket,
            kms_key_arn=self.state_key.arn,
            lifecycle_rules=[
                aws.s3.BucketLifecycleConfigurationRuleArgs(
                    id="expire-superseded-state",
                    status="Enabled",
                    filter=aws.s3.BucketLifecycleConfigurationRuleFilterArgs(),
                    noncurrent_version_expiration=aws.s3.BucketLifecycleConfigurationRuleNoncurrentVersionExpirationArgs(
                        noncurrent_days=cfg.state_noncurrent_version_days
                    ),
                    abort_incomplete_multipart_upload=aws.s3.BucketLifecycleConfigurationRuleAbortIncompleteMultipartUploadArgs(
                        days_after_initiation=7
                    ),
                )
            ],
            policy=self.state_bucket.arn.apply(lambda arn: json.dumps(state_bucket_policy(arn))),
            policy_name=f"{prefix}-state-tls-only",
        )

        # --- ECR repositories ----------------------------------------------------------------------------------
        self.repositories: dict[str, aws.ecr.Repository] = {}
        for image in cfg.ecr_repositories:
            repo = aws.ecr.Repository(
                f"{prefix}-{image}",
                name=f"{prefix}/{image}",
                image_tag_mutability="IMMUTABLE",
                image_scanning_configuration=aws.ecr.RepositoryImageScanningConfigurationArgs(scan_on_push=True),
                encryption_configurations=[
                    aws.ecr.RepositoryEncryptionConfigurationArgs(encryption_type="KMS", kms_key=self.ecr_key.arn)
                ],
                force_delete=cfg.force_destroy,
                tags=tags,
                opts=kept,
            )
            aws.ecr.LifecyclePolicy(
                f"{prefix}-{image}-lifecycle",
                repository=repo.name,
                policy=json.dumps(ecr_lifecycle_policy(cfg.ecr_keep_images)),
                opts=child,
            )
            self.repositories[image] = repo

        # --- GitHub OIDC and the CI roles ----------------------------------------------------------------------
        if cfg.github_oidc_provider_arn:
            oidc_provider_arn: pulumi.Output[str] = pulumi.Output.from_input(cfg.github_oidc_provider_arn)
        else:
            # No thumbprints: IAM trusts GitHub's OIDC endpoint through its own CA store.
            provider = aws.iam.OpenIdConnectProvider(
                "github-actions",
                url=f"https://{GITHUB_OIDC_HOST}",
                client_id_lists=[STS_AUDIENCE],
                tags=tags,
                opts=child,
            )
            oidc_provider_arn = provider.arn
        self.oidc_provider_arn = oidc_provider_arn

        subjects = github_subjects(cfg)
        role_names = {kind: f"{prefix}-ci-{kind}" for kind in subjects}
        arns = pulumi.Output.all(
            partition, identity.account_id, self.state_bucket.bucket, self.state_key.arn, self.secrets_key.arn,
            self.ecr_key.arn, pulumi.Output.all(*(r.arn for r in self.repositories.values())), oidc_provider_arn,
        ).apply(
            lambda v: BootstrapArns(
                partition=str(v[0]), account_id=str(v[1]), region=cfg.region, state_bucket=str(v[2]),
                state_key=str(v[3]), secrets_key=str(v[4]), ecr_key=str(v[5]), ecr_repositories=tuple(str(a) for a in v[6]),
                oidc_provider=str(v[7]),
                ci_roles=tuple(f"arn:{v[0]}:iam::{v[1]}:role/{n}" for n in role_names.values()),
                ci_policies=(f"arn:{v[0]}:iam::{v[1]}:policy/{prefix}-ci-*",),
            )
        )

        self.roles: dict[str, aws.iam.Role] = {}
        for kind, subs in subjects.items():
            self.roles[kind] = aws.iam.Role(
                f"{prefix}-ci-{kind}",
                name=role_names[kind],
                description=_role_description(kind),
                assume_role_policy=_trust_policy_json(oidc_provider_arn, subs),
                max_session_duration=4 * 3600 if kind.startswith("deploy-") else 3600,
                tags=tags,
                opts=child,
            )

        read_only = partition.apply(lambda p: f"arn:{p}:iam::aws:policy/ReadOnlyAccess")
        limits: dict[str, Callable[[BootstrapArns], dict[str, Any]]] = {
            "preview": preview_policy,
            "reviewed-preview": functools.partial(reviewed_preview_policy, stacks=known_stack_names(stacks_dir)),
        }
        for kind, document in limits.items():
            aws.iam.RolePolicyAttachment(f"{prefix}-ci-{kind}-readonly", role=self.roles[kind].name, policy_arn=read_only, opts=child)
            aws.iam.RolePolicy(
                f"{prefix}-ci-{kind}-limits",
                role=self.roles[kind].name,
                policy=_policy_json(arns, document),
                opts=child,
            )
        for env in cfg.environments:
            env_regions = cfg.deploy_regions(stacks_dir, env)
            documents = arns.apply(functools.partial(_deploy_policies_json, regions=env_regions, stack=env))
            for suffix in DEPLOY_POLICY_SUFFIXES:
                name = f"{prefix}-ci-deploy-{env}{suffix}"
                deploy = aws.iam.Policy(
                    name,
                    name=name,
                    description=f"pulumi up of the llm-platform {env} stack{' (its denies)' if suffix else ''} (see bootstrap/program.py for its limits)",
                    policy=documents.apply(operator.itemgetter(suffix)),
                    tags=tags,
                    opts=child,
                )
                aws.iam.RolePolicyAttachment(name, role=self.roles[f"deploy-{env}"].name, policy_arn=deploy.arn, opts=child)
        aws.iam.RolePolicy(
            f"{prefix}-ci-images-push",
            role=self.roles["images"].name,
            policy=arns.apply(lambda a: json.dumps(images_policy(a))),
            opts=child,
        )

        self.backend_url = self.state_bucket.bucket.apply(lambda b: backend_url(b, cfg.region))
        self.secrets_provider = secrets_provider_url(self.secrets_alias, cfg.region)
        self.register_outputs({"backend_url": self.backend_url, "secrets_provider": self.secrets_provider})


def _policy_json(arns: pulumi.Output[BootstrapArns], document: Callable[[BootstrapArns], dict[str, Any]]) -> pulumi.Output[str]:
    return arns.apply(lambda a: json.dumps(document(a)))


def _deploy_policies_json(arns: BootstrapArns, regions: list[str], stack: str) -> dict[str, str]:
    return {suffix: json.dumps(doc) for suffix, doc in deploy_policies(arns, regions, stack).items()}


def _role_description(kind: str) -> str:
    if kind.startswith("deploy-"):
        return f"GitHub Actions pulumi up of the {kind.removeprefix('deploy-')} stack, from its environment only"
    return {
        "preview": "GitHub Actions pull requests, unattended: read-only, no state, no decryption",
        "reviewed-preview": "GitHub Actions pulumi preview after a reviewer approved the run: read-only, state and secrets key",
        "images": "GitHub Actions image builds: ECR push only",
    }[kind]


def _trust_policy_json(provider_arn: pulumi.Output[str], subjects: list[str]) -> pulumi.Output[str]:
    return provider_arn.apply(lambda arn: json.dumps(github_trust_policy(arn, subjects)))


@dataclass
class DisasterRecovery:
    state_replica_bucket: pulumi.Output[str]
    secrets_key_arn: pulumi.Output[str]
    """The multi-Region secrets key (primary, in `region`); its replica in `dr_region` has the same key id."""
    secrets_provider: str
    """The stack secrets provider URL to use while `region` is down."""


def disaster_recovery(boot: Bootstrap, cfg: BootstrapConfig, provider: aws.Provider) -> DisasterRecovery:
    """What Pulumi needs to run while the bootstrap region is down (issue: failover must not need the lost region):
    - the state bucket replicated (S3 CRR, every version, Replication Time Control 15 min) into a bucket in
      `dr_region`, encrypted there with a key of that region (`pulumi login s3://<replica>?region=<dr_region>`);
    - a multi-Region secrets key with a replica in `dr_region` under the same alias: ciphertext made with one
      decrypts with the other (KMS multi-Region keys share key material), so a stack moved to this key
      (`pulumi stack change-secrets-provider awskms://alias/<prefix>-secrets-mrk?region=<region>`) decrypts in
      either region by changing only `?region=`."""
    assert cfg.dr_region is not None
    prefix, dr = cfg.name_prefix, cfg.dr_region
    tags = {"project": "llm-platform", "managed-by": "pulumi", "purpose": "disaster-recovery"}
    dr_provider = aws.Provider(f"aws-{dr}-dr", region=dr)
    home = pulumi.ResourceOptions(parent=boot, provider=provider, protect=cfg.protect)
    away = pulumi.ResourceOptions(parent=boot, provider=dr_provider, protect=cfg.protect)
    identity = aws.get_caller_identity_output(opts=pulumi.InvokeOutputOptions(provider=provider))

    mrk = aws.kms.Key(f"{prefix}-secrets-mrk", description="Pulumi stack secrets (multi-Region: usable in the DR region)",
                      multi_region=True, enable_key_rotation=True, deletion_window_in_days=30, tags=tags, opts=home)
    aws.kms.Alias(f"{prefix}-secrets-mrk", name=f"alias/{prefix}-secrets-mrk", target_key_id=mrk.key_id, opts=home)
    replica = aws.kms.ReplicaKey(f"{prefix}-secrets-mrk-{dr}", primary_key_arn=mrk.arn, description="Pulumi stack secrets (replica)",
                                 deletion_window_in_days=30, tags=tags, opts=away)
    aws.kms.Alias(f"{prefix}-secrets-mrk-{dr}", name=f"alias/{prefix}-secrets-mrk", target_key_id=replica.key_id, opts=away)

    replica_key = EncryptionKey(f"{prefix}-state-{dr}", EncryptionKeyArgs(description="Pulumi state bucket replica (SSE-KMS)", tags=tags), opts=away)
    bucket = aws.s3.Bucket(f"{prefix}-state-{dr}", bucket=identity.account_id.apply(lambda a: f"{prefix}-state-{a}-{dr}"),
                           force_destroy=cfg.force_destroy, tags=tags, opts=away)
    hardened = harden_private_bucket(boot, f"{prefix}-state-{dr}", bucket, kms_key_arn=replica_key.arn, lifecycle_rules=[],
                                     policy=bucket.arn.apply(lambda arn: json.dumps(state_bucket_policy(arn))),
                                     policy_name=f"{prefix}-state-{dr}-tls-only")
    role = aws.iam.Role(f"{prefix}-state-replication", assume_role_policy=json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"}, "Action": "sts:AssumeRole"}]}), tags=tags,
        opts=pulumi.ResourceOptions(parent=boot, provider=provider))

    def role_policy(v: list[str]) -> str:
        src, src_key, dst, dst_key = v
        context = {"StringLike": {"kms:EncryptionContext:aws:s3:arn": [src, f"{src}/*"]}}
        return json.dumps({"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["s3:GetReplicationConfiguration", "s3:ListBucket"], "Resource": src},
            {"Effect": "Allow", "Action": ["s3:GetObjectVersionForReplication", "s3:GetObjectVersionAcl", "s3:GetObjectVersionTagging"], "Resource": f"{src}/*"},
            {"Effect": "Allow", "Action": ["s3:ReplicateObject", "s3:ReplicateDelete", "s3:ReplicateTags"], "Resource": f"{dst}/*"},
            {"Effect": "Allow", "Action": "kms:Decrypt", "Resource": src_key, "Condition": context},
            {"Effect": "Allow", "Action": ["kms:Encrypt", "kms:GenerateDataKey", "kms:Decrypt"], "Resource": dst_key,
             "Condition": {"StringLike": {"kms:EncryptionContext:aws:s3:arn": [dst, f"{dst}/*"]}}},
        ]})

    policy = aws.iam.RolePolicy(f"{prefix}-state-replication", role=role.id,
                                policy=pulumi.Output.all(boot.state_bucket.arn, boot.state_key.arn, bucket.arn, replica_key.arn).apply(role_policy),
                                opts=pulumi.ResourceOptions(parent=boot, provider=provider))
    aws.s3.BucketReplicationConfig(
        f"{prefix}-state-replication", bucket=boot.state_bucket.id, role=role.arn,
        rules=[{"id": f"state-to-{dr}", "status": "Enabled", "priority": 0, "filter": {"prefix": ""},
                "delete_marker_replication": {"status": "Enabled"},
                "source_selection_criteria": {"sse_kms_encrypted_objects": {"status": "Enabled"}},
                "destination": {"bucket": bucket.arn, "storage_class": "STANDARD",
                                "encryption_configuration": {"replica_kms_key_id": replica_key.arn},
                                "replication_time": {"status": "Enabled", "time": {"minutes": 15}},
                                "metrics": {"status": "Enabled", "event_threshold": {"minutes": 15}}}}],
        opts=pulumi.ResourceOptions(parent=boot, provider=provider, depends_on=[policy, hardened]),
    )
    return DisasterRecovery(state_replica_bucket=bucket.bucket, secrets_key_arn=mrk.arn,
                            secrets_provider=secrets_provider_url(f"alias/{prefix}-secrets-mrk", dr))


def build_bootstrap(cfg: BootstrapConfig, stacks_dir: Path = STACKS_DIR) -> Bootstrap:
    provider = aws.Provider(f"aws-{cfg.region}", region=cfg.region)
    boot = Bootstrap(cfg.name_prefix, cfg, stacks_dir, opts=pulumi.ResourceOptions(provider=provider))
    if cfg.dr_region is not None:
        dr = disaster_recovery(boot, cfg, provider)
        pulumi.export("dr_state_bucket", dr.state_replica_bucket)
        pulumi.export("dr_backend_url", dr.state_replica_bucket.apply(lambda b: backend_url(b, str(cfg.dr_region))))
        pulumi.export("dr_secrets_provider", dr.secrets_provider)
    return boot


def main() -> None:
    source = f"bootstrap/Pulumi.{pulumi.get_stack()}.yaml"
    try:
        cfg = parse_bootstrap_config(bootstrap_config_from_pulumi(), source)
    except BootstrapConfigError as err:
        raise pulumi.RunError(str(err)) from None
    boot = build_bootstrap(cfg)
    pulumi.export("state_bucket", boot.state_bucket.bucket)
    pulumi.export("backend_url", boot.backend_url)
    pulumi.export("secrets_provider", boot.secrets_provider)
    pulumi.export("state_key_arn", boot.state_key.arn)
    pulumi.export("secrets_key_arn", boot.secrets_key.arn)
    pulumi.export("oidc_provider_arn", boot.oidc_provider_arn)
    for kind, role in boot.roles.items():
        pulumi.export(f"ci_{kind.replace('-', '_')}_role_arn", role.arn)
    pulumi.export("ecr_repository_urls", {image: repo.repository_url for image, repo in boot.repositories.items()})
    pulumi.export("aws_region", cfg.region)

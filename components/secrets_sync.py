"""Secrets Manager → Kubernetes Secrets through External Secrets, one least-privilege reader per namespace.

Each namespace that needs secrets gets its own `SecretStore` whose AWS identity is a dedicated service account
(`secrets-reader`) with an IRSA role allowed to read exactly the secrets that namespace consumes. The External
Secrets controller itself holds no AWS permissions, so a namespace can never read another namespace's secrets,
and no secret value ever passes through Pulumi config, state or the rendered manifests.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import pulumi

from components.irsa import ServiceAccountIdentity, policy_document, service_account_role
from components.kube import Manifest, apply_manifest, metadata

STORE_NAME = "aws-secrets-manager"
READER_SERVICE_ACCOUNT = "secrets-reader"
EXTERNAL_SECRETS_API = "external-secrets.io/v1"


@dataclass
class SecretSource:
    """One value in AWS Secrets Manager."""

    arn: pulumi.Input[str]
    """Secret ARN as IAM policies name it: the full ARN, or the `<name>-??????` pattern `secret_reference` builds."""
    property: str | None = None
    """Key inside a JSON secret value; None = the whole value."""
    key: pulumi.Input[str] | None = None
    """What External Secrets looks the secret up by (its name or full ARN); None = `arn`."""


def secret_reference(name_or_arn: str, partition: pulumi.Input[str], region: str, account: pulumi.Input[str],
                     property: str | None = None) -> SecretSource:
    """A secret given by full ARN or by name, for an IAM grant and an External Secrets lookup.

    IAM matches a policy's Resource against the full ARN, which ends in `-` and six random characters Secrets
    Manager appends to the name; a bare name there is a MalformedPolicyDocument. So a name becomes the pattern
    `arn:<partition>:secretsmanager:<region>:<account>:secret:<name>-??????` (AWS's documented way to grant a secret
    by name) and External Secrets keeps looking it up by name.
    """
    if name_or_arn.startswith("arn:"):
        return SecretSource(arn=name_or_arn, property=property)
    arn = pulumi.Output.concat("arn:", partition, f":secretsmanager:{region}:", account, f":secret:{name_or_arn}-??????")
    return SecretSource(arn=arn, property=property, key=name_or_arn)


def reader_policy(secret_arns: Sequence[pulumi.Input[str]], kms_key_arns: Sequence[pulumi.Input[str]], region: str) -> pulumi.Output[str]:
    statements: list[dict[str, Any]] = [{
        "Sid": "ReadTheseSecretsOnly",
        "Effect": "Allow",
        "Action": ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
        "Resource": list(secret_arns),
    }]
    if kms_key_arns:
        statements.append({
            "Sid": "DecryptThroughSecretsManagerOnly",
            "Effect": "Allow",
            "Action": ["kms:Decrypt"],
            "Resource": list(kms_key_arns),
            "Condition": {"StringEquals": {"kms:ViaService": f"secretsmanager.{region}.amazonaws.com"}},
        })
    return policy_document(statements)


def secret_store_manifests(namespace: str, region: str, role_arn: pulumi.Input[str]) -> list[Manifest]:
    return [
        {
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": metadata(READER_SERVICE_ACCOUNT, namespace, annotations={"eks.amazonaws.com/role-arn": role_arn}),
            # Only the External Secrets controller requests tokens for it (TokenRequest); no pod mounts one.
            "automountServiceAccountToken": False,
        },
        {
            "apiVersion": EXTERNAL_SECRETS_API, "kind": "SecretStore",
            "metadata": metadata(STORE_NAME, namespace),
            "spec": {"provider": {"aws": {
                "service": "SecretsManager",
                "region": region,
                "auth": {"jwt": {"serviceAccountRef": {"name": READER_SERVICE_ACCOUNT}}},
            }}},
        },
    ]


def external_secret(name: str, namespace: str, data: dict[str, SecretSource],
                    template: dict[str, pulumi.Input[str]] | None = None) -> Manifest:
    """An ExternalSecret producing Secret `name`; `template` (Go templates over the data keys) shapes its keys."""
    target: dict[str, Any] = {"name": name, "creationPolicy": "Owner", "deletionPolicy": "Retain"}
    if template:
        target["template"] = {"engineVersion": "v2", "type": "Opaque", "data": template}
    entries = []
    for key, source in data.items():
        ref: dict[str, Any] = {"key": source.key if source.key is not None else source.arn}
        if source.property:
            ref["property"] = source.property
        entries.append({"secretKey": key, "remoteRef": ref})
    return {
        "apiVersion": EXTERNAL_SECRETS_API, "kind": "ExternalSecret",
        "metadata": metadata(name, namespace),
        "spec": {
            "refreshInterval": "1h",
            "secretStoreRef": {"name": STORE_NAME, "kind": "SecretStore"},
            "target": target,
            "data": entries,
        },
    }


def namespace_secret_reader(
    name: str,
    namespace: str,
    region: str,
    identity: ServiceAccountIdentity,
    secret_arns: Sequence[pulumi.Input[str]],
    kms_key_arns: Sequence[pulumi.Input[str]],
    parent: pulumi.Resource,
    depends_on: Sequence[pulumi.Resource],
    tags: dict[str, str] | None = None,
) -> list[pulumi.Resource]:
    """IRSA role + service account + SecretStore for one namespace; returns the Kubernetes objects."""
    role = service_account_role(f"{name}-secrets-reader", identity, namespace, READER_SERVICE_ACCOUNT,
                                reader_policy(secret_arns, kms_key_arns, region), parent, tags)
    opts = pulumi.ResourceOptions(parent=parent, depends_on=list(depends_on))
    return [
        apply_manifest(f"{name}-{m['kind'].lower()}-{m['metadata']['name']}", m, opts)
        for m in secret_store_manifests(namespace, region, role.arn)
    ]

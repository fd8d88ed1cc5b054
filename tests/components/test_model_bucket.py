"""ModelBucket under Pulumi mocks: private, KMS, versioned, TLS-only, and a read-only policy that really is."""

from __future__ import annotations

import json
from typing import Any

import pulumi
import pytest

from components.model_bucket import ModelBucket, ModelBucketArgs
from infra.render import Rendering, render_function

KMS_ARN = "arn:aws:kms:us-east-1:123456789012:key/11111111-2222-4333-8444-555555555555"


@pytest.fixture(scope="module")
def rendering() -> Rendering:
    def program() -> None:
        models = ModelBucket("models", ModelBucketArgs(kms_key_arn=KMS_ARN, tags={"team": "ml"}))
        pulumi.export("bucket", models.bucket_name)
        pulumi.export("policy_arn", models.read_policy_arn)
        pulumi.export("policy_json", models.read_policy_json)
        pulumi.export("log_bucket", models.access_log_bucket_name)

    return render_function(program)


def _one(r: Rendering, kind: str, log_bucket: bool = False) -> dict[str, Any]:
    """The setting of the weights bucket (or, with `log_bucket`, of its access-log bucket)."""
    (found,) = [x for x in r.of_type(f"aws:s3/{kind}") if ("access-log" in x.name) == log_bucket]
    return found.inputs


def test_all_public_access_blocked_and_acls_disabled(rendering: Rendering) -> None:
    pab = _one(rendering, "bucketPublicAccessBlock:BucketPublicAccessBlock")
    assert all(pab[k] is True for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"))
    assert _one(rendering, "bucketOwnershipControls:BucketOwnershipControls")["rule"]["objectOwnership"] == "BucketOwnerEnforced"


def test_sse_kms_with_bucket_key_and_versioning(rendering: Rendering) -> None:
    (rule,) = _one(rendering, "bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration")["rules"]
    assert rule["applyServerSideEncryptionByDefault"] == {"sseAlgorithm": "aws:kms", "kmsMasterKeyId": KMS_ARN}
    assert rule["bucketKeyEnabled"] is True
    assert _one(rendering, "bucketVersioning:BucketVersioning")["versioningConfiguration"]["status"] == "Enabled"
    (lifecycle,) = _one(rendering, "bucketLifecycleConfiguration:BucketLifecycleConfiguration")["rules"]
    assert lifecycle["status"] == "Enabled"
    assert lifecycle["noncurrentVersionExpiration"]["noncurrentDays"] == 30
    assert lifecycle["abortIncompleteMultipartUpload"]["daysAfterInitiation"] == 7


def test_bucket_policy_denies_plain_http_and_old_tls(rendering: Rendering) -> None:
    bucket = rendering.outputs["bucket"]
    policy = json.loads(_one(rendering, "bucketPolicy:BucketPolicy")["policy"])
    denies = {s["Sid"]: s for s in policy["Statement"] if s["Effect"] == "Deny"}
    assert denies["DenyInsecureTransport"]["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert denies["DenyOutdatedTls"]["Condition"] == {"NumericLessThan": {"s3:TlsVersion": "1.2"}}
    for s in denies.values():
        assert s["Principal"] == "*" and s["Action"] == "s3:*"
        assert set(s["Resource"]) == {f"arn:aws:s3:::{bucket}", f"arn:aws:s3:::{bucket}/*"}
    assert not [s for s in policy["Statement"] if s["Effect"] == "Allow"]


def test_read_policy_grants_reads_only(rendering: Rendering) -> None:
    bucket = rendering.outputs["bucket"]
    iam = rendering.one("aws:iam/policy:Policy").inputs
    policy = json.loads(iam["policy"])
    assert policy == json.loads(rendering.outputs["policy_json"])
    actions = {a for s in policy["Statement"] for a in ([s["Action"]] if isinstance(s["Action"], str) else s["Action"])}
    assert actions == {"s3:ListBucket", "s3:GetBucketLocation", "s3:GetObject", "s3:GetObjectVersion", "kms:Decrypt"}
    assert all(s["Effect"] == "Allow" and "*" not in str(s["Resource"]).replace(f"{bucket}/*", "") for s in policy["Statement"])
    kms = next(s for s in policy["Statement"] if s["Action"] == "kms:Decrypt")
    assert kms["Resource"] == KMS_ARN
    assert kms["Condition"] == {"StringEquals": {"kms:ViaService": "s3.us-east-1.amazonaws.com"}}
    assert rendering.outputs["policy_arn"].startswith("arn:aws:iam::123456789012:policy/")


def test_all_bucket_settings_target_the_bucket(rendering: Rendering) -> None:
    bucket = rendering.outputs["bucket"]
    settings = [r for r in rendering.resources if r.type.startswith("aws:s3/") and r.type != "aws:s3/bucket:Bucket"
                and "access-logs-" not in r.name]
    assert len(settings) == 7  # ownership, public access, encryption, versioning, lifecycle, policy, access logging
    assert all(r.inputs["bucket"] == bucket for r in settings)
    assert _one(rendering, "bucket:Bucket").get("forceDestroy") is False


def test_every_read_of_the_weights_is_logged_to_a_hardened_bucket(rendering: Rendering) -> None:
    bucket, log_bucket = rendering.outputs["bucket"], rendering.outputs["log_bucket"]
    logging = rendering.one("aws:s3/bucketLogging:BucketLogging").inputs
    assert logging["bucket"] == bucket and logging["targetBucket"] == log_bucket and logging["targetPrefix"] == "s3-access/"
    # The log bucket carries the same hardening as every private bucket, with SSE-S3 (log delivery refuses SSE-KMS).
    pab = _one(rendering, "bucketPublicAccessBlock:BucketPublicAccessBlock", log_bucket=True)
    assert pab["bucket"] == log_bucket and all(pab[k] is True for k in ("blockPublicAcls", "blockPublicPolicy", "ignorePublicAcls", "restrictPublicBuckets"))
    (rule,) = _one(rendering, "bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration", log_bucket=True)["rules"]
    assert rule["applyServerSideEncryptionByDefault"] == {"sseAlgorithm": "AES256"}
    (lifecycle,) = _one(rendering, "bucketLifecycleConfiguration:BucketLifecycleConfiguration", log_bucket=True)["rules"]
    assert lifecycle["expiration"]["days"] == 365
    policy = json.loads(_one(rendering, "bucketPolicy:BucketPolicy", log_bucket=True)["policy"])
    (allow,) = [s for s in policy["Statement"] if s["Effect"] == "Allow"]
    assert allow["Principal"] == {"Service": "logging.s3.amazonaws.com"} and allow["Action"] == "s3:PutObject"
    assert allow["Resource"] == f"arn:aws:s3:::{log_bucket}/s3-access/*"
    assert allow["Condition"] == {"ArnLike": {"aws:SourceArn": f"arn:aws:s3:::{bucket}"}, "StringEquals": {"aws:SourceAccount": "123456789012"}}
    assert {s["Sid"] for s in policy["Statement"] if s["Effect"] == "Deny"} == {"DenyInsecureTransport", "DenyOutdatedTls"}


def test_bad_retention_names_the_field() -> None:
    with pytest.raises(ValueError, match="^noncurrent_version_retention_days: got 0"):
        ModelBucketArgs(kms_key_arn="k", noncurrent_version_retention_days=0)

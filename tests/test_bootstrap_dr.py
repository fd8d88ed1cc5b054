"""Item 5 of the global-tier issue: Pulumi state and the stack secrets key survive the loss of the bootstrap region."""

from __future__ import annotations

import json

from bootstrap.program import main
from infra.render import render_function

BASE = {"llm-platform-bootstrap:github_repository": "acme-ai/llm-platform", "llm-platform-bootstrap:region": "us-east-1"}


def test_state_and_secrets_key_have_copies_outside_the_bootstrap_region() -> None:
    out = render_function(main, stack="bootstrap", config={**BASE, "llm-platform-bootstrap:dr_region": "eu-west-1"})
    mrk = out.one("aws:kms/key:Key", "secrets-mrk")
    assert mrk.inputs["multiRegion"] is True and out.region_of(mrk) == "us-east-1"
    replica = out.one("aws:kms/replicaKey:ReplicaKey")
    assert out.region_of(replica) == "eu-west-1"
    aliases = {(out.region_of(a), a.inputs["name"]) for a in out.of_type("aws:kms/alias:Alias") if "mrk" in a.name}
    assert aliases == {("us-east-1", "alias/llm-platform-secrets-mrk"), ("eu-west-1", "alias/llm-platform-secrets-mrk")}
    state = next(b for b in out.of_type("aws:s3/bucket:Bucket") if out.region_of(b) == "us-east-1")
    dr_bucket = next(b for b in out.of_type("aws:s3/bucket:Bucket") if out.region_of(b) == "eu-west-1")
    replication = out.one("aws:s3/bucketReplicationConfig:BucketReplicationConfig")
    assert replication.inputs["bucket"] == state.id
    rule = replication.inputs["rules"][0]
    assert rule["destination"]["bucket"] == f"arn:aws:s3:::{dr_bucket.id}" and rule["deleteMarkerReplication"]["status"] == "Enabled"
    dr_key = rule["destination"]["encryptionConfiguration"]["replicaKmsKeyId"]
    assert ":eu-west-1:" in dr_key
    policy = json.loads(out.one("aws:iam/rolePolicy:RolePolicy", "state-replication").inputs["policy"])
    assert any(dr_key == s["Resource"] and "kms:Decrypt" in s["Action"] for s in policy["Statement"])
    assert out.outputs["dr_secrets_provider"] == "awskms://alias/llm-platform-secrets-mrk?region=eu-west-1"
    assert out.outputs["dr_backend_url"].startswith("s3://") and "region=eu-west-1" in out.outputs["dr_backend_url"]


def test_without_dr_region_nothing_extra() -> None:
    out = render_function(main, stack="bootstrap", config=BASE)
    assert not out.of_type("aws:kms/replicaKey:ReplicaKey") and not out.of_type("aws:s3/bucketReplicationConfig:BucketReplicationConfig")

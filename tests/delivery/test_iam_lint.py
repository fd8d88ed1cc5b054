"""Guard (issue 16): every IAM policy document any stack or the bootstrap renders passes `parliament` (AWS IAM
policy lint: unknown actions and condition keys, malformed statements and conditions, actions whose resource type
does not match the ARN), except the findings tests/delivery/iam_lint_accepted.yaml accepts with a reason.

Documents: role trust policies (CI roles, service roles, IRSA), inline and managed policies, KMS key policies,
bucket policies, log-resource policies and any other input that holds a policy JSON (ECR, SNS, secrets).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from parliament import analyze_policy_string

from bootstrap.program import main
from infra.render import Rendering, render_function
from tests.delivery.iam_support import policy_documents

STACKS = ["dev", "small", "prod", "global"]
ACCEPTED_FILE = Path(__file__).with_name("iam_lint_accepted.yaml")
BOOT_CONFIG = {"llm-platform-bootstrap:github_repository": "acme-ai/llm-platform", "llm-platform-bootstrap:region": "us-east-1"}


def accepted() -> list[dict[str, str]]:
    entries = yaml.safe_load(ACCEPTED_FILE.read_text())
    for entry in entries:
        assert set(entry) <= {"issue", "input", "type", "detail", "reason"} and entry.get("reason"), entry
    return list(entries)


def findings(rendering: Rendering, where: str) -> list[dict[str, Any]]:
    found = []
    for resource, path, text in policy_documents(rendering):
        for finding in analyze_policy_string(text).findings:
            found.append({"where": where, "resource": resource.name, "type": resource.type, "input": path.split(".")[-1].split("[")[0],
                          "issue": finding.issue, "detail": json.dumps(finding.detail, default=str)})
    return found


def matches(entry: dict[str, str], finding: dict[str, Any]) -> bool:
    detail = json.loads(finding["detail"])
    text = detail if isinstance(detail, str) else finding["detail"]
    return (entry["issue"] == finding["issue"]
            and entry.get("input", finding["input"]) == finding["input"]
            and entry.get("type", finding["type"]) == finding["type"]
            and entry.get("detail", "") in text)


@pytest.fixture(scope="module")
def all_findings(rendered: Callable[[str], Rendering]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for stack in STACKS:
        found += findings(rendered(stack), stack)
    found += findings(render_function(main, stack="bootstrap", config=BOOT_CONFIG), "bootstrap")
    return found


def test_every_policy_document_is_linted(rendered: Callable[[str], Rendering]) -> None:
    kinds = {(r.type, p.split(".")[-1]) for s in STACKS for r, p, _ in policy_documents(rendered(s))}
    assert {("aws:iam/role:Role", "assumeRolePolicy"), ("aws:kms/key:Key", "policy"), ("aws:s3/bucketPolicy:BucketPolicy", "policy"),
            ("aws:iam/rolePolicy:RolePolicy", "policy")} <= kinds


def test_policies_pass_parliament_but_for_accepted_findings(all_findings: list[dict[str, Any]]) -> None:
    entries = accepted()
    unexplained = [f for f in all_findings if not any(matches(e, f) for e in entries)]
    assert not unexplained, "\n".join(f"{f['where']} {f['type']} {f['resource']}.{f['input']}: {f['issue']} {f['detail'][:300]}" for f in unexplained[:15])


def test_every_accepted_finding_still_occurs(all_findings: list[dict[str, Any]]) -> None:
    stale = [e for e in accepted() if not any(matches(e, f) for f in all_findings)]
    assert not stale, f"accepted findings that no longer occur (remove them): {stale}"


def test_parliament_does_flag_a_bad_policy() -> None:
    """Negative control: an unknown action, a mistyped condition and a resource-type mismatch are reported."""
    bad = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": "ec2:DescribeEverything", "Resource": "*"},
        {"Effect": "Allow", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::bucket-without-object-path"},
        {"Effect": "Deny", "Action": "s3:ListBucket", "Resource": "arn:aws:s3:::b", "Condition": {"Bool": {"aws:SecureTransport": "maybe"}}},
    ]}
    issues = {f.issue for f in analyze_policy_string(json.dumps(bad)).findings}
    assert {"UNKNOWN_ACTION", "RESOURCE_MISMATCH"} <= issues, issues
    assert any(i.startswith("MISMATCHED_TYPE") for i in issues), issues

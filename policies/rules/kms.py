"""KMS keys (POLICIES.md 36)."""

from __future__ import annotations

from collections.abc import Iterator

from policies.core import MANDATORY, Res, Rule, Settings, number, truthy

KEY = "aws:kms/key:Key"


def rotation(r: Res, s: Settings) -> Iterator[str]:
    spec = str(r.get("customerMasterKeySpec", default="SYMMETRIC_DEFAULT"))
    if spec == "SYMMETRIC_DEFAULT" and not truthy(r.get("enableKeyRotation")):
        yield "enableKeyRotation is not true"


def safe_deletion(r: Res, s: Settings) -> Iterator[str]:
    if truthy(r.get("bypassPolicyLockoutSafetyCheck")):
        yield "bypassPolicyLockoutSafetyCheck is true: a key policy could lock every admin out"
    window = number(r.get("deletionWindowInDays"), default=30.0)
    if window < s["min_deletion_window_days"]:
        yield f"deletionWindowInDays is {window:g}; at least {s['min_deletion_window_days']} required"


RULES = [
    Rule(
        id="kms-key-rotation",
        controls=("FSBP KMS.4", "CKV_AWS_7"),
        summary="Symmetric KMS keys rotate their key material yearly",
        remediation="Set enableKeyRotation=true (AWS rotates the key material yearly; old ciphertexts stay readable).",
        enforcement=MANDATORY, types=(KEY,), checks=(rotation,), policies_md=(36,),
    ),
    Rule(
        id="kms-key-safe-deletion",
        controls=("FSBP KMS.3", "CKV_AWS_227"),
        summary="KMS keys keep the policy lockout safety check and a deletion window of at least N days (policy config)",
        remediation="Leave bypassPolicyLockoutSafetyCheck unset and set deletionWindowInDays >= min_deletion_window_days.",
        enforcement=MANDATORY, types=(KEY,), checks=(safe_deletion,), policies_md=(36,),
        config={"min_deletion_window_days": {"type": "integer", "minimum": 7, "maximum": 30, "default": 7}},
    ),
]

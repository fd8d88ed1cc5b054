"""Every rule of the pack, in POLICIES.md order, and the CrossGuard policies built from them.

`RULES` is the single list: `__main__.py` hands `POLICIES` to `PolicyPack`, the offline runner evaluates the
same `POLICIES`, and `python -m infra.cli policy --list` prints `RULES`.
"""

from __future__ import annotations

from pulumi_policy import Policy

from policies.core import Rule
from policies.rules import ec2, eks, elasticache, kms, kubernetes, lb, network, rds, s3, secrets, tier, waf

RULES: list[Rule] = [
    *eks.RULES,
    *ec2.RULES,
    *network.RULES,
    *elasticache.RULES,
    *rds.RULES,
    *lb.RULES,
    *waf.RULES,
    *s3.RULES,
    *kms.RULES,
    *secrets.RULES,
    *kubernetes.RULES,
    *tier.RULES,
]

_ids = [r.id for r in RULES]
if len(set(_ids)) != len(_ids):
    raise RuntimeError(f"duplicate rule ids: {sorted({i for i in _ids if _ids.count(i) > 1})}")

RULES_BY_ID: dict[str, Rule] = {r.id: r for r in RULES}

POLICIES: list[Policy] = [r.to_policy() for r in RULES]

PACK_NAME = "llm-platform-guardrails"

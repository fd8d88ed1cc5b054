"""Entry point `pulumi preview --policy-pack policies` runs. Only builds the pack: the rules live in modules."""

import sys
from pathlib import Path

# The engine runs this file with policies/ as the first sys.path entry; the rules import `policies.*` and
# `infra.instances` from the project root.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from pulumi_policy import EnforcementLevel, PolicyPack  # noqa: E402

from policies.registry import PACK_NAME, POLICIES  # noqa: E402

PolicyPack(name=PACK_NAME, policies=POLICIES, enforcement_level=EnforcementLevel.MANDATORY)

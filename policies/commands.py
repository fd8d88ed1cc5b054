"""The policy parts of `python -m infra.cli`: `policy --list` and the policy section of `plan`."""

from __future__ import annotations

import argparse
import json
import textwrap
from collections.abc import Sequence
from typing import Any

from policies.offline import Violation, config_path, evaluate, list_rules, mandatory

EXIT_POLICY = 3  # plan: at least one mandatory violation


def config_name(stack: str, tier: str) -> str:
    """policies/config/<stack>.json, or the tier's file for a stack of its own (e.g. a copy of prod)."""
    return stack if config_path(stack).is_file() else tier


def plan_violations(rendering: Any, stack: str, tier: str) -> list[Violation]:
    return evaluate(rendering, config_name(stack, tier))


def format_violations(violations: Sequence[Violation]) -> list[str]:
    if not violations:
        return ["  all policies pass"]
    lines: list[str] = []
    for v in sorted(violations, key=lambda v: (v.enforcement != "mandatory", v.rule, v.resource_name)):
        lines.append(f"  [{v.enforcement}] {v.rule}  {v.resource_type} {v.resource_name}")
        lines.extend("      " + line for line in textwrap.wrap(v.message, 110))
    hard = len(mandatory(violations))
    lines.append(f"  {hard} mandatory, {len(violations) - hard} advisory")
    return lines


def exit_code(violations: Sequence[Violation]) -> int:
    return EXIT_POLICY if mandatory(violations) else 0


def cmd_policy(args: argparse.Namespace) -> int:
    rules = list_rules()
    if args.json:
        print(json.dumps(rules, indent=2))
        return 0
    print(f"{len(rules)} rules (mandatory: blocks preview/up and `plan` exits {EXIT_POLICY}; advisory: reported only)\n")
    for r in rules:
        print(f"{r['id']:32s} {r['enforcement']:9s} {r['kind']:8s} {', '.join(r['controls'])}")
        if args.verbose:
            print(textwrap.indent(textwrap.fill(r["description"], 100), "    "))
            print(textwrap.indent(textwrap.fill("fix: " + r["remediation"], 100), "    "))
            if r["config"]:
                print(f"    config defaults: {json.dumps(r['config'])}")
    return 0


def register(sub: Any) -> None:
    policy = sub.add_parser("policy", help="the CrossGuard policy pack: list its rules")
    policy.add_argument("--list", action="store_true", required=True, help="print every rule with its control ids")
    policy.add_argument("--json", action="store_true", help="machine-readable rule list")
    policy.add_argument("-v", "--verbose", action="store_true", help="also print description, remediation, config defaults")
    policy.set_defaults(func=cmd_policy)

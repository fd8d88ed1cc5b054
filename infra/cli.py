"""The project's command line: `python -m infra.cli <command> ...` (offline unless a command says otherwise).

    plan <stack> [--json]   render the stack under Pulumi mocks: resource tree, counts, summary, policy verdicts
                            (exit 2: bad config, exit 3: a mandatory policy violation)
    policy --list [--json]  every rule of the CrossGuard pack (policies/) with its control ids
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from typing import Any, Sequence

from pathlib import Path

from infra.config import ConfigError, PlatformConfig, parse_platform_config
from infra import diagram, preflight, pricelist
from infra import manifests as manifests_command
from infra import cost as cost_command
from infra.cost import CostEstimate, estimate, format_estimate
from infra.pricelist import PriceError
from infra.render import STACKS_DIR as DEFAULT_STACKS_DIR
from infra.render import Rendering, RenderError, known_stacks, read_stack_config, render
from policies import commands as policy_commands
from policies.offline import PolicyConfigError, Violation

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


STACKS_DIR = DEFAULT_STACKS_DIR


def stack_platform_config(stack: str) -> PlatformConfig:
    """The validated `llm-platform:*` config of a stack file; ConfigError carries the one-line message."""
    raw = read_stack_config(stack, STACKS_DIR)
    project_keys = {k.split(":", 1)[1]: v for k, v in raw.items() if k.startswith("llm-platform:")}
    return parse_platform_config(project_keys, source=f"stacks/Pulumi.{stack}.yaml")


def render_stack(stack: str) -> Rendering:
    """Validated config, then the rendering; ConfigError/RenderError carry the one-line message."""
    import pulumi

    stack_platform_config(stack)  # fail fast, before any resource is declared
    try:
        return render(stack, config=read_stack_config(stack, STACKS_DIR))
    except pulumi.RunError as err:  # the program's own one-line stop (e.g. more AZs than the region has)
        raise ConfigError(str(err)) from None


def resource_tree(rendering: Rendering) -> list[str]:
    """Components with their children, indented; custom resources shown by type and name."""
    children: dict[str | None, list[Any]] = {}
    urns = {r.urn for r in rendering.resources}
    for r in rendering.resources:
        parent = r.parent if r.parent in urns else None
        children.setdefault(parent, []).append(r)
    lines: list[str] = []

    def walk(parent: str | None, depth: int) -> None:
        for r in children.get(parent, []):
            lines.append(f"{'  ' * depth}{'+' if not r.custom else '-'} {r.type} {r.name}")
            walk(r.urn, depth + 1)

    walk(None, 0)
    return lines


def summary(rendering: Rendering) -> dict[str, Any]:
    cfg = stack_platform_config(rendering.stack)
    return {
        "tier": cfg.tier,
        "regions": [{"name": r.name, "az_count": r.az_count, "vpc_cidr": r.vpc_cidr} for r in cfg.regions],
        "node_groups": [
            {"name": g.name, "gpu": g.gpu, "instance_types": g.instance_types, "capacity": g.capacity,
             "min": g.min_size, "desired": g.desired_size, "max": g.max_size}
            for g in cfg.node_groups
        ],
        "resource_count": sum(1 for r in rendering.resources if r.custom),
    }


def plan_document(rendering: Rendering, violations: Sequence[Violation] = (), cost: CostEstimate | None = None) -> dict[str, Any]:
    """The `plan --json` contract of DESIGN.md (`cost` is estimated here unless the caller already has it)."""
    return {
        "stack": rendering.stack,
        "resources": [r.to_json() for r in rendering.resources],
        "outputs": rendering.public_outputs(),
        "policy": [v.to_json() for v in violations],
        "cost": (cost or estimate(rendering)).to_json(),
        "summary": summary(rendering),
    }


def cmd_plan(args: argparse.Namespace) -> int:
    started = time.monotonic()
    rendering = render_stack(args.stack)
    tier = stack_platform_config(args.stack).tier
    violations = policy_commands.plan_violations(rendering, args.stack, tier)
    cost = estimate(rendering)
    doc = plan_document(rendering, violations, cost)
    elapsed = time.monotonic() - started
    if args.json:
        print(json.dumps(doc, indent=2, sort_keys=False, default=str))
        return policy_commands.exit_code(violations)
    print(f"Stack {args.stack} — rendered offline under Pulumi mocks in {elapsed:.1f} s\n")
    print("Resources:")
    for line in resource_tree(rendering):
        print("  " + line)
    print("\nCounts by type:")
    for typ, n in sorted(Counter(r.type for r in rendering.resources if r.custom).items()):
        print(f"  {n:4d}  {typ}")
    s = doc["summary"]
    print("\nSummary:")
    print(f"  tier {s['tier']}; {s['resource_count']} resources; rendered in {elapsed:.1f} s")
    for r in s["regions"]:
        print(f"  region {r['name']}: {r['az_count']} AZs, VPC {r['vpc_cidr']}")
    for g in s["node_groups"]:
        kind = f"GPU {g['gpu']}" if g["gpu"] else "CPU"
        print(f"  node group {g['name']} ({kind}, {g['capacity']}): {', '.join(g['instance_types'])} min {g['min']} / desired {g['desired']} / max {g['max']}")
    print()
    print(format_estimate(cost, detail=args.cost_detail))
    print("\nOutputs:")
    for k, v in doc["outputs"].items():
        text = json.dumps(v, default=str)
        print(f"  {k}: {text if len(text) < 120 else text[:117] + '...'}")
    print(f"\nPolicy (policies/config/{policy_commands.config_name(args.stack, tier)}.json):")
    print("\n".join(policy_commands.format_violations(violations)))
    return policy_commands.exit_code(violations)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m infra.cli", description="llm-platform offline tools")
    parser.add_argument("--stacks-dir", type=Path, default=DEFAULT_STACKS_DIR, help="folder of Pulumi.<stack>.yaml files (default: stacks/)")
    sub = parser.add_subparsers(dest="command", required=True)
    plan = sub.add_parser("plan", help="render a stack offline and show what it would create")
    plan.add_argument("stack", help=f"stack name ({', '.join(known_stacks())})")
    plan.add_argument("--json", action="store_true", help="print the machine-readable plan document")
    plan.add_argument("--cost-detail", action="store_true", help="list every priced resource under its component")
    plan.set_defaults(func=cmd_plan)
    preflight.register(sub)
    policy_commands.register(sub)
    pricelist.register(sub)
    manifests_command.register(sub)
    diagram.register(sub)
    cost_command.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    global STACKS_DIR
    previous, STACKS_DIR = STACKS_DIR, args.stacks_dir  # restored below: main() is also called in-process by tests
    try:
        return int(args.func(args))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except PolicyConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except PriceError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_FAILED
    except RenderError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG if "no file" in str(err) else EXIT_FAILED
    except BrokenPipeError:  # `plan --json | head`
        return EXIT_OK
    finally:
        STACKS_DIR = previous


if __name__ == "__main__":
    sys.exit(main())

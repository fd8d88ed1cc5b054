"""`python -m infra.cli policy --list` and the policy part of `plan` (text, --json, exit code 3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from infra.cli import main
from policies.registry import RULES

ROOT = Path(__file__).resolve().parents[2]


def test_policy_list_prints_every_rule_with_controls(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "--list"]) == 0
    out = capsys.readouterr().out
    for rule in RULES:
        line = next(line for line in out.splitlines() if line.startswith(rule.id + " "))
        assert rule.enforcement.value in line and rule.controls[0] in line


def test_policy_list_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "--list", "--json"]) == 0
    rules = json.loads(capsys.readouterr().out)
    assert len(rules) == len(RULES) and {"id", "controls", "enforcement", "remediation", "config"} <= set(rules[0])


def over_budget_stack(tmp_path: Path) -> Path:
    """prod with its A10G group allowed to grow to 40 nodes: valid config, over the prod GPU budget (24)."""
    data = yaml.safe_load((ROOT / "stacks" / "Pulumi.prod.yaml").read_text())
    group = next(g for g in data["config"]["llm-platform:node_groups"] if g["name"] == "gpu-a10g")
    group["max_size"] = 40
    (tmp_path / "Pulumi.budget.yaml").write_text(yaml.safe_dump(data))
    return tmp_path


def test_plan_exits_3_on_a_mandatory_violation(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    stacks = over_budget_stack(tmp_path)
    assert main(["--stacks-dir", str(stacks), "plan", "budget"]) == 3
    out = " ".join(capsys.readouterr().out.split())  # messages are wrapped at 110 columns wherever they fall
    assert "Policy (policies/config/prod.json):" in out  # a stack without its own file uses its tier's
    assert "[mandatory] tier-gpu-node-budget" in out and "this tier's budget is 24" in out

    assert main(["--stacks-dir", str(stacks), "plan", "budget", "--json"]) == 3
    doc = json.loads(capsys.readouterr().out)
    hits = [v for v in doc["policy"] if v["rule"] == "tier-gpu-node-budget"]
    assert len(hits) == 1 and hits[0]["enforcement"] == "mandatory"
    assert set(hits[0]) == {"rule", "urn", "resource_type", "resource_name", "message", "enforcement"}
    assert hits[0]["resource_type"] == "aws:eks/nodeGroup:NodeGroup" and "gpu-a10g" in hits[0]["resource_name"]


def test_readme_rule_table_matches_the_pack() -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Policy pack", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    table = [(cells[0].strip(" `"), cells[2].strip()) for cells in (row.strip("|").split("|") for row in rows)]
    assert table == [(r.id, r.enforcement.value) for r in RULES]
    assert "pulumi preview --stack prod --policy-pack policies --policy-pack-config policies/config/prod.json" in section

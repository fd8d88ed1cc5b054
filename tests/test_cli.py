"""`python -m infra.cli plan` as a user runs it: exit codes, the --json contract, one-line config errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "infra.cli", *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_plan_dev_prints_tree_counts_and_summary() -> None:
    out = cli("plan", "dev")
    assert out.returncode == 0, out.stderr
    assert "+ llm-platform:eks:EksCluster llmp-dev" in out.stdout
    assert "aws:eks/nodeGroup:NodeGroup" in out.stdout
    assert "node group gpu-a10g (GPU a10g, SPOT): g5.xlarge, g5.2xlarge min 0 / desired 0 / max " in out.stdout
    assert "region us-east-1: 2 AZs" in out.stdout


def test_plan_prod_json_contract() -> None:
    out = cli("plan", "prod", "--json")
    assert out.returncode in (0, 3), out.stderr  # 3 = a mandatory policy violation (reported, still a full plan)
    doc = json.loads(out.stdout)
    assert {"stack", "resources", "outputs", "policy", "cost"} <= set(doc)
    assert doc["stack"] == "prod"
    for r in doc["resources"]:
        assert set(r) >= {"urn", "type", "name", "parent", "provider", "inputs"}
    clusters = [r for r in doc["resources"] if r["type"] == "aws:eks/cluster:Cluster"]
    assert len(clusters) == 1 and clusters[0]["inputs"]["encryptionConfig"]["resources"] == ["secrets"]
    types = {t for r in doc["resources"] if r["type"] == "aws:eks/nodeGroup:NodeGroup" for t in r["inputs"]["instanceTypes"]}
    assert any(t.startswith("g5.") for t in types) and any(t.startswith("p4de.") for t in types)
    lts = [r for r in doc["resources"] if r["type"] == "aws:ec2/launchTemplate:LaunchTemplate"]
    assert lts and all(lt["inputs"]["metadataOptions"]["httpTokens"] == "required" for lt in lts)
    assert doc["outputs"]["kubeconfig"] == "[secret]"
    assert "get-token" not in out.stdout


def write_stack(tmp_path: Path, name: str, mutate) -> Path:  # type: ignore[no-untyped-def]
    data = yaml.safe_load((ROOT / "stacks" / "Pulumi.prod.yaml").read_text())
    mutate(data["config"])
    (tmp_path / f"Pulumi.{name}.yaml").write_text(yaml.safe_dump(data))
    return tmp_path


def set_group(**changes: object):  # type: ignore[no-untyped-def]
    def mutate(config: dict) -> None:
        g = next(g for g in config["llm-platform:node_groups"] if g["name"] == "gpu-a100")
        g.update(changes)
    return mutate


@pytest.mark.parametrize(
    "mutate,expected",
    [
        (set_group(gpu="h100x"), 'llm-platform:node_groups[2].gpu: got "h100x"'),
        (set_group(min_size=3, desired_size=3, max_size=2), "llm-platform:node_groups[2]: sizes: got min_size=3"),
        (set_group(instance_types=["g5.2xlarge"]), "llm-platform:node_groups[2]: instance_types: 'g5.2xlarge' does not match gpu class 'a100'"),
    ],
)
def test_broken_config_exits_2_with_one_line(tmp_path: Path, mutate, expected: str) -> None:  # type: ignore[no-untyped-def]
    out = cli("--stacks-dir", str(write_stack(tmp_path, "broken", mutate)), "plan", "broken")
    assert out.returncode == 2
    assert out.stdout == ""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in out.stderr


def test_more_azs_than_the_region_has(tmp_path: Path) -> None:
    def mutate(config: dict) -> None:
        config["llm-platform:regions"] = [{"name": "eu-west-1", "az_count": 4, "vpc_cidr": "10.30.0.0/16"}]
    out = cli("--stacks-dir", str(write_stack(tmp_path, "azs", mutate)), "plan", "azs")
    assert out.returncode == 2
    assert "llm-platform:regions[0].az_count: got 4; eu-west-1 has 3 available AZs" in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_unknown_stack() -> None:
    out = cli("plan", "nope")
    assert out.returncode == 2 and "known stacks: dev, global, prod, small" in out.stderr

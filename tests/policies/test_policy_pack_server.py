"""The pack started the way the Pulumi CLI starts a Python pack (`python policies`, from the pack's directory):
it prints its gRPC port and answers the analyzer protocol on loopback like the engine would talk to it."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from google.protobuf import empty_pb2, struct_pb2
from pulumi.runtime import proto
from pulumi.runtime.proto import analyzer_pb2_grpc

from policies.offline import load_config
from policies.registry import RULES

PACK_DIR = Path(__file__).resolve().parents[2] / "policies"


@pytest.fixture(scope="module")
def analyzer() -> Iterator[analyzer_pb2_grpc.AnalyzerStub]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the pack must find its imports on its own
    process = subprocess.Popen([sys.executable, "-u", str(PACK_DIR)], cwd=PACK_DIR, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        first_line = process.stdout.readline().strip()
        assert first_line.isdigit(), f"pack did not start: {first_line!r} {process.stderr.read() if process.poll() is not None else ''}"
        channel = grpc.insecure_channel(f"127.0.0.1:{first_line}")
        grpc.channel_ready_future(channel).result(timeout=60)
        yield analyzer_pb2_grpc.AnalyzerStub(channel)
        channel.close()
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_pack_describes_every_policy(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    info = analyzer.GetAnalyzerInfo(empty_pb2.Empty())
    assert info.name == "llm-platform-guardrails"
    assert [p.name for p in info.policies] == [r.id for r in RULES]
    budget = next(p for p in info.policies if p.name == "tier-gpu-node-budget")
    assert budget.enforcementLevel == proto.MANDATORY and "max_gpu_nodes" in budget.configSchema.properties


def test_pack_analyzes_an_engine_request(analyzer: analyzer_pb2_grpc.AnalyzerStub) -> None:
    configure = proto.ConfigureAnalyzerRequest()
    for rule_id, values in load_config("prod").items():
        configure.policyConfig[rule_id].properties.update(values)
        configure.policyConfig[rule_id].enforcementLevel = proto.MANDATORY
    analyzer.Configure(configure)
    props = struct_pb2.Struct()
    props.update({"instanceTypes": ["g5.2xlarge"], "capacityType": "SPOT", "clusterName": "c", "nodeRoleArn": "r",
                  "subnetIds": ["subnet-1"], "scalingConfig": {"minSize": 0, "maxSize": 2, "desiredSize": 0}})
    response = analyzer.Analyze(proto.AnalyzeRequest(type="aws:eks/nodeGroup:NodeGroup", properties=props,
                                                     urn="urn:pulumi:prod::llm-platform::aws:eks/nodeGroup:NodeGroup::gpu",
                                                     name="gpu"))
    assert [(d.policyName, d.enforcementLevel) for d in response.diagnostics] == [("tier-spot-capacity", proto.MANDATORY)]
    assert "capacityType SPOT is not allowed in this tier" in response.diagnostics[0].message

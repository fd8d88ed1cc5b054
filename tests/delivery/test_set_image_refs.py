"""The image-reference updater the images workflow runs: edits only the image keys, keeps the rest of the file."""

from __future__ import annotations

import hashlib
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from infra.render import ROOT_DIR

SCRIPT = ROOT_DIR / ".github" / "scripts" / "set_image_refs.py"
REGISTRY = "123456789012.dkr.ecr.us-east-1.amazonaws.com"
STACK_TEXT = """\
# dev: one engineer, lowest cost.
config:
  aws:region: us-east-1
  llm-platform:tier: dev   # the tier decides nothing by itself
  llm-platform:workloads:
    gateway:
      image:
        repository: 123456789012.dkr.ecr.us-east-1.amazonaws.com/llm-platform/gateway
        tag: "0.1.0"
      replicas: {min: 1, max: 2}
    vllm_image: {repository: vllm/vllm-openai, tag: v0.11.0}
  llm-platform:node_groups:
    - name: system
      instance_types: [t3.large]
"""


def digest() -> str:
    return "sha256:" + hashlib.sha256(secrets.token_bytes(16)).hexdigest()


def run(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True, text=True, timeout=60)


@pytest.fixture()
def stack_file(tmp_path: Path) -> Path:
    path = tmp_path / "Pulumi.dev.yaml"
    path.write_text(STACK_TEXT)
    return path


def test_updates_both_images_and_nothing_else(stack_file: Path) -> None:
    sha = "0123456789abcdef0123456789abcdef01234567"
    gateway_digest, vllm_digest = digest(), digest()
    assert run("--image", "gateway", "--repository", f"{REGISTRY}/llm-platform/gateway", "--tag", sha,
               "--digest", gateway_digest, stack_file).returncode == 0
    result = run("--image", "vllm", "--repository", f"{REGISTRY}/llm-platform/vllm", "--tag", sha, "--digest", vllm_digest, stack_file)
    assert result.returncode == 0, result.stderr
    assert f"vllm -> {REGISTRY}/llm-platform/vllm:{sha}" in result.stdout

    text = stack_file.read_text()
    config = yaml.safe_load(text)["config"]
    workloads = config["llm-platform:workloads"]
    assert workloads["gateway"]["image"] == {"repository": f"{REGISTRY}/llm-platform/gateway", "tag": sha}
    assert workloads["vllm_image"] == {"repository": f"{REGISTRY}/llm-platform/vllm", "tag": sha}
    assert workloads["gateway"]["replicas"] == {"min": 1, "max": 2}
    assert f"# digest {gateway_digest}" in text and f"# digest {vllm_digest}" in text
    # Comments and untouched lines survive byte for byte.
    for line in ("# dev: one engineer, lowest cost.", "  llm-platform:tier: dev   # the tier decides nothing by itself",
                 "      replicas: {min: 1, max: 2}", "      instance_types: [t3.large]"):
        assert line in text.splitlines()


def test_the_result_still_validates_as_workloads_config(stack_file: Path) -> None:
    from infra.workload_config import ImageRef

    sha = "1234567890123456789012345678901234567890"  # all digits: must stay a string
    assert run("--image", "gateway", "--repository", f"{REGISTRY}/llm-platform/gateway", "--tag", sha, "--digest", digest(), stack_file).returncode == 0
    image = yaml.safe_load(stack_file.read_text())["config"]["llm-platform:workloads"]["gateway"]["image"]
    assert image["tag"] == sha and isinstance(image["tag"], str)
    assert ImageRef.model_validate(image).ref == f"{REGISTRY}/llm-platform/gateway:{sha}"


def test_a_second_build_replaces_the_digest_comment(stack_file: Path) -> None:
    first, second = digest(), digest()
    for tag, d in (("aaa111", first), ("bbb222", second)):
        assert run("--image", "gateway", "--repository", f"{REGISTRY}/llm-platform/gateway", "--tag", tag, "--digest", d, stack_file).returncode == 0
    text = stack_file.read_text()
    assert second in text and first not in text
    assert text.count("# digest") == 1


def test_stack_without_workloads_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "Pulumi.small.yaml"
    original = "config:\n  llm-platform:tier: small\n"
    path.write_text(original)
    result = run("--image", "gateway", "--repository", "r/x", "--tag", "abc", "--digest", digest(), path)
    assert result.returncode == 0
    assert "no llm-platform:workloads section" in result.stdout
    assert path.read_text() == original


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--image", "redis"], "error: --image: got 'redis'; allowed: gateway, vllm"),
        (["--tag", "latest"], "error: --tag: got 'latest'; allowed: a pinned version tag"),
        (["--digest", "sha256:xyz"], "error: --digest: got 'sha256:xyz'; allowed: sha256:<64 lowercase hex digits>"),
        (["--repository", "Not A Repo"], "error: --repository: got 'Not A Repo';"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(stack_file: Path, args: list[str], message: str) -> None:
    base = {"--image": "gateway", "--repository": "r/x", "--tag": "abc", "--digest": digest()}
    base.update(dict(zip(args[::2], args[1::2])))
    result = run(*[x for kv in base.items() for x in kv], stack_file)
    assert result.returncode == 2
    assert result.stderr.startswith(message), result.stderr
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert stack_file.read_text() == STACK_TEXT


def test_runs_on_the_real_stack_files_without_breaking_them(tmp_path: Path) -> None:
    copies = []
    for path in sorted((ROOT_DIR / "stacks").glob("Pulumi.*.yaml")):
        copy = tmp_path / path.name
        copy.write_text(path.read_text())
        copies.append(copy)
    assert copies
    result = run("--image", "gateway", "--repository", f"{REGISTRY}/llm-platform/gateway", "--tag", "c0ffee", "--digest", digest(), *copies)
    assert result.returncode == 0, result.stderr
    for original, copy in zip(sorted((ROOT_DIR / "stacks").glob("Pulumi.*.yaml")), copies):
        before = yaml.safe_load(original.read_text())["config"]
        after = yaml.safe_load(copy.read_text())["config"]
        workloads = before.get("llm-platform:workloads")
        if workloads is None:
            assert after == before
            continue
        assert after["llm-platform:workloads"]["gateway"]["image"] == {"repository": f"{REGISTRY}/llm-platform/gateway", "tag": "c0ffee"}
        assert {k: v for k, v in after.items() if k != "llm-platform:workloads"} == {k: v for k, v in before.items() if k != "llm-platform:workloads"}

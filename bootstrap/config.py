"""Typed config of the bootstrap program (`bootstrap/Pulumi.<stack>.yaml`, keys `llm-platform-bootstrap:*`).

Validated before any resource is declared: a wrong value stops with one line naming the key, the value given and
what is allowed, like the platform's own config (`infra/config.py`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from infra.configkit import REGION_PATTERN, Strict, format_validation_error, project_config_from_pulumi

PROJECT = "llm-platform-bootstrap"
ROOT_DIR = Path(__file__).resolve().parent.parent
STACKS_DIR = ROOT_DIR / "stacks"
# GitHub environments of the deploy workflow, one per stack (.github/workflows/deploy.yml): each gets its own deploy
# role, trusted only by that environment's OIDC subject. dev has no reviewers but still an environment, so that only
# main (its deployment-branch policy) can reach the dev role.
DEFAULT_ENVIRONMENTS = ("dev", "small", "prod", "global")
# The environment whose required reviewers approve running a pull request's code with state and secrets access
# (`pulumi preview` in .github/workflows/preview.yml), and the one the image build runs in (main only, no reviewers).
REVIEWED_PREVIEW_ENVIRONMENT = "reviewed-preview"
IMAGES_ENVIRONMENT = "images"
DEFAULT_ECR_REPOSITORIES = ("gateway", "vllm")
REPOSITORY_PATTERN = r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$"
OIDC_PROVIDER_ARN_PATTERN = r"^arn:aws[a-z-]*:iam::\d{12}:oidc-provider/token\.actions\.githubusercontent\.com$"


class BootstrapConfigError(Exception):
    """Invalid bootstrap config: one line naming the key, the value given and what is allowed."""


class BootstrapConfig(Strict):
    """Everything the bootstrap needs; only `github_repository` and `region` are required."""

    github_repository: Annotated[str, Field(pattern=REPOSITORY_PATTERN, description="owner/name exactly as GitHub spells it (the OIDC subject is case-sensitive)")]
    region: Annotated[str, Field(pattern=REGION_PATTERN, description="region of the state bucket, the KMS keys and the ECR repositories")]
    name_prefix: Annotated[str, Field(pattern=r"^[a-z][a-z0-9-]{1,15}$", description="prefix of every name the bootstrap creates")] = "llm-platform"
    environments: list[Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]] = Field(
        default_factory=lambda: list(DEFAULT_ENVIRONMENTS),
        description="deploy environments, one per stack in stacks/: each gets a deploy role trusted only by that environment",
    )
    allowed_regions: list[Annotated[str, Field(pattern=REGION_PATTERN)]] | None = Field(
        None, description="regions the deploy role may act in; default: every region named in stacks/ plus `region`"
    )
    ecr_repositories: list[Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]] = Field(
        default_factory=lambda: list(DEFAULT_ECR_REPOSITORIES), description="image names; repositories are <name_prefix>/<name>"
    )
    ecr_keep_images: Annotated[int, Field(ge=10, le=1000, description="tagged images kept per repository (stack configs pin digests: keep enough for rollbacks)")] = 100
    state_noncurrent_version_days: Annotated[int, Field(ge=7, le=3650, description="days a superseded state file version is kept")] = 90
    github_oidc_provider_arn: Annotated[str | None, Field(pattern=OIDC_PROVIDER_ARN_PATTERN, description="reuse the account's existing GitHub OIDC provider (an account holds only one per URL)")] = None
    dr_region: Annotated[str | None, Field(pattern=REGION_PATTERN, description="second region holding a replica of the state bucket and of a multi-Region secrets key, so Pulumi works while `region` is down (docs/runbooks/region-failover.md)")] = None
    protect: bool = Field(True, description="Pulumi `protect` on the state bucket, KMS keys and ECR repositories")
    force_destroy: bool = Field(False, description="tear-down only: let destroy empty the state bucket (every version) and the ECR repositories")

    @field_validator("environments", "ecr_repositories")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("a name is listed twice; allowed: distinct names")
        return value

    @field_validator("environments")
    @classmethod
    def _environments_are_stacks(cls, value: list[str]) -> list[str]:
        stacks = known_stack_names()
        unknown = [env for env in value if env not in stacks]
        if unknown:
            raise ValueError(f"{unknown[0]!r} is not a stack; allowed: {', '.join(stacks)} (stacks/Pulumi.<name>.yaml)")
        return value

    @model_validator(mode="after")
    def _state_bucket_name_fits(self) -> BootstrapConfig:
        # S3 bucket names are at most 63 characters: <prefix>-state-<12-digit account>-<region>.
        longest = len(f"{self.name_prefix}-state-123456789012-{self.region}")
        if longest > 63:
            raise ValueError(f"name_prefix: got {self.name_prefix!r}; allowed: short enough that the state bucket name is <= 63 characters ({longest})")
        return self

    @property
    def owner(self) -> str:
        return self.github_repository.split("/", 1)[0]

    def deploy_regions(self, stacks_dir: Path = STACKS_DIR, environment: str | None = None) -> list[str]:
        """Regions a deploy role may act in: its stack's regions (every stack's without `environment`), plus the
        bootstrap region (state bucket and keys), or `allowed_regions` when given."""
        if self.allowed_regions:
            return sorted({*self.allowed_regions, self.region})
        return sorted({*regions_in_stacks(stacks_dir, environment), self.region})


def known_stack_names(stacks_dir: Path = STACKS_DIR) -> list[str]:
    return sorted(p.name.removeprefix("Pulumi.").removesuffix(".yaml") for p in stacks_dir.glob("Pulumi.*.yaml"))


def regions_in_stacks(stacks_dir: Path = STACKS_DIR, stack: str | None = None) -> set[str]:
    """Every region named by `llm-platform:regions` in stacks/Pulumi.*.yaml (or in one stack's file)."""
    found: set[str] = set()
    for path in sorted(stacks_dir.glob(f"Pulumi.{stack or '*'}.yaml")):
        config = (yaml.safe_load(path.read_text()) or {}).get("config") or {}
        for region in config.get("llm-platform:regions") or []:
            if isinstance(region, dict) and isinstance(region.get("name"), str):
                found.add(region["name"])
    return found


def parse_bootstrap_config(raw: dict[str, Any], source: str = "bootstrap config") -> BootstrapConfig:
    """Validate `{key: value}` (keys without the `llm-platform-bootstrap:` prefix)."""
    try:
        return BootstrapConfig.model_validate(raw)
    except ValidationError as err:
        raise BootstrapConfigError(format_validation_error(err, source, PROJECT)) from None


def bootstrap_config_from_pulumi() -> dict[str, Any]:
    """Every `llm-platform-bootstrap:*` key the engine handed to the program, JSON-decoded where it is structured."""
    return project_config_from_pulumi(PROJECT)

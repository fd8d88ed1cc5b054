"""The model catalog: schema of ``/etc/gateway/models.yaml`` and its loader.

The infra program writes this file from the stack's model catalog (``from llm_gateway.catalog import Catalog``),
the gateway reads it at startup. Dependencies: pydantic and PyYAML only.

Schema (every object is strict: an unknown field is an error)::

    models:                          # list, at least one entry
      - name: llama-3-8b-instruct    # public model name; also the vLLM --served-model-name
        aliases: [gpt-3.5-turbo]     # other names clients may use (unique across the catalog)
        kind: chat                   # chat | completion | embedding | rerank
        backends:                    # base URLs of the model servers (vLLM), without /v1
          - http://llama-0.llama.models.svc:8000
        max_tokens_cap: 4096         # largest max_tokens a request may ask for (also the default)
        max_context: 8192            # model context length (max_model_len)
        prices: {prompt_per_1k: 0.0002, completion_per_1k: 0.0006}   # USD per 1000 tokens
        fallbacks: [mistral-7b]      # other catalog models (same kind) tried when this one fails; no cycles
        prefix_affinity: false       # route same-prefix prompts to the same backend (vLLM prefix cache)
        wake_timeout_s: 240          # with no healthy backend (scaled to zero), hold a request this long while the
                                     # model wakes; 0 = answer 503 at once (the default)
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

ModelKind = Literal["chat", "completion", "embedding", "rerank"]


class CatalogError(ValueError):
    """One line naming the file, the field, the value given and what is allowed."""


class Prices(BaseModel):
    """USD per 1000 tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    prompt_per_1k: float = Field(default=0.0, ge=0)
    completion_per_1k: float = Field(default=0.0, ge=0)

    def cost_usd(self, prompt_tokens: int, completion_tokens: int) -> float:
        return (prompt_tokens * self.prompt_per_1k + completion_tokens * self.completion_per_1k) / 1000.0


class ModelEntry(BaseModel):
    """One served model. See the module docstring for the YAML shape."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")
    aliases: list[str] = Field(default_factory=list)
    kind: ModelKind
    backends: list[str] = Field(min_length=1)
    max_tokens_cap: int = Field(default=4096, gt=0)
    max_context: int = Field(default=8192, gt=0)
    prices: Prices = Field(default_factory=lambda: Prices())
    fallbacks: list[str] = Field(default_factory=list)
    prefix_affinity: bool = False
    # How long a request may wait for this model to get a healthy backend (a model scaled to zero is woken by the
    # demand it sees); past it the answer is a 503 with retry-after. Below the load balancer's idle timeout.
    wake_timeout_s: float = Field(default=0.0, ge=0, le=3600)

    @field_validator("backends")
    @classmethod
    def _backend_urls(cls, backends: list[str]) -> list[str]:
        cleaned = []
        for url in backends:
            if not url.startswith(("http://", "https://")) or len(url) < 10 or " " in url:
                raise ValueError(f"backend {url!r} must be an http(s) base URL such as http://host:8000")
            cleaned.append(url.rstrip("/"))
        if len(set(cleaned)) != len(cleaned):
            raise ValueError("backends must not repeat a URL")
        return cleaned

    @model_validator(mode="after")
    def _cap_within_context(self) -> ModelEntry:
        if self.max_tokens_cap > self.max_context:
            raise ValueError(
                f"max_tokens_cap ({self.max_tokens_cap}) must not exceed max_context ({self.max_context})"
            )
        return self


class Catalog(BaseModel):
    """The whole ``models.yaml``: ``{"models": [ModelEntry, ...]}``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    models: list[ModelEntry] = Field(min_length=1)
    _by_public_name: dict[str, ModelEntry] = PrivateAttr(default_factory=dict)

    @model_validator(mode="after")
    def _names_and_fallbacks(self) -> Catalog:
        by_name: dict[str, ModelEntry] = {}
        for entry in self.models:
            for public in (entry.name, *entry.aliases):
                if public in by_name:
                    raise ValueError(f"model name or alias {public!r} is used twice")
                by_name[public] = entry
        canonical = {entry.name: entry for entry in self.models}
        for entry in self.models:
            for fallback in entry.fallbacks:
                if fallback not in canonical:
                    raise ValueError(
                        f"model {entry.name!r}: fallback {fallback!r} is not a catalog model name "
                        f"(known: {', '.join(sorted(canonical))})"
                    )
                if canonical[fallback].kind != entry.kind:
                    raise ValueError(
                        f"model {entry.name!r}: fallback {fallback!r} has kind {canonical[fallback].kind}, "
                        f"it must have the same kind ({entry.kind})"
                    )
        for entry in self.models:
            _reject_cycle(entry.name, canonical, [])
        return self

    def model_post_init(self, __context: object) -> None:
        self._by_public_name = {public: entry for entry in self.models for public in (entry.name, *entry.aliases)}

    def lookup(self, name: str) -> ModelEntry | None:
        """The entry a public name or alias refers to."""
        return self._by_public_name.get(name)


def _reject_cycle(name: str, canonical: dict[str, ModelEntry], path: list[str]) -> None:
    if name in path:
        raise ValueError(f"fallbacks form a cycle: {' -> '.join([*path, name])}")
    for fallback in canonical[name].fallbacks:
        _reject_cycle(fallback, canonical, [*path, name])


def parse_catalog(data: object, source: str = "models.yaml") -> Catalog:
    try:
        return Catalog.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in err["loc"]).lstrip(".")
        where = f"{source}: {loc}: " if loc else f"{source}: "
        msg = err["msg"].removeprefix("Value error, ")
        given = err.get("input")
        shown = "" if loc == "" or isinstance(given, dict) else f" (got {given!r})"
        raise CatalogError(f"{where}{msg}{shown}") from None


def load_catalog(path: str | Path) -> Catalog:
    """Read and validate ``models.yaml``; ``CatalogError`` (one line naming the field) on bad input."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise CatalogError(f"{path}: cannot read: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "invalid YAML"
        raise CatalogError(f"{path}: not valid YAML: {first}") from None
    return parse_catalog(data, str(path))

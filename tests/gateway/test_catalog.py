"""models.yaml schema (strict, one clear line per error) and GATEWAY_* settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from llm_gateway.catalog import Catalog, CatalogError, load_catalog, parse_catalog
from llm_gateway.settings import Settings, SettingsError


def model(**overrides: Any) -> dict[str, Any]:
    return {"name": "chat-7b", "kind": "chat", "backends": ["http://chat-7b.models.svc:8000"], **overrides}


def test_good_catalog_round_trips_and_resolves_aliases(tmp_path: Path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(
        "models:\n"
        "  - name: chat-7b\n    aliases: [gpt-3.5-turbo]\n    kind: chat\n"
        "    backends: [http://a:8000/, http://b:8000]\n    max_tokens_cap: 1024\n    max_context: 8192\n"
        "    prices: {prompt_per_1k: 0.0002, completion_per_1k: 0.0006}\n    fallbacks: [sql-7b]\n"
        "    prefix_affinity: true\n"
        "  - name: sql-7b\n    kind: chat\n    backends: [http://c:8000]\n"
    )
    catalog = load_catalog(path)
    assert isinstance(catalog, Catalog)
    chat = catalog.lookup("gpt-3.5-turbo")
    assert chat is not None and chat.name == "chat-7b"
    assert chat.backends == ["http://a:8000", "http://b:8000"]  # trailing slash normalised
    assert chat.prices.cost_usd(1000, 1000) == pytest.approx(0.0008)
    assert catalog.lookup("nope") is None
    # the infra code generates the file from these models: dumping and re-parsing is lossless
    assert parse_catalog(catalog.model_dump()) == catalog


@pytest.mark.parametrize(("data", "expected"), [
    ({"models": [model(kind="chat-ish")]}, "models[0].kind: Input should be 'chat', 'completion', 'embedding' or 'rerank' (got 'chat-ish')"),
    ({"models": [model(colour="red")]}, "models[0].colour: Extra inputs are not permitted (got 'red')"),
    ({"models": [model(max_tokens_cap=0)]}, "models[0].max_tokens_cap: Input should be greater than 0 (got 0)"),
    ({"models": [model(max_tokens_cap=9000, max_context=4096)]}, "max_tokens_cap (9000) must not exceed max_context (4096)"),
    ({"models": [model(backends=[])]}, "models[0].backends: List should have at least 1 item"),
    ({"models": [model(backends=["chat:8000"])]}, "backend 'chat:8000' must be an http(s) base URL"),
    ({"models": [model(prices={"prompt_per_1k": -1})]}, "models[0].prices.prompt_per_1k: Input should be greater than or equal to 0 (got -1)"),
    ({"models": [model(fallbacks=["ghost"])]}, "fallback 'ghost' is not a catalog model name"),
    ({"models": [model(fallbacks=["b"]), model(name="b", fallbacks=["chat-7b"])]}, "fallbacks form a cycle: chat-7b -> b -> chat-7b"),
    ({"models": [model(fallbacks=["e"]), model(name="e", kind="embedding")]}, "fallback 'e' has kind embedding, it must have the same kind (chat)"),
    ({"models": [model(), model(name="other", aliases=["chat-7b"])]}, "model name or alias 'chat-7b' is used twice"),
    ({"models": []}, "models: List should have at least 1 item"),
    ({"modles": []}, "models: Field required"),
])
def test_bad_catalogs_fail_with_one_line_naming_the_field(data: dict[str, Any], expected: str) -> None:
    with pytest.raises(CatalogError) as excinfo:
        parse_catalog(data)
    message = str(excinfo.value)
    assert expected in message
    assert "\n" not in message


def test_load_catalog_file_errors(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match="cannot read"):
        load_catalog(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [\n")
    with pytest.raises(CatalogError, match="not valid YAML"):
        load_catalog(bad)


def test_settings_from_env_and_errors(tmp_path: Path) -> None:
    settings = Settings.from_env({"GATEWAY_PORT": "9000", "GATEWAY_EXPECTED_REPLICAS": "4",
                                  "GATEWAY_LOG_PROMPTS": "true", "UNRELATED": "x"})
    assert settings.port == 9000 and settings.expected_replicas == 4 and settings.log_prompts is True
    assert settings.metrics_port == 9090 and settings.cache_ttl_s == 60 and settings.drain_timeout_s == 25
    assert settings.breaker_failures == 5 and settings.breaker_reset_s == 30 and settings.max_retries == 3
    with pytest.raises(SettingsError) as excinfo:
        Settings.from_env({"GATEWAY_EXPECTED_REPLICAS": "0"})
    assert str(excinfo.value).startswith("GATEWAY_EXPECTED_REPLICAS='0' is invalid")
    with pytest.raises(SettingsError, match="GATEWAY_PORT='http' is invalid"):
        Settings.from_env({"GATEWAY_PORT": "http"})
    dsn_file = tmp_path / "dsn"
    dsn_file.write_text("postgresql://u@db/x\n")
    assert Settings.from_env({"GATEWAY_DATABASE_URL_FILE": str(dsn_file)}).database_dsn() == "postgresql://u@db/x"
    with pytest.raises(SettingsError, match="cannot read secret file"):
        Settings.from_env({"GATEWAY_DATABASE_URL_FILE": str(tmp_path / "none")}).database_dsn()


def test_gateway_refuses_to_start_on_a_bad_catalog(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    (tmp_path / "models.yaml").write_text("models:\n  - name: x\n    kind: chat\n    backends: [nope]\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "images" / "gateway"),
           "GATEWAY_MODELS_FILE": str(tmp_path / "models.yaml")}
    done = subprocess.run([sys.executable, "-m", "llm_gateway"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert "models[0].backends: backend 'nope' must be an http(s) base URL" in done.stderr
    assert "Traceback" not in done.stderr

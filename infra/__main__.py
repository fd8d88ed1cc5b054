"""Entry point `pulumi up` runs (Pulumi.yaml `main: infra/`)."""

import sys
from pathlib import Path

# Pulumi runs this folder as the program: put the project root on the import path (for `components`, `infra`).
_ROOT = Path(__file__).resolve().parent.parent
for _path in (_ROOT,):
    if str(_path) not in sys.path:
        sys.path.insert(0, str(_path))

from infra import program  # noqa: E402

program.main()

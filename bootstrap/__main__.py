"""Entry point `pulumi up` runs in bootstrap/ (its own Pulumi project)."""

import sys
from pathlib import Path

# Pulumi runs this folder as the program: put the project root on the import path for `bootstrap`, `components`
# and `infra` (the bootstrap reuses the platform's KMS key component and config conventions).
_ROOT = Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

from bootstrap import program  # noqa: E402

program.main()

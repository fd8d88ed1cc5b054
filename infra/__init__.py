"""llm-platform infrastructure program: tier config, composition, offline rendering and the CLI."""

import sys
from pathlib import Path

# The gateway package (images/gateway/llm_gateway) owns the models.yaml schema and the metric names; the infra code
# imports both so that there is one schema, not two.
_GATEWAY_SRC = str(Path(__file__).resolve().parent.parent / "images" / "gateway")
if _GATEWAY_SRC not in sys.path:
    sys.path.append(_GATEWAY_SRC)

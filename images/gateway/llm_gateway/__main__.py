"""``python -m llm_gateway``: run the gateway (see ``server.py``)."""

import sys

from llm_gateway.server import main

sys.exit(main())

"""Entry point: `python3 -m lambda_runtime`."""

import sys

from lambda_runtime.server import main

sys.exit(main())

"""Entry point: `python3 -m lambda_runtime` (the supervisor; see supervisor.py)."""

import os
import sys

from lambda_runtime.server import main

code = main()
# Exit without interpreter shutdown: threads blocked on a keep-alive connection or a
# worker must not delay or break the exit.
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)

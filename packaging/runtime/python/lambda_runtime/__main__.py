"""Entry point: `python3 -m lambda_runtime`."""

import os
import sys

from lambda_runtime.server import main

code = main()
# Exit without interpreter shutdown: handler threads blocked on a keep-alive
# connection (or holding a stdio lock) must not delay or break the exit.
sys.stdout.flush()
sys.stderr.flush()
os._exit(code)

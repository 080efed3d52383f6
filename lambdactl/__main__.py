"""Lets `python -m lambdactl` work the same as the console script (handy in tests)."""

import sys

from lambdactl.main import main

sys.exit(main())

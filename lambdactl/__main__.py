"""Lets `python -m lambdactl` work the same as the console script (handy in tests)."""

from lambdactl.main import run

run()

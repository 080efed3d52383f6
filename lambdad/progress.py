"""A deploy's steps, as both ends count them: lambdactl reports step 1 (package and upload)
before the daemon says anything, and the control plane reports the rest. A leaf module, so
the use cases and the CLI share the count without importing the API's generated code."""

from __future__ import annotations

DEPLOY_STEPS = 3

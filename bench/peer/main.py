"""functions/greet as a Google functions-framework HTTP function (the peer benchmark).

Run by bench/run.py from its own venv (bench/.peer-venv) as
`functions-framework --target greet --source bench/peer/main.py --host 127.0.0.1 --port P`.
"""

from __future__ import annotations

import json
from typing import Any

import functions_framework  # type: ignore[import-not-found]


@functions_framework.http  # type: ignore[misc]
def greet(request: Any) -> dict[str, str]:
    name = request.args.get("name")
    body = request.get_data()
    if name is None and body:
        try:
            name = json.loads(body).get("name")
        except (ValueError, AttributeError):
            name = None
    print(f"greeting {name or 'stranger'} (request {request.headers.get('X-Request-Id', '-')})")
    return {"message": f"Hello, {name or 'stranger'}!"}

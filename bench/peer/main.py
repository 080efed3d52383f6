"""functions/greet as a Google functions-framework HTTP function (the peer benchmark).

Run by bench/run.py from its own venv (bench/.peer-venv) as
`functions-framework --target greet --source bench/peer/main.py --signature-type http
--host 127.0.0.1 --port P` (an HTTP function: the `@functions_framework.http` decorator only
declares the signature type, given on the command line here, so this file imports nothing).
"""

from __future__ import annotations

import json
from typing import Any


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

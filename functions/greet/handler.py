"""Says hello: over HTTP (`?name=World`) or through `lambdactl invoke` (`{"name": "World"}`)."""

import json


def handler(event, context):
    if "requestContext" in event:  # an HTTP request through the gateway
        params = event.get("queryStringParameters") or {}
        name = params.get("name")
        if name is None and event.get("body"):
            try:
                name = json.loads(event["body"]).get("name")
            except (ValueError, AttributeError):
                name = None
    else:  # a direct or async invocation: the payload itself
        name = event.get("name") if isinstance(event, dict) else None
    print(f"greeting {name or 'stranger'} (request {context.aws_request_id})")
    return {"message": f"Hello, {name or 'stranger'}!"}

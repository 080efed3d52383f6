"""A calculator: `?op=add&a=2&b=3` over HTTP, `{"op": "add", "a": 2, "b": 3}` through invoke."""

import operator

OPERATIONS = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "div": operator.truediv,
}


def _number(value):
    number = float(value)
    return int(number) if number.is_integer() else number


def calculate(event, context):
    is_http = "requestContext" in event
    args = (event.get("queryStringParameters") or {}) if is_http else event
    op = args.get("op")
    if op not in OPERATIONS:
        message = f"op must be one of {', '.join(OPERATIONS)}"
        if is_http:
            return {"statusCode": 400, "body": '{"error": "%s"}' % message}
        raise ValueError(message)
    try:
        a, b = _number(args["a"]), _number(args["b"])
        result = OPERATIONS[op](a, b)
    except (KeyError, ValueError, TypeError, ZeroDivisionError) as exc:
        if is_http:
            return {"statusCode": 400, "body": '{"error": "%s"}' % type(exc).__name__}
        raise
    return {"op": op, "a": a, "b": b, "result": result}

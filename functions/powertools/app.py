"""AWS Lambda Powertools as its docs show it: a Function URL resolver, the event parser and
the structured Logger with `inject_lambda_context`."""

from aws_lambda_powertools import Logger
from aws_lambda_powertools.event_handler import LambdaFunctionUrlResolver, Response, content_types
from aws_lambda_powertools.event_handler.exceptions import BadRequestError, NotFoundError
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.parser import BaseModel, Field, ValidationError, parse
from aws_lambda_powertools.utilities.parser.models import LambdaFunctionUrlModel
from aws_lambda_powertools.utilities.typing import LambdaContext

logger = Logger()
app = LambdaFunctionUrlResolver()

TODOS = {1: {"id": 1, "title": "deploy powertools", "done": False}}


class NewTodo(BaseModel):
    title: str = Field(min_length=1, max_length=200)  # todos stay in memory: bound them
    done: bool = False


@app.get("/todos")
def list_todos():
    done = app.current_event.get_query_string_value("done")
    todos = list(TODOS.values())
    if done is not None:
        todos = [t for t in todos if t["done"] == (done == "true")]
    return {"todos": todos}


@app.get("/todos/<todo_id>")
def get_todo(todo_id: str):
    # ASCII digits, and not too many: int() refuses over 4300 digits (a 500 otherwise).
    todo = TODOS.get(int(todo_id)) if todo_id.isascii() and todo_id.isdigit() \
        and len(todo_id) <= 9 else None
    if todo is None:
        raise NotFoundError(f"todo {todo_id} not found")
    return todo


@app.post("/todos")
def create_todo():
    try:
        todo = parse(event=app.current_event.json_body, model=NewTodo)
    except ValidationError as exc:
        raise BadRequestError(f"invalid todo: {exc.errors()[0]['msg']}") from exc
    todo_id = max(TODOS) + 1
    TODOS[todo_id] = {"id": todo_id, **todo.model_dump()}
    logger.info("todo created", extra={"todo_id": todo_id})
    return Response(status_code=201, content_type=content_types.APPLICATION_JSON,
                    body=TODOS[todo_id])


@app.get("/whoami")
def whoami():
    # The whole Function URL event, validated and typed by Powertools' own model.
    event = parse(event=app.current_event.raw_event, model=LambdaFunctionUrlModel)
    return {
        "method": event.requestContext.http.method,
        "path": event.rawPath,
        "source_ip": str(event.requestContext.http.sourceIp),
        "user_agent": event.requestContext.http.userAgent,
        "request_id": event.requestContext.requestId,
        "domain": event.requestContext.domainName,
        "cookies": event.cookies or [],
    }


@logger.inject_lambda_context(correlation_id_path=correlation_paths.LAMBDA_FUNCTION_URL)
def handler(event: dict, context: LambdaContext) -> dict:
    logger.info("request", extra={"path": event.get("rawPath")})
    return app.resolve(event, context)

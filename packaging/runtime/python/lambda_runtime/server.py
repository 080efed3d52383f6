"""Socket side of the runtime: loads the handler, then serves HTTP/1.1 on a Unix socket."""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import signal
import socketserver
import sys
import time
import traceback
import uuid
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from types import FrameType
from typing import Any

from . import events
from .context import ContextFactory

Handler = Callable[[Any, Any], Any]
DEFAULT_SOCKET = "/run/lambda/invoke.sock"
DEFAULT_TASK_ROOT = "/var/task"
DEFAULT_TIMEOUT_MS = 900_000  # AWS's maximum, used only when the daemon sent no deadline
MAX_CHUNK_LINE = 4096


class HandlerLoadError(Exception):
    """Raised before the socket exists so the daemon sees an exit, not a broken instance."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type


class BadRequest(Exception):
    pass


def load_handler(spec: str, task_root: str = DEFAULT_TASK_ROOT) -> Handler:
    """Imports `module.function` (module may be dotted, or a path like `src/app`) once."""
    if task_root in sys.path:
        sys.path.remove(task_root)
    sys.path.insert(0, task_root)
    module_name, _, func_name = spec.strip().rpartition(".")
    module_name = module_name.replace("/", ".").strip(".")
    if not module_name or not func_name:
        raise HandlerLoadError("Runtime.MalformedHandlerName", f"Bad handler '{spec}'")
    try:
        module = importlib.import_module(module_name)
    except SyntaxError as exc:
        raise HandlerLoadError(
            "Runtime.UserCodeSyntaxError", f"Syntax error in module '{module_name}': {exc}"
        ) from exc
    except Exception as exc:
        raise HandlerLoadError(
            "Runtime.ImportModuleError", f"Unable to import module '{module_name}': {exc}"
        ) from exc
    func = getattr(module, func_name, None)
    if func is None:
        raise HandlerLoadError(
            "Runtime.HandlerNotFound", f"handler '{func_name}' missing on module '{module_name}'"
        )
    if not callable(func):
        raise HandlerLoadError(
            "Runtime.HandlerNotFound",
            f"handler '{func_name}' on module '{module_name}' is not callable",
        )
    return func  # type: ignore[no-any-return]


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


class InvokeHandler(BaseHTTPRequestHandler):
    """One instance per connection; keep-alive comes from protocol_version HTTP/1.1."""

    protocol_version = "HTTP/1.1"
    server_version = "lambda-runtime"
    sys_version = ""
    server: InvokeServer

    def __getattr__(self, name: str) -> Callable[[], None]:
        # Any method (PROPFIND, custom verbs) reaches the function, as on a Function URL.
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def address_string(self) -> str:
        return "unix"  # client_address is empty on AF_UNIX; the default would raise

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass  # access logs belong to the gateway; stderr is the function's own log

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            return self._read_chunked()
        length = self.headers.get("Content-Length")
        if not length:
            return b""
        try:
            n = int(length)
        except ValueError as exc:
            raise BadRequest(f"invalid Content-Length {length!r}") from exc
        if n < 0:
            raise BadRequest("negative Content-Length")
        data = self.rfile.read(n)
        if len(data) != n:
            raise BadRequest("truncated body")
        return data

    def _read_chunked(self) -> bytes:
        buf = io.BytesIO()
        while True:
            line = self.rfile.readline(MAX_CHUNK_LINE)
            if not line.endswith(b"\n"):
                raise BadRequest("malformed chunk size line")
            try:
                size = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError as exc:
                raise BadRequest("malformed chunk size") from exc
            if size < 0:
                raise BadRequest("malformed chunk size")
            if size == 0:
                break
            data = self.rfile.read(size)
            if len(data) != size or self.rfile.readline(MAX_CHUNK_LINE).strip():
                raise BadRequest("malformed chunk")
            buf.write(data)
        while True:  # trailers are discarded
            line = self.rfile.readline(MAX_CHUNK_LINE)
            if not line.strip():
                if not line:
                    raise BadRequest("truncated trailers")
                return buf.getvalue()

    def _send(self, status: int, headers: events.Headers, body: bytes) -> None:
        self.send_response_only(status)
        for name, value in headers:
            self.send_header(name, value)
        no_body = status in (204, 304) or self.command == "HEAD"
        if status != 204:
            self.send_header("Content-Length", str(len(body)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if not no_body:
            self.wfile.write(body)
        self.wfile.flush()

    def _send_error(self, exc: BaseException, function_error: bool) -> None:
        status = exc.status if isinstance(exc, events.RuntimeFault) else 500
        headers = [("Content-Type", events.JSON_TYPE)]
        if function_error:
            headers.append(("Lambda-Function-Error", "Unhandled"))
        self._send(status, headers, events.error_body(exc))

    def _dispatch(self) -> None:
        try:
            body = self._read_body()
        except BadRequest as exc:
            self.close_connection = True  # framing is lost; the stream cannot be reused
            self.send_error(400, str(exc))
            return
        request_id = self.headers.get("Lambda-Request-Id") or str(uuid.uuid4())
        now_ms = int(time.time() * 1000)
        try:
            deadline_ms = int(self.headers.get("Lambda-Deadline-Ms", ""))
        except ValueError:
            deadline_ms = now_ms + DEFAULT_TIMEOUT_MS
        kind = (self.headers.get("Lambda-Invocation-Type") or "http").strip().lower()
        try:
            if kind == "http":
                event: object = events.http_event(
                    self.command, self.path, list(self.headers.items()), body, request_id, now_ms
                )
            elif kind in ("direct", "event"):
                event = events.direct_event(body)
            else:
                raise events.InvalidPayload(f"unknown Lambda-Invocation-Type {kind!r}")
        except events.RuntimeFault as exc:
            self._send_error(exc, function_error=False)
            return
        self._invoke(kind, event, request_id, deadline_ms)

    def _invoke(self, kind: str, event: object, request_id: str, deadline_ms: int) -> None:
        context = self.server.contexts.make(request_id, deadline_ms)
        try:
            result = self.server.handler(event, context)
            status, headers, data = (
                events.http_response(result) if kind == "http" else events.direct_response(result)
            )
        except SystemExit as exc:
            # A handler that exits is a crash the daemon must see, not a 500 to paper over.
            code = _exit_code(exc)
            print(f"[ERROR] {request_id} handler exited with code {code}", file=sys.stderr)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        except BaseException as exc:
            print(
                f"[ERROR] {request_id} {events.error_type(exc)}: {exc}\n"
                + "".join(traceback.format_exception(exc)),
                end="",
                file=sys.stderr,
                flush=True,
            )
            self._send_error(exc, function_error=True)
            return
        self._send(status, headers, data)


class InvokeServer(socketserver.ThreadingUnixStreamServer):
    """Threads because the daemon opens one connection per concurrent request."""

    daemon_threads = True
    block_on_close = False  # idle keep-alive connections must not delay shutdown
    # socketserver's default backlog of 5 overflows when a new instance takes a burst:
    # a Unix-socket connect to a full backlog fails instead of waiting.
    request_queue_size = 1024

    def __init__(self, path: str, handler: Handler, contexts: ContextFactory) -> None:
        self.handler = handler
        self.contexts = contexts
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # a stale socket from a previous run would make bind fail
        super().__init__(path, InvokeHandler)
        os.chmod(path, 0o666)  # the daemon's user differs from the container's 10001

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        # Signals must reach the main thread, whose select() they interrupt at once;
        # delivered to a worker thread they would wait for the next poll interval.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
        super().process_request_thread(request, client_address)


class _Terminate(Exception):
    pass


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise _Terminate  # unwinds serve_forever in the main thread; shutdown() would deadlock


def main(env: dict[str, str] | None = None) -> int:
    env = dict(os.environ) if env is None else env
    for stream in (sys.stdout, sys.stderr):  # prints reach `docker logs` even without -u
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(line_buffering=True, write_through=True)
    task_root = env.get("LAMBDA_TASK_ROOT", DEFAULT_TASK_ROOT)
    socket_path = env.get("LAMBDA_SOCKET", DEFAULT_SOCKET)
    try:
        spec = env.get("_HANDLER", "")
        if not spec:
            raise HandlerLoadError("Runtime.MalformedHandlerName", "_HANDLER is not set")
        handler = load_handler(spec, task_root)
    except HandlerLoadError as exc:
        print(exc, file=sys.stderr)
        if exc.__cause__ is not None:
            traceback.print_exception(exc.__cause__, file=sys.stderr)
        return 1

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    server = InvokeServer(socket_path, handler, ContextFactory(env))
    try:
        server.serve_forever()
    except _Terminate:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second signal must not abort cleanup
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        server.server_close()
        with contextlib.suppress(OSError):
            os.unlink(socket_path)
    return 0

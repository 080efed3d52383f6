"""Socket side of the runtime: loads the handler, then serves HTTP/1.1 on a Unix socket.

The HTTP server is written on `socket` and `threading` rather than http.server/socketserver:
those pull in http.client, email.* and ssl, which cost every cold start tens of milliseconds
before the socket opens. Only what the error paths need (traceback) is imported lazily.
"""

from __future__ import annotations

import importlib
import io
import os
import signal
import socket
import sys
import threading
import time

from . import events, logs
from .context import ContextFactory

TYPE_CHECKING = False  # typing is not imported at run time (see events.py)
if TYPE_CHECKING:
    from collections.abc import Callable
    from types import FrameType
    from typing import Any

    Handler = Callable[[Any, Any], Any]

DEFAULT_SOCKET = "/run/lambda/invoke.sock"
DEFAULT_TASK_ROOT = "/var/task"
DEFAULT_TIMEOUT_MS = 900_000  # AWS's maximum, used only when the daemon sent no deadline
MAX_HEAD = 64 * 1024  # request line + headers
MAX_BODY = 16 * 1024 * 1024
MAX_CHUNK_LINE = 4096
INIT_PATH = "/init"  # a stem cell's specialization request
LISTEN_BACKLOG = 1024  # a burst of connects to a new instance must queue, not fail
RECV_SIZE = 65536
_SIGNALS = {signal.SIGTERM, signal.SIGINT}
# RFC 9110 token characters: what a method or a header name may consist of.
_TCHAR = b"!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_HEX = b"0123456789abcdefABCDEF"
_REASONS = {
    100: "Continue", 101: "Switching Protocols", 102: "Processing", 103: "Early Hints",
    200: "OK", 201: "Created", 202: "Accepted", 203: "Non-Authoritative Information",
    204: "No Content", 205: "Reset Content", 206: "Partial Content", 207: "Multi-Status",
    208: "Already Reported", 226: "IM Used", 300: "Multiple Choices",
    301: "Moved Permanently", 302: "Found", 303: "See Other", 304: "Not Modified",
    305: "Use Proxy", 307: "Temporary Redirect", 308: "Permanent Redirect",
    400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 406: "Not Acceptable",
    407: "Proxy Authentication Required", 408: "Request Timeout", 409: "Conflict",
    410: "Gone", 411: "Length Required", 412: "Precondition Failed",
    413: "Request Entity Too Large", 414: "Request-URI Too Long",
    415: "Unsupported Media Type", 416: "Requested Range Not Satisfiable",
    417: "Expectation Failed", 418: "I'm a Teapot", 421: "Misdirected Request",
    422: "Unprocessable Entity", 423: "Locked", 424: "Failed Dependency", 425: "Too Early",
    426: "Upgrade Required", 428: "Precondition Required", 429: "Too Many Requests",
    431: "Request Header Fields Too Large", 451: "Unavailable For Legal Reasons",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout", 505: "HTTP Version Not Supported",
    506: "Variant Also Negotiates", 507: "Insufficient Storage", 508: "Loop Detected",
    510: "Not Extended", 511: "Network Authentication Required",
}  # fmt: skip


class HandlerLoadError(Exception):
    """Raised before the socket exists so the daemon sees an exit, not a broken instance."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message


class BadRequest(Exception):
    """The request cannot be framed; answered with `status`, then the connection closes."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class _Closed(Exception):
    """The peer closed the connection (or sent a partial request and then closed)."""


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


def _remove(path: str) -> None:
    """Unlinks `path` if it can (contextlib.suppress would cost an import at start)."""
    try:  # noqa: SIM105
        os.unlink(path)
    except OSError:
        pass


def _request_id() -> str:
    """A random (version 4) UUID string, without importing uuid."""
    b = bytearray(os.urandom(16))
    b[6] = (b[6] & 0x0F) | 0x40
    b[8] = (b[8] & 0x3F) | 0x80
    h = b.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def _format_exception(exc: BaseException) -> str:
    import traceback  # only error paths pay for traceback (and its tokenize/linecache)

    return "".join(traceback.format_exception(exc))


class _Reader:
    """Buffered reads from one connection; bytes past the current request stay for the next."""

    __slots__ = ("buf", "sock")

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.buf = bytearray()

    def _fill(self) -> None:
        data = self.sock.recv(RECV_SIZE)
        if not data:
            raise _Closed
        self.buf += data

    def head(self) -> bytes | None:
        """The request line and headers up to the blank line; None on a clean close before it."""
        buf = self.buf
        scanned = 0
        while True:
            # RFC 9112 2.2: empty lines before the request line are ignored.
            while buf[:1] == b"\n" or buf[:2] == b"\r\n":
                del buf[: 1 if buf[0] == 0x0A else 2]
            ends = [buf.find(b"\n\r\n", scanned), buf.find(b"\n\n", scanned)]
            found = [e + (3 if i == 0 else 2) for i, e in enumerate(ends) if e >= 0]
            if found:
                end = min(found)
                if end > MAX_HEAD:
                    break
                head = bytes(buf[:end])
                del buf[:end]
                return head
            if len(buf) > MAX_HEAD:
                break
            scanned = max(0, len(buf) - 2)
            try:
                self._fill()
            except _Closed:
                if buf:
                    raise
                return None
        if buf.find(b"\n", 0, MAX_HEAD) < 0:
            raise BadRequest("request line too long", 414)
        raise BadRequest("request header block too large", 431)

    def line(self, limit: int) -> bytes:
        """One line without its CRLF (or bare LF)."""
        buf = self.buf
        while True:
            nl = buf.find(b"\n", 0, limit)
            if nl >= 0:
                line = bytes(buf[:nl])
                del buf[: nl + 1]
                return line[:-1] if line.endswith(b"\r") else line
            if len(buf) >= limit:
                raise BadRequest("chunk line too long")
            self._fill()

    def exact(self, n: int) -> bytes:
        buf = self.buf
        while len(buf) < n:
            self._fill()
        data = bytes(buf[:n])
        del buf[:n]
        return data


class Request:
    __slots__ = ("close", "headers", "http10", "method", "target", "values")

    def __init__(self, method: str, target: str, http10: bool, headers: events.Headers) -> None:
        self.method = method
        self.target = target
        self.http10 = http10
        self.headers = headers  # as received: order, case and repeats kept
        self.values: dict[str, str] = {}  # lower-cased name -> first value
        for name, value in headers:
            self.values.setdefault(name.lower(), value)
        tokens = {t.strip().lower() for t in self.get("Connection").split(",")}
        # HTTP/1.1 keeps the connection by default; HTTP/1.0 only when asked to.
        self.close = "close" in tokens or (http10 and "keep-alive" not in tokens)

    def get(self, name: str) -> str:
        return self.values.get(name.lower(), "")


def parse_head(head: bytes) -> Request:
    """Parses `METHOD SP target SP HTTP/1.x` and `Name: value` lines (CRLF or bare LF)."""
    lines = head.split(b"\n")
    if any(b"\r" in line[:-1] or b"\0" in line for line in lines):
        raise BadRequest("stray CR or NUL in request head")
    lines = [line[:-1] if line.endswith(b"\r") else line for line in lines]
    parts = lines[0].split(b" ")
    if len(parts) != 3:
        raise BadRequest("malformed request line")
    method, target, version = parts
    if not method or method.translate(None, _TCHAR):
        raise BadRequest("malformed method")
    if not target or any(c <= 0x20 or c == 0x7F for c in target):
        raise BadRequest("malformed request target")
    if not (
        len(version) == 8
        and version.startswith(b"HTTP/")
        and version[5:6].isdigit()
        and version[6:7] == b"."
        and version[7:8].isdigit()
    ):
        raise BadRequest("malformed HTTP version")
    if version[5:6] != b"1":
        raise BadRequest("HTTP version not supported", 400 if version[5] < 0x31 else 505)
    headers: events.Headers = []
    for line in lines[1:]:
        if not line:
            break
        name, colon, value = line.partition(b":")
        if not colon or not name or name.translate(None, _TCHAR):
            # Also rejects obsolete line folding and whitespace before the colon (RFC 9112 5).
            raise BadRequest("malformed header line")
        headers.append((name.decode("ascii"), value.strip(b" \t").decode("latin-1")))
    return Request(
        method.decode("ascii"), target.decode("latin-1"), version == b"HTTP/1.0", headers
    )


def _all_values(request: Request, name: str) -> list[str]:
    return [v for n, v in request.headers if n.lower() == name]


def _body_framing(request: Request) -> int | None:
    """Content-Length, or None for a chunked body."""
    codings = [
        c.strip().lower()
        for v in _all_values(request, "transfer-encoding")
        for c in v.split(",")
        if c.strip()
    ]
    if codings:
        if codings[-1] != "chunked":
            raise BadRequest("Transfer-Encoding must end with chunked")
        return None  # overrides any Content-Length (RFC 9112 6.3)
    lengths = {v.strip() for v in _all_values(request, "content-length")}
    if not lengths:
        return 0
    if len(lengths) != 1:
        raise BadRequest("conflicting Content-Length headers")
    (length,) = lengths
    if not length.isascii() or not length.isdigit():
        raise BadRequest(f"invalid Content-Length {length!r}")
    n = int(length)
    if n > MAX_BODY:
        raise BadRequest("request body too large", 413)
    return n


def _read_chunked(reader: _Reader) -> bytes:
    body = bytearray()
    while True:
        size_field = reader.line(MAX_CHUNK_LINE).split(b";", 1)[0].strip(b" \t")
        if not size_field or size_field.translate(None, _HEX):
            raise BadRequest("malformed chunk size")
        size = int(size_field, 16)
        if size == 0:
            break
        if len(body) + size > MAX_BODY:
            raise BadRequest("request body too large", 413)
        body += reader.exact(size)
        if reader.line(MAX_CHUNK_LINE).strip():
            raise BadRequest("malformed chunk")
    trailers = 0
    while True:  # trailers are discarded
        line = reader.line(MAX_CHUNK_LINE)
        if not line.strip():
            return bytes(body)
        trailers += len(line)
        if trailers > MAX_HEAD:
            raise BadRequest("trailers too large", 431)


def _reason(status: int) -> str:
    return _REASONS.get(status, "")


class Connection:
    """Serves the requests of one accepted connection in order, on its own thread."""

    __slots__ = ("reader", "server", "sock")

    def __init__(self, server: InvokeServer, sock: socket.socket) -> None:
        self.server = server
        self.sock = sock
        self.reader = _Reader(sock)

    def run(self) -> None:
        try:
            while self._one_request():
                pass
        except (OSError, _Closed):
            pass  # the peer went away; nothing to answer
        except Exception as exc:  # a runtime bug: log it, drop the connection, keep serving
            print(f"[ERROR] connection failed\n{_format_exception(exc)}", end="", file=sys.stderr)
        finally:
            self.sock.close()

    def _one_request(self) -> bool:
        """Serves one request; False once the connection must close."""
        try:
            head = self.reader.head()
            if head is None:
                return False
            request = parse_head(head)
            length = _body_framing(request)
            if request.get("Expect").lower() == "100-continue" and not request.http10:
                self.sock.sendall(b"HTTP/1.1 100 Continue\r\n\r\n")
            body = _read_chunked(self.reader) if length is None else self.reader.exact(length)
        except BadRequest as exc:
            # Framing is lost: the stream cannot be reused.
            message = f"{_reason(exc.status)}: {exc}".encode()
            headers = [("Content-Type", "text/plain; charset=utf-8")]
            self._write(exc.status, headers, message, head_only=False, close=True, http10=False)
            return False
        self._dispatch(request, body)
        return not request.close

    def _write(
        self,
        status: int,
        headers: events.Headers,
        body: bytes,
        *,
        head_only: bool,
        close: bool,
        http10: bool,
    ) -> None:
        lines = [f"HTTP/1.1 {status} {_reason(status)}\r\n"]
        lines.extend(f"{name}: {value}\r\n" for name, value in headers)
        if status != 204:
            lines.append(f"Content-Length: {len(body)}\r\n")
        if close:
            lines.append("Connection: close\r\n")
        elif http10:
            lines.append("Connection: keep-alive\r\n")
        lines.append("\r\n")
        head = "".join(lines).encode("latin-1")
        if head_only or status in (204, 304):
            self.sock.sendall(head)
        elif len(body) <= RECV_SIZE:
            self.sock.sendall(head + body)  # one write for the common small response
        else:
            self.sock.sendall(head)
            self.sock.sendall(body)

    def _send(self, request: Request, status: int, headers: events.Headers, body: bytes) -> None:
        try:
            head_only = request.method == "HEAD"
            self._write(
                status,
                headers,
                body,
                head_only=head_only,
                close=request.close,
                http10=request.http10,
            )
        except UnicodeEncodeError as exc:  # a header value outside Latin-1
            fault = events.MarshalError(f"Invalid response header: {exc}")
            self._send_error(request, fault, function_error=True)

    def _send_error(self, request: Request, exc: BaseException, function_error: bool) -> None:
        status = exc.status if isinstance(exc, events.RuntimeFault) else 500
        headers = [("Content-Type", events.JSON_TYPE)]
        if function_error:
            headers.append(("Lambda-Function-Error", "Unhandled"))
        self._send(request, status, headers, events.error_body(exc))

    def _dispatch(self, request: Request, body: bytes) -> None:
        if self.server.handler is None:
            self._specialize(request, body)
            return
        request_id = request.get("Lambda-Request-Id") or _request_id()
        now_ms = int(time.time() * 1000)
        try:
            deadline_ms = int(request.get("Lambda-Deadline-Ms"))
        except ValueError:
            deadline_ms = now_ms + DEFAULT_TIMEOUT_MS
        kind = (request.get("Lambda-Invocation-Type") or "http").strip().lower()
        try:
            if kind == "http":
                event: object = events.http_event(
                    request.method, request.target, request.headers, body, request_id, now_ms
                )
            elif kind in ("direct", "event"):
                event = events.direct_event(body)
            else:
                raise events.InvalidPayload(f"unknown Lambda-Invocation-Type {kind!r}")
        except events.RuntimeFault as exc:
            self._send_error(request, exc, function_error=False)
            return
        self._invoke(request, kind, event, request_id, deadline_ms)

    def _specialize(self, request: Request, body: bytes) -> None:
        """A stem cell's one control request: become this function, or report why not."""
        headers = [("Content-Type", events.JSON_TYPE)]
        if request.method != "POST" or request.target != INIT_PATH:
            fault = events.NotInitialized("this stem cell is not specialized yet")
            self._send(request, fault.status, headers, events.error_body(fault))
            return
        try:
            init = events.json.loads(body)
            handler, task_root, env = init["handler"], init["task_root"], init["env"]
            if not (isinstance(handler, str) and isinstance(task_root, str)
                    and isinstance(env, dict)):
                raise TypeError("handler, task_root and env have the wrong types")
        except Exception as exc:  # the daemon's bug, not the function's: refuse, stay generic
            fault = events.InvalidPayload(f"bad init request: {exc}")
            self._send(request, 400, headers, events.error_body(fault))
            return
        try:
            self.server.specialize(handler, task_root, {str(k): str(v) for k, v in env.items()})
        except HandlerLoadError as exc:
            init_ms = (time.monotonic() - self.server.init_started) * 1000
            report_init_error(exc, init_ms)
            payload = {"errorType": exc.error_type, "errorMessage": exc.message,
                       "initDurationMs": round(init_ms, 2)}
            self._write(502, headers, events.json.dumps(payload).encode(), head_only=False,
                        close=True, http10=False)
            # A failed cell is never reused: exit so the daemon sees it go.
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(1)
        init_ms = self.server.framer.init_ms[-1] if self.server.framer.init_ms else 0.0
        self._send(request, 200, headers,
                   events.json.dumps({"initDurationMs": round(init_ms, 2)}).encode())

    def _invoke(
        self, request: Request, kind: str, event: object, request_id: str, deadline_ms: int
    ) -> None:
        server = self.server
        context = server.contexts.make(request_id, deadline_ms)
        invocation = server.framer.start(request_id, request.get("Lambda-Start"))
        try:
            result = server.handler(event, context)
            status, headers, data = (
                events.http_response(result) if kind == "http" else events.direct_response(result)
            )
        except SystemExit as exc:
            # A handler that exits is a crash the daemon must see, not a 500 to paper over.
            code = _exit_code(exc)
            print(f"[ERROR] handler exited with code {code}", file=sys.stderr)
            invocation.end()
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        except BaseException as exc:
            # Printed inside the invocation, so every line carries the request id.
            print(
                f"[ERROR] {events.error_type(exc)}: {exc}\n" + _format_exception(exc),
                end="",
                file=sys.stderr,
                flush=True,
            )
            invocation.end()
            self._send_error(request, exc, function_error=True)
            return
        invocation.end()  # END/REPORT are out before the caller sees the response
        self._send(request, status, headers, data)


class InvokeServer:
    """Accepts on a Unix socket; one daemon thread per connection (the daemon opens one
    connection per concurrent request and keeps it alive).

    Started without a handler it is a stem cell: the socket is up and the interpreter
    warm, and the first request (POST /init from the daemon) loads a function's code.
    """

    def __init__(self, path: str, handler: Handler | None, contexts: ContextFactory) -> None:
        self.path = path
        self.handler = handler
        self.contexts = contexts
        self.framer = logs.Framer(contexts.function_version, contexts.memory_limit_in_mb)
        self.init_started = time.monotonic()
        try:  # noqa: SIM105 (contextlib is not worth its import time here)
            os.unlink(path)  # a stale socket from a previous run would make bind fail
        except FileNotFoundError:
            pass
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._bind_and_listen(path)
        except BaseException:
            self.socket.close()
            raise

    def _bind_and_listen(self, path: str) -> None:
        """Makes `path` appear only once it accepts connections and the daemon may use it.

        The daemon connects as soon as the path exists; bound under a temporary name,
        made 0666, listening, and then renamed, the socket is never seen half ready.
        """
        temp = os.path.join(os.path.dirname(path), f".{os.getpid()}.sock")
        _remove(temp)
        try:
            self.socket.bind(temp)
        except OSError:  # e.g. a path too long for AF_UNIX: bind in place instead
            temp = path
            self.socket.bind(path)
        try:
            os.chmod(temp, 0o666)  # the daemon's user differs from the container's 10001
            # A Unix-socket connect to a full backlog fails instead of waiting.
            self.socket.listen(LISTEN_BACKLOG)
            if temp != path:
                os.rename(temp, path)
        except BaseException:
            _remove(temp)
            raise

    def specialize(self, spec: str, task_root: str, env: dict[str, str]) -> None:
        """Sets the function's environment before its import, then loads its handler."""
        self.init_started = time.monotonic()
        os.environ.update(env)
        importlib.invalidate_caches()  # the code arrived in folders already on sys.path
        try:  # noqa: SIM105 (no contextlib import in the runtime)
            os.chdir(task_root)
        except OSError:
            pass
        handler = load_handler(spec, task_root)
        self.contexts = ContextFactory(dict(os.environ))
        self.framer = logs.Framer(self.contexts.function_version,
                                  self.contexts.memory_limit_in_mb)
        self.framer.init_ms.append((time.monotonic() - self.init_started) * 1000)
        self.handler = handler

    def serve_forever(self) -> None:
        """Runs until a signal handler raises; accept() is where the main thread waits."""
        while True:
            try:
                sock, _ = self.socket.accept()
            except OSError:  # e.g. EMFILE: back off instead of spinning
                time.sleep(0.01)
                continue
            thread = threading.Thread(target=Connection(self, sock).run, daemon=True)
            # Workers inherit a mask that blocks SIGTERM/SIGINT, so the kernel delivers them to
            # the main thread, whose accept() they interrupt at once. Blocking around start()
            # leaves no window in which the new thread could take a signal.
            signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
            try:
                thread.start()
            except RuntimeError:  # cannot start a thread: refuse this connection
                sock.close()
            finally:
                signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)

    def server_close(self) -> None:
        self.socket.close()


def report_init_error(exc: HandlerLoadError, init_ms: float) -> None:
    """The error, its traceback and AWS's INIT_REPORT line, for the function's logs."""
    print(exc, file=sys.stderr)
    if exc.__cause__ is not None:
        print(_format_exception(exc.__cause__), end="", file=sys.stderr)
    print(f"INIT_REPORT Init Duration: {init_ms:.2f} ms\tPhase: init\tStatus: error"
          f"\tError Type: {exc.error_type}", file=sys.stderr)


class _Terminate(Exception):
    pass


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise _Terminate  # unwinds serve_forever in the main thread


def main(env: dict[str, str] | None = None) -> int:
    started = time.monotonic()
    env = dict(os.environ) if env is None else env
    for stream in (sys.stdout, sys.stderr):  # prints reach `docker logs` even without -u
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(line_buffering=True, write_through=True)
    logs.install()  # before the handler's import, so modules that keep sys.stdout get ours
    task_root = env.get("LAMBDA_TASK_ROOT", DEFAULT_TASK_ROOT)
    socket_path = env.get("LAMBDA_SOCKET", DEFAULT_SOCKET)
    stem_cell = env.get("LAMBDA_STEM_CELL") == "1"
    handler: Handler | None = None
    if not stem_cell:
        try:
            spec = env.get("_HANDLER", "")
            if not spec:
                raise HandlerLoadError("Runtime.MalformedHandlerName", "_HANDLER is not set")
            handler = load_handler(spec, task_root)
        except HandlerLoadError as exc:
            report_init_error(exc, (time.monotonic() - started) * 1000)
            return 1

    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    server: InvokeServer | None = None
    try:
        server = InvokeServer(socket_path, handler, ContextFactory(env))
        if handler is not None:
            server.framer.init_ms.append((time.monotonic() - started) * 1000)
        server.serve_forever()
    except _Terminate:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second signal must not abort cleanup
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if server is not None:
            server.server_close()
        _remove(socket_path)
    return 0

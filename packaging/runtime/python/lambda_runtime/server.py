"""The supervisor's socket side: HTTP/1.1 with lambdad on a Unix socket, requests to workers.

The HTTP server is written on `socket` and `threading` rather than http.server/socketserver:
those pull in http.client, email.* and ssl, which cost every cold start tens of milliseconds
before the socket opens. Only what the error paths need (traceback) is imported lazily.

This process is the supervisor (supervisor.py): it never imports the function's code. Each
request goes to a worker process and its reply comes back here to be written as HTTP.
"""

from __future__ import annotations

import os
import signal
import socket
import struct
import sys
import time

from . import events, logs
from .supervisor import NoWorker, Supervisor, start_thread

TYPE_CHECKING = False  # typing is not imported at run time (see events.py)
if TYPE_CHECKING:
    from types import FrameType

DEFAULT_SOCKET = "/run/lambda/invoke.sock"
DEFAULT_TASK_ROOT = "/var/task"
DEFAULT_TIMEOUT_MS = 900_000  # AWS's maximum, used only when the daemon sent no deadline
MAX_HEAD = 64 * 1024  # request line + headers
MAX_BODY = 16 * 1024 * 1024
MAX_CHUNK_LINE = 4096
INIT_PATH = "/init"  # a stem cell's specialization request
LISTEN_BACKLOG = 1024  # a burst of connects to a new instance must queue, not fail
RECV_SIZE = 65536
KINDS = ("http", "direct", "event")
_PEERCRED = struct.Struct("3i")
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


class BadRequest(Exception):
    """The request cannot be framed; answered with `status`, then the connection closes."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class _Closed(Exception):
    """The peer closed the connection (or sent a partial request and then closed)."""


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


def _header_lines(headers: events.Headers) -> bytes:
    return "".join(f"{name}: {value}\r\n" for name, value in headers).encode("latin-1")


def from_outside(sock: socket.socket) -> bool:
    """Whether the peer is outside this PID namespace (lambdad): the kernel reports pid 0
    for a process it cannot name here, and every process of the container has a pid."""
    pid, _, _ = _PEERCRED.unpack(
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _PEERCRED.size))
    return pid == 0


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
            headers = b"Content-Type: text/plain; charset=utf-8\r\n"
            self._write(exc.status, headers, message, head_only=False, close=True, http10=False)
            return False
        self._dispatch(request, body)
        return not request.close

    def _write(
        self,
        status: int,
        headers: bytes,
        body: bytes,
        *,
        head_only: bool,
        close: bool,
        http10: bool,
    ) -> None:
        """`headers`: validated `Name: value\\r\\n` lines, without framing headers."""
        lines = [f"HTTP/1.1 {status} {_reason(status)}\r\n".encode(), headers]
        if status != 204:
            lines.append(b"Content-Length: %d\r\n" % len(body))
        if close:
            lines.append(b"Connection: close\r\n")
        elif http10:
            lines.append(b"Connection: keep-alive\r\n")
        lines.append(b"\r\n")
        head = b"".join(lines)
        if head_only or status in (204, 304):
            self.sock.sendall(head)
        elif len(body) <= RECV_SIZE:
            self.sock.sendall(head + body)  # one write for the common small response
        else:
            self.sock.sendall(head)
            self.sock.sendall(body)

    def _send(self, request: Request, status: int, headers: bytes, body: bytes) -> None:
        self._write(status, headers, body, head_only=request.method == "HEAD",
                    close=request.close, http10=request.http10)

    def _send_fault(self, request: Request, fault: events.RuntimeFault) -> None:
        """A runtime error of the request itself, before any function code ran."""
        headers = _header_lines([("Content-Type", events.JSON_TYPE)])
        self._send(request, fault.status, headers, events.error_body(fault))

    def _dispatch(self, request: Request, body: bytes) -> None:
        server = self.server
        if not server.supervisor.ready:
            self._specialize(request, body)
            return
        request_id = request.get("Lambda-Request-Id")
        if not logs.valid_request_id(request_id):
            request_id = _request_id()
        now_ms = int(time.time() * 1000)
        try:
            deadline_ms = int(request.get("Lambda-Deadline-Ms"))
        except ValueError:
            deadline_ms = now_ms + DEFAULT_TIMEOUT_MS
        kind = (request.get("Lambda-Invocation-Type") or "http").strip().lower()
        if kind not in KINDS:
            self._send_fault(request, events.InvalidPayload(
                f"unknown Lambda-Invocation-Type {kind!r}"))
            return
        start = request.get("Lambda-Start").strip().lower()
        if not start.isalpha() or len(start) > 16:
            start = ""
        try:
            status, headers, data = server.supervisor.invoke(
                (kind, request.method, request.target, request.headers, body, request_id,
                 deadline_ms, now_ms), start)
        except NoWorker as exc:
            self._send_fault(request, events.RuntimeFault(str(exc)))
            return
        self._send(request, status, headers, data)

    def _specialize(self, request: Request, body: bytes) -> None:
        """A stem cell's one control request: become this function, or report why not."""
        headers = _header_lines([("Content-Type", events.JSON_TYPE)])
        if request.method != "POST" or request.target != INIT_PATH:
            self._send_fault(request,
                             events.NotInitialized("this stem cell is not specialized yet"))
            return
        started = time.monotonic()
        try:
            init = events.json.loads(body)
            handler, task_root, env = init["handler"], init["task_root"], init["env"]
            if not (isinstance(handler, str) and isinstance(task_root, str)
                    and isinstance(env, dict)):
                raise TypeError("handler, task_root and env have the wrong types")
        except Exception as exc:  # the daemon's bug, not the function's: refuse, stay generic
            self._send_fault(request, events.InvalidPayload(f"bad init request: {exc}"))
            return
        result = self.server.supervisor.initialize(
            handler, task_root, {str(k): str(v) for k, v in env.items()}, chdir=True,
            started=started)
        if not result["ok"]:
            payload = {"errorType": result["type"], "errorMessage": result["message"],
                       "initDurationMs": round(result["ms"], 2)}
            self._write(502, headers, events.json.dumps(payload).encode(), head_only=False,
                        close=True, http10=False)
            # A failed cell is never reused: exit so the daemon sees it go.
            self.server.fatal(1)
        self._send(request, 200, headers,
                   events.json.dumps({"initDurationMs": round(result["ms"], 2)}).encode())


class InvokeServer:
    """Accepts on a Unix socket; one daemon thread per connection (the daemon opens one
    connection per concurrent request and keeps it alive).

    Until the supervisor has loaded a function it is a stem cell: the socket is up and the
    interpreter warm, and the first request (POST /init from the daemon) loads a function.
    As a container's first process it serves only peers outside the container (lambdad):
    a function's process that dials the socket is refused, so it cannot have requests, and
    their frames, made up under request ids of its choosing.
    """

    def __init__(self, path: str, supervisor: Supervisor) -> None:
        self.path = path
        self.supervisor = supervisor
        self.outside_only = os.getpid() == 1
        self.socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._bind_and_listen(path)
        except BaseException:
            self.socket.close()
            raise

    def _bind_and_listen(self, path: str) -> None:
        """Makes `path` appear only once it accepts connections and the daemon may use it.

        The daemon connects as soon as the path exists; bound under a temporary name,
        made 0666, listening, and then renamed (over a stale socket of a previous run, if
        any), the socket is never seen half ready.
        """
        temp = os.path.join(os.path.dirname(path), f".{os.getpid()}.sock")
        _remove(temp)
        try:
            self.socket.bind(temp)
        except OSError:  # e.g. a path too long for AF_UNIX: bind in place instead
            temp = path
            _remove(path)
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

    def serve_forever(self) -> None:
        """Runs until a signal handler raises; accept() is where the main thread waits."""
        while True:
            try:
                sock, _ = self.socket.accept()
            except OSError:  # e.g. EMFILE: back off instead of spinning
                time.sleep(0.01)
                continue
            try:
                allowed = not self.outside_only or from_outside(sock)
            except OSError:
                allowed = False
            if not allowed:
                sock.close()
                continue
            try:
                start_thread(Connection(self, sock).run, "connection")
            except RuntimeError:  # cannot start a thread: refuse this connection
                sock.close()

    def fatal(self, code: int) -> None:
        """Ends the instance at once (a failed init, or the zygote died)."""
        self.supervisor.stop()
        _remove(self.path)
        self.supervisor.output.write(0, b"")
        os._exit(code)

    def server_close(self) -> None:
        self.socket.close()


class _Terminate(Exception):
    pass


def _on_signal(signum: int, frame: FrameType | None) -> None:
    raise _Terminate  # unwinds serve_forever in the main thread


def main(env: dict[str, str] | None = None) -> int:
    started = time.monotonic()
    env = dict(os.environ) if env is None else env
    task_root = env.get("LAMBDA_TASK_ROOT", DEFAULT_TASK_ROOT)
    socket_path = env.get("LAMBDA_SOCKET", DEFAULT_SOCKET)
    stem_cell = env.get("LAMBDA_STEM_CELL") == "1"
    server: InvokeServer | None = None

    def fatal(code: int) -> None:
        if server is not None:
            server.fatal(code)
        supervisor.stop()
        os._exit(code)

    supervisor = Supervisor(env, fatal)  # forks the zygote first of all
    signal.signal(signal.SIGTERM, _on_signal)
    signal.signal(signal.SIGINT, _on_signal)
    try:
        if not stem_cell:
            result = supervisor.initialize(env.get("_HANDLER", ""), task_root, {},
                                           chdir=False, started=started)
            if not result["ok"]:
                supervisor.stop()
                return 1
        server = InvokeServer(socket_path, supervisor)
        server.serve_forever()
    except _Terminate:
        pass
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second signal must not abort cleanup
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        supervisor.stop()
        if server is not None:
            server.server_close()
            _remove(socket_path)
    return 0

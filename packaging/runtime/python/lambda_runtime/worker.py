"""The processes that run the function's code: the zygote and its workers.

The zygote imports the handler once (on its main thread, so `signal.signal` and
`asyncio.get_event_loop()` at import work), then only forks workers when the supervisor
asks; it never serves a request. A worker is a fork of the zygote that serves one request
at a time on its main thread, over a private socket pair with the supervisor. Its stdin is
/dev/null and its stdout and stderr are pipes the supervisor reads and tags: whatever writes
to them (print, os.write, a C extension, a child process, a crash's traceback) is captured.

Everything here runs where the function's code runs: the supervisor trusts none of it.

Fork rules (docs/architecture.md says the same to function authors):
- threads started at import keep running in the zygote only; a worker starts with just
  its main thread, and locks such a thread held at the fork stay held in the worker;
- what the import opened (files, sockets, database connections) is shared by every
  worker: open such things lazily in each process (keyed by os.getpid()), not at import;
- the main thread's asyncio event loop gets a fresh selector, self-pipe and default
  executor in each worker, so forks never share an epoll or steal each other's wake-ups; any
  other selector or loop made at import is shared;
- `random` reseeds in each fork (Python does so); other generators seeded at import repeat;
- memory is copy-on-write: REPORT's Max Memory Used is the worker's own peak, shared
  pages included.

Runtime hooks (snapshot_restore_py, Lambda SnapStart's API; the module is in the runtime
image): the zygote is the "snapshot". Before-snapshot hooks run once per instance in the
zygote, after the import and before the first fork (reverse order of registration), so what
they compute or warm (lazy imports, routes, caches, compiled validators) is inherited by every
worker copy-on-write instead of being paid on each worker's first request; their time is part
of the init (REPORT's Init Duration, Server-Timing `init`) and shown apart as `hooks`. They
follow the fork rules above: no threads, sockets, connections or event loops left open for the
workers (close what a warm-up opened), and no side effects outside the process (a warm-up
request must not write anything), since the same hooks run again in every new instance.
After-restore hooks run in each worker right after its fork, before its first request
(registration order): the place to reopen connections, reseed generators, start threads.
A before-snapshot hook that raises fails the init (Runtime.BeforeSnapshotError); an
after-restore hook that raises fails that worker's first request (Runtime.AfterRestoreError)
and the worker exits (the next request gets a new worker, which runs the hooks again). A
worker that ends before its hello (a hook that exits) fails the requests waiting for it
(Runtime.ExitError, supervisor.py); it is not replaced in a loop.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import signal
import socket
import sys
import time

from . import channel, events
from .context import ContextFactory

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, NoReturn

    Handler = Callable[[Any, Any], Any]

# The init errors the supervisor reports; anything else a broken zygote claims is unknown.
LOAD_ERRORS = frozenset({
    "Runtime.MalformedHandlerName", "Runtime.UserCodeSyntaxError",
    "Runtime.ImportModuleError", "Runtime.HandlerNotFound", "Runtime.BeforeSnapshotError",
})
# The runtime hooks' registry (Lambda SnapStart's module name): the runtime image's copy, or
# the PyPI package if the function vendors it; only read if the function's code imported it.
HOOKS_MODULE = "snapshot_restore_py"
# The kernel's OOM killer should pick a worker before the zygote, and either before the
# supervisor (an unprivileged process can raise its score, not lower it below 0).
ZYGOTE_OOM_SCORE = 200
WORKER_OOM_SCORE = 600
RECV_SIZE = 65536
DEFAULT_DEPS_ROOT = "/opt/lambda/deps"
# What the interpreter or libc read only when a process starts (lambdad's cells.py has the
# same list): a function that sets one to a new value gets a zygote exec'd with it.
STARTUP_ONLY_PREFIXES = ("LD_", "PYTHON", "MALLOC_", "LC_")
STARTUP_ONLY_NAMES = frozenset({"LANG", "LANGUAGE", "TZ", "GLIBC_TUNABLES"})
_REEXEC = ("import sys; sys.path.insert(0, {root!r}); "
           "from lambda_runtime.worker import reexec_main; reexec_main()")


class HandlerLoadError(Exception):
    """The handler cannot be loaded: reported as the INIT_REPORT's error type."""

    def __init__(self, error_type: str, message: str) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message


def load_handler(spec: str, task_root: str, deps_root: str = "") -> Handler:
    """Imports `module.function` (module may be dotted, or a path like `src/app`) once.

    The task root comes first on sys.path, then the deps, both before the standard
    library (as PYTHONPATH would put them): the supervisor, started isolated, has neither.
    """
    for folder in (deps_root, task_root):
        if not folder:
            continue
        if folder in sys.path:
            sys.path.remove(folder)
        sys.path.insert(0, folder)
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
    except BaseException as exc:  # SystemExit at import too: the import did not finish
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


def format_exception(exc: BaseException) -> str:
    import traceback  # only error paths pay for traceback (and its tokenize/linecache)

    return "".join(traceback.format_exception(exc))


def _exit_code(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code
    print(exc.code, file=sys.stderr)
    return 1


def _set_oom_score(score: int) -> None:
    try:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(score))
    except OSError:
        pass


class _CStdio:
    """C's stdout for extensions that printf: line-buffered, and flushed before each reply so
    a partial line lands in its own request."""

    def __init__(self) -> None:
        self._fflush: Any = None
        try:
            import ctypes

            libc = ctypes.CDLL(None)
            stdout = ctypes.c_void_p.in_dll(libc, "stdout")
            libc.setvbuf.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int,
                                     ctypes.c_size_t]
            libc.setvbuf(stdout, None, 1, 0)  # _IOLBF
            libc.fflush.argtypes = [ctypes.c_void_p]
            self._fflush = libc.fflush
        except Exception:  # no libc symbols (not glibc): Python's own streams still flush
            pass

    def flush(self) -> None:
        for stream in (sys.stdout, sys.stderr, sys.__stdout__, sys.__stderr__):
            try:  # noqa: SIM105
                stream.flush()  # type: ignore[union-attr]
            except Exception:  # a handler may have closed or replaced them
                pass
        if self._fflush is not None:
            self._fflush(None)


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    """Exactly n bytes, or None when the peer closed first."""
    data = bytearray()
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return None
        data += chunk
    return bytes(data)


# --- the zygote -------------------------------------------------------------------------------


def start_changes(env: dict[str, str], current: dict[str, str]) -> list[str]:
    """The start-only variables `env` sets to something other than the `current` value:
    the zygote must be a process started with them (pure)."""
    return sorted(name for name, value in env.items()
                  if (name.startswith(STARTUP_ONLY_PREFIXES) or name in STARTUP_ONLY_NAMES)
                  and current.get(name) != value)


def _reexec(init: dict[str, Any]) -> NoReturn:
    """Becomes a fresh interpreter with the function's environment at its start (same pid,
    same fds 0-3: the supervisor sees the same zygote). Only here, never in the supervisor,
    do LD_PRELOAD, PYTHONPATH, PYTHONWARNINGS and the like take effect."""
    env = {**_without_runtime_flags(os.environ), **init["env"]}
    rest = {key: value for key, value in init.items() if key != "env"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.stdout.flush()
    sys.stderr.flush()
    # -P: the working folder (the task root) is not put first, as in a forked zygote.
    os.execve(sys.executable, [sys.executable, "-P", "-c", _REEXEC.format(root=root),
                               events.json.dumps(rest)], env)


def reexec_main() -> NoReturn:
    """The exec'd zygote's entry: its environment is the function's already."""
    init: dict[str, Any] = events.json.loads(sys.argv[1])
    init["env"] = {}
    zygote_main(3, init)


def zygote_main(ctl_fd: int, init: dict[str, Any] | None = None) -> NoReturn:
    """Runs in the zygote, forked from the supervisor before any of its threads: waits for
    the handler to load, loads it, then forks a worker for each request to spawn one."""
    ctl = socket.socket(fileno=ctl_fd)
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None:
            reconfigure(line_buffering=True, write_through=True)
    import faulthandler

    faulthandler.enable(all_threads=True)  # a crash's traceback goes to the (captured) fd 2
    _set_oom_score(ZYGOTE_OOM_SCORE)
    cstdio = _CStdio()
    if init is None:
        init = _read_init(ctl)
    if init is None:
        os._exit(0)
    if start_changes(init["env"], dict(os.environ)):
        try:
            _reexec(init)
        except OSError as exc:  # no interpreter to exec: load here, as before
            print(f"[WARNING] cannot restart the zygote with its environment: {exc}",
                  file=sys.stderr)
    started = time.monotonic()
    hooks_ms = 0.0
    try:
        handler, contexts = _initialize(init)
        imported = time.monotonic()
        if run_before_snapshot():  # none registered: no hooks to show in REPORT
            hooks_ms = (time.monotonic() - imported) * 1000
    except HandlerLoadError as exc:
        print(exc, file=sys.stderr)
        if exc.__cause__ is not None:
            print(format_exception(exc.__cause__), end="", file=sys.stderr)
        cstdio.flush()
        _reply(ctl, {"ok": False, "type": exc.error_type, "message": exc.message})
        os._exit(1)
    cstdio.flush()
    _reply(ctl, {"ok": True, "ms": (time.monotonic() - started) * 1000, "hooksMs": hooks_ms})
    import gc

    while True:
        try:
            msg, fds, _, _ = socket.recv_fds(ctl, 1, 3)
        except OSError:
            os._exit(0)
        if not msg:  # the supervisor is gone
            os._exit(0)
        if len(fds) != 3:
            for fd in fds:
                os.close(fd)
            continue
        cstdio.flush()  # nothing buffered may be copied into the fork
        gc.freeze()  # objects from the import stay out of the collector: fewer pages copied
        _spawn(ctl, fds, handler, contexts, cstdio)


def _read_init(ctl: socket.socket) -> dict[str, Any] | None:
    head = _recv_exact(ctl, 5)
    if head is None or head[:1] != b"I":
        return None
    body = _recv_exact(ctl, channel.LENGTH.unpack(head[1:])[0])
    if body is None:
        return None
    init: dict[str, Any] = events.json.loads(body)
    return init


def _reply(ctl: socket.socket, value: dict[str, Any]) -> None:
    data = events.json.dumps(value).encode()
    ctl.sendall(channel.LENGTH.pack(len(data)) + data)


# How lambdad started the runtime (a cell, or a container started like one): the
# supervisor's business, not the function's, so both cold paths show the same environment.
RUNTIME_FLAGS = ("LAMBDA_STEM_CELL", "LAMBDA_LOG_CHANNEL")


def _without_runtime_flags(env: Any) -> dict[str, str]:
    return {key: value for key, value in env.items() if key not in RUNTIME_FLAGS}


def _initialize(init: dict[str, Any]) -> tuple[Handler, ContextFactory]:
    """Sets the function's environment before its import, then loads its handler."""
    for flag in RUNTIME_FLAGS:
        os.environ.pop(flag, None)
    os.environ.update(init["env"])
    task_root = init["task_root"]
    if init.get("chdir"):
        importlib.invalidate_caches()  # the code arrived in folders already on sys.path
        try:  # noqa: SIM105 (no contextlib import in the runtime)
            os.chdir(task_root)
        except OSError:
            pass
    spec = init["handler"]
    if not spec:
        raise HandlerLoadError("Runtime.MalformedHandlerName", "_HANDLER is not set")
    handler = load_handler(spec, task_root, os.environ.get("LAMBDA_DEPS_ROOT", DEFAULT_DEPS_ROOT))
    return handler, ContextFactory(dict(os.environ))


def registered_hooks(getter: str) -> list[tuple[Callable[..., Any], tuple[Any, ...],
                                                 dict[str, Any]]]:
    """The hooks the function registered through snapshot_restore_py's `getter` (none if
    its code never imported the module); malformed entries are the function's error."""
    module = sys.modules.get(HOOKS_MODULE)
    get = getattr(module, getter, None) if module is not None else None
    if get is None:
        return []
    return [(func, tuple(args), dict(kwargs)) for func, args, kwargs in get()]


def _hook_name(func: object) -> str:
    return str(getattr(func, "__qualname__", None) or getattr(func, "__name__", None)
               or repr(func))


def _run_hooks(getter: str, error_type: str, what: str, reverse: bool) -> int:
    try:
        hooks = registered_hooks(getter)
    except Exception as exc:
        raise HandlerLoadError(error_type, f"cannot read the {what} hooks: {exc}") from exc
    for func, args, kwargs in reversed(hooks) if reverse else hooks:
        try:
            func(*args, **kwargs)
        except BaseException as exc:  # SystemExit too: the hooks did not finish
            raise HandlerLoadError(
                error_type, f"{what} hook '{_hook_name(func)}' failed: "
                f"{type(exc).__name__}: {exc}") from exc
    return len(hooks)


def run_before_snapshot() -> int:
    """The zygote's before-snapshot hooks, in the reverse order of registration (Lambda's);
    how many ran."""
    return _run_hooks("get_before_snapshot", "Runtime.BeforeSnapshotError", "before-snapshot",
                      True)


def run_after_restore() -> int:
    """A new worker's after-restore hooks, in the order of registration (Lambda's); how
    many ran."""
    return _run_hooks("get_after_restore", "Runtime.AfterRestoreError", "after-restore", False)


def _spawn(ctl: socket.socket, fds: list[int], handler: Handler, contexts: ContextFactory,
           cstdio: _CStdio) -> None:
    """Forks twice, so the worker's parent becomes the supervisor (a subreaper, or PID 1)
    once the middle process exits, and only the supervisor learns how it ended."""
    try:
        middle = os.fork()
    except OSError:  # e.g. the pids limit: the supervisor sees the channel close
        middle = -1
    if middle == 0:
        try:
            if os.fork() == 0:
                _worker(ctl, fds, handler, contexts, cstdio)
        finally:
            os._exit(0)
    for fd in fds:
        os.close(fd)
    if middle > 0:
        os.waitpid(middle, 0)


# --- a worker ---------------------------------------------------------------------------------


def _worker(ctl: socket.socket, fds: list[int], handler: Handler, contexts: ContextFactory,
            cstdio: _CStdio) -> NoReturn:
    try:
        # Its own process group: a worker stopped at its timeout takes the processes it
        # started (a subprocess, a pool) with it (Worker.kill(group=True)).
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)
        out_w, err_w, chan_fd = fds
        os.dup2(out_w, 1)  # (fd 0 is the zygote's, /dev/null)
        os.dup2(err_w, 2)
        os.close(out_w)
        os.close(err_w)
        ctl.close()  # the zygote's channel is not a worker's business
        _set_oom_score(WORKER_OOM_SCORE)
        _fresh_event_loop()
        restore_error: HandlerLoadError | None = None
        try:
            run_after_restore()
        except HandlerLoadError as exc:
            restore_error = exc
        chan = socket.socket(fileno=chan_fd)
        chan.sendall(channel.HELLO.pack(os.getpid()))
        if restore_error is not None:
            _fail_restore(chan, restore_error, cstdio)
        _serve(chan, handler, contexts, cstdio)
    except BaseException:
        pass
    os._exit(0)


def _fail_restore(chan: socket.socket, exc: HandlerLoadError, cstdio: _CStdio) -> NoReturn:
    """Fails the worker's first request with the after-restore hook's error (as Lambda fails
    the invocation whose restore failed), its traceback in that request's logs; then exits."""
    if _read_request(chan) is not None:
        print(f"[ERROR] {exc}", file=sys.stderr)
        if exc.__cause__ is not None:
            print(format_exception(exc.__cause__), end="", file=sys.stderr)
        cstdio.flush()
        chan.sendall(_error_reply(events.AfterRestoreError(exc.message), function_error=True))
    os._exit(1)


def _fresh_event_loop() -> None:
    """Gives the main thread's asyncio loop, if the import made one, a selector, self-pipe
    and executor of this process's own: an epoll and a socket pair inherited through fork
    are shared with the zygote and the other workers."""
    asyncio = sys.modules.get("asyncio")
    if asyncio is None:
        return
    try:
        loop = asyncio.get_event_loop_policy()._local._loop
        if loop is None or loop.is_closed() or loop.is_running():
            return
        old = loop._selector
        ssock, csock = loop._ssock, loop._csock
    except AttributeError:  # not a selector loop of this Python's shape
        return
    fresh = type(old)()
    for key in list(old.get_map().values()):
        if key.fd != ssock.fileno():
            fresh.register(key.fileobj, key.events, key.data)
    loop._selector = fresh
    old.close()  # this process's epoll descriptor only; no epoll_ctl on the shared instance
    ssock.close()
    csock.close()
    loop._internal_fds -= 1
    loop._make_self_pipe()
    if getattr(loop, "_signal_handlers", None):
        signal.set_wakeup_fd(loop._csock.fileno())
    loop._default_executor = None  # its threads were not forked


def _read_request(chan: socket.socket) -> bytes | None:
    """The next request's payload; None once the supervisor closed the channel."""
    data = chan.recv(RECV_SIZE)  # usually the whole request
    if len(data) < channel.LENGTH.size:
        rest = _recv_exact(chan, channel.LENGTH.size - len(data)) if data else None
        if rest is None:
            return None  # the supervisor closed the channel: this worker is done
        data += rest
    size = channel.LENGTH.unpack(data[:channel.LENGTH.size])[0]
    payload = data[channel.LENGTH.size:]
    if len(payload) < size:
        rest = _recv_exact(chan, size - len(payload))
        if rest is None:
            return None
        payload += rest
    return payload


def _serve(chan: socket.socket, handler: Handler, contexts: ContextFactory,
           cstdio: _CStdio) -> None:
    while True:
        payload = _read_request(chan)
        if payload is None:
            return
        reply = _invoke(handler, contexts, cstdio, channel.decode_request(payload))
        cstdio.flush()  # the request's output is in the pipes before its reply
        chan.sendall(reply)


def _error_reply(exc: BaseException, function_error: bool) -> bytes:
    status = exc.status if isinstance(exc, events.RuntimeFault) else 500
    headers = [("Content-Type", events.JSON_TYPE)]
    if function_error:
        headers.append(("Lambda-Function-Error", "Unhandled"))
    return channel.encode_reply(status, headers, events.error_body(exc))


def _invoke(handler: Handler, contexts: ContextFactory, cstdio: _CStdio,
            request: channel.Request) -> bytes:
    kind, method, target, headers, body, request_id, deadline_ms, now_ms = request
    try:
        if kind == "http":
            event: object = events.http_event(method, target, headers, body, request_id, now_ms)
        else:
            event = events.direct_event(body)
    except events.RuntimeFault as exc:
        return _error_reply(exc, function_error=False)
    context = contexts.make(request_id, deadline_ms)
    try:
        result = handler(event, context)
        status, out_headers, data = (
            events.http_response(result) if kind == "http" else events.direct_response(result)
        )
    except SystemExit as exc:
        # A handler that exits ends its process: the supervisor reports the exit.
        code = _exit_code(exc)
        print(f"[ERROR] handler exited with code {code}", file=sys.stderr)
        cstdio.flush()
        os._exit(code)
    except BaseException as exc:
        print(f"[ERROR] {events.error_type(exc)}: {exc}\n" + format_exception(exc),
              end="", file=sys.stderr, flush=True)
        return _error_reply(exc, function_error=True)
    try:
        return channel.encode_reply(status, out_headers, data)
    except UnicodeEncodeError as exc:  # a header value outside Latin-1
        return _error_reply(events.MarshalError(f"Invalid response header: {exc}"), True)

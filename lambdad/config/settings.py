"""The settings table: every daemon setting, its group, parser, default and help, once.

The flags, the environment variables, the keys of lambdad.toml, the man page and
packaging/lambdad.toml are all made from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from lambdad import dburl
from lambdad.config import Listen, Raw
from lambdad.config.values import (
    choice,
    count,
    domain,
    host_port,
    image_name,
    mib,
    mib_or_zero,
    node_name,
    optional_listen,
    path,
    path_or_none,
    port,
    positive_seconds,
    seconds,
)

ENV_PREFIX = "LAMBDAD_"


@dataclass(frozen=True)
class Setting:
    key: str
    group: str
    parse: Callable[[str], Any]
    default: Raw | None  # as written in lambdad.toml; None: unset or derived (see help)
    help: str
    metavar: str | None = None
    choices: tuple[str, ...] | None = None
    numeric: bool = False  # accepts TOML numbers besides strings
    # the form --check-config prints (a value holding a secret shows without it)
    printable: Callable[[str], str] | None = None

    @property
    def flag(self) -> str:
        return "--" + self.key.replace("_", "-")

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.upper()


def _s(key: str, group: str, parse: Callable[[str], Any], default: Raw | None, help: str,
       **extra: Any) -> Setting:
    return Setting(key, group, parse, default, help, **extra)


SETTINGS: tuple[Setting, ...] = (
    _s("state_dir", "state", path, None,
       "folder for lambda.db, the build spool, logs and instance sockets (default: "
       "$STATE_DIRECTORY under systemd, else $LAMBDA_STATE_DIR, else "
       "${XDG_STATE_HOME:-~/.local/state}/lambdad)", metavar="PATH"),
    _s("database", "state", dburl.parse_setting, "sqlite",
       "where functions, versions, keys, schedules and the async queue are stored: 'sqlite' "
       "(STATE_DIR/lambda.db) or a postgresql://USER@HOST/DBNAME URL, for several lambdad "
       "sharing one PostgreSQL (docs/cluster.md); a password in the URL is never printed, "
       "but prefer a passfile (?passfile=PATH) or LAMBDAD_DATABASE to a flag, which other "
       "local users can read in the process list (default: sqlite)", metavar="URL",
       printable=dburl.redacted),
    _s("socket", "control API", path, None,
       "Unix socket of the control API; its folder is made 0750 and is its access control "
       "(default: $RUNTIME_DIRECTORY/lambdad.sock under systemd, else STATE_DIR/run/lambdad.sock)",
       metavar="PATH"),
    _s("grpc_listen", "control API", optional_listen, "127.0.0.1:50051",
       "TCP address of the control API, or 'none'; every call there needs an API key "
       "(default: 127.0.0.1:50051)", metavar="HOST:PORT"),
    _s("api_key_file", "control API", path, None,
       "file holding the bootstrap admin key(s) accepted on TCP, one per line; without it "
       "(and without keys made by `lambdactl keys create`) TCP refuses everything but health "
       "checks (default: $CREDENTIALS_DIRECTORY/api-key when systemd passes that credential)",
       metavar="PATH"),
    _s("tcp_reflection", "control API", choice("key", "open"), "key",
       "gRPC server reflection on TCP: needs a key (default) or open to anyone who can "
       "connect; always open on the Unix socket", choices=("key", "open")),
    _s("tls_cert", "control API", path, None,
       "serve the TCP control API over TLS with this PEM certificate chain", metavar="PEM"),
    _s("tls_key", "control API", path, None,
       "the PEM private key of tls_cert", metavar="PEM"),
    _s("gateway_listen", "gateway", Listen.parse, "127.0.0.1:8080",
       "HTTP gateway address (default: 127.0.0.1:8080)", metavar="HOST:PORT"),
    _s("admin_listen", "gateway", optional_listen, "127.0.0.1:8081",
       "admin listener with /metrics (Prometheus) and /healthz, or 'none' "
       "(default: 127.0.0.1:8081)", metavar="HOST:PORT"),
    _s("domain", "gateway", domain, "localhost",
       "functions answer at NAME.DOMAIN (default: localhost)"),
    _s("public_port", "gateway", port, None,
       "port shown in function URLs, e.g. 443 behind a TLS proxy (default: the gateway's port)",
       metavar="PORT", numeric=True),
    _s("max_connections", "gateway", count(1), 1024,
       "open client connections the gateway accepts; more are closed at once (default: 1024)",
       metavar="N", numeric=True),
    _s("max_body_size", "gateway", mib, 6,
       "largest request body the gateway accepts, in MiB (default: 6)", metavar="MiB",
       numeric=True),
    _s("max_buffered_bodies", "gateway", mib, 256,
       "request-body bytes the gateway holds in memory at once, all connections together, "
       "in MiB; a request whose body would not fit is answered 503 with Retry-After before "
       "its body is read, and an eighth is kept for bodies up to 64 KiB (default: 256)",
       metavar="MiB", numeric=True),
    _s("body_timeout", "gateway", positive_seconds, 60,
       "a client has this many seconds to send a whole request body, however it trickles "
       "it in, then gets 408 (default: 60, about 100 KiB/s for the largest body); a client "
       "whose answer's send buffer does not drain for as long is cut",
       metavar="SECONDS", numeric=True),
    _s("runtime_image", "build", image_name, "lambda-runtime/python:3.11",
       "base image of Python functions (default: lambda-runtime/python:3.11)", metavar="IMAGE"),
    _s("image_prefix", "build", image_name, "lambda-fn",
       "repository prefix of function images (default: lambda-fn)", metavar="PREFIX"),
    _s("wheelhouse", "build", path, None,
       "resolve requirements.txt offline from this folder of wheels (default: PyPI)",
       metavar="PATH"),
    _s("keep_versions", "build", count(1), 10,
       "keep the images of the newest K versions of each function; older ones are pruned, "
       "their rows kept as history (default: 10)", metavar="K", numeric=True),
    _s("max_code_size", "build", mib, 50,
       "largest uploaded code archive, in MiB (default: 50)", metavar="MiB", numeric=True),
    _s("max_unpacked_size", "build", mib, 250,
       "largest unpacked code size, in MiB (default: 250, as AWS Lambda)", metavar="MiB",
       numeric=True),
    _s("build_timeout", "build", positive_seconds, 600,
       "how long one build may take, pip and `docker build` together, in seconds; a "
       "build that overruns is stopped and the deploy fails, leaving nothing behind "
       "(default: 600)", metavar="SECONDS", numeric=True),
    _s("build_memory", "build", mib, 2048,
       "memory of one build, in MiB: the address-space limit of pip and the memory "
       "(without swap) of `docker build` steps (default: 2048)", metavar="MiB",
       numeric=True),
    _s("build_user", "build", count(0), 65534,
       "when lambdad runs as root, pip resolves requirements.txt as this uid and gid, "
       "without supplementary groups, so it cannot read lambdad's files or reach Docker; "
       "0 keeps root (not recommended) (default: 65534, nobody)", metavar="UID",
       numeric=True),
    _s("build_max_image_size", "build", mib, 4096,
       "largest image a build may produce, in MiB, its base image included; a larger one "
       "is removed with its layers and the deploy fails (default: 4096)", metavar="MiB",
       numeric=True),
    _s("build_min_free_disk", "build", mib_or_zero, 1024,
       "free space, in MiB, a build must leave on the Docker data root (docker info's "
       "DockerRootDir) and on the file systems pip writes to (its work folder, the state "
       "folder): a build is not started below it and is stopped when it falls below; 0 "
       "disables (default: 1024)", metavar="MiB", numeric=True),
    _s("build_cache_size", "build", mib_or_zero, 2048,
       "space, in MiB, for resolved requirements kept under the state folder so a redeploy "
       "with the same requirements.txt skips pip (least recently used go first); 0 "
       "disables (default: 2048)", metavar="MiB", numeric=True),
    _s("start_timeout", "runtime", seconds, 30,
       "how long an instance may take to open its socket, in seconds (default: 30)",
       metavar="SECONDS", numeric=True),
    _s("drain_grace", "runtime", seconds, 10,
       "on SIGTERM, how long in-flight requests may finish, in seconds; keep the unit's "
       "TimeoutStopSec above it (default: 10)", metavar="SECONDS", numeric=True),
    _s("cell_pool_size", "runtime", count(0), 2,
       "stem cells: pre-started generic instances kept ready per resource class in use, "
       "so a cold start of a standard-runtime function only loads its code; 0 disables "
       "(default: 2)", metavar="N", numeric=True),
    _s("pause_after", "runtime", seconds, 5,
       "idle instances of Dockerfile functions are paused (cgroup freezer) after this many "
       "seconds and unpaused by the next request; 0 disables (default: 5)",
       metavar="SECONDS", numeric=True),
    _s("freeze_window", "runtime", seconds, 600,
       "an instance idle for its function's idle_timeout beyond min_instances is kept "
       "frozen (cgroup freezer) this many seconds before it stops, so a request meanwhile "
       "thaws it instead of starting and importing anew; 0 stops it at once (default: 600)",
       metavar="SECONDS", numeric=True),
    _s("frozen_memory_mb", "runtime", mib_or_zero, 512,
       "memory, in MiB, all instances kept frozen for the freeze window may hold on this "
       "host (as the container's cgroup reports it once frozen); beyond it the longest "
       "frozen stop first; 0 keeps none (default: 512)", metavar="MiB", numeric=True),
    _s("function_log_size", "runtime", mib, 4,
       "size at which a function's log file rotates, in MiB (default: 4)", metavar="MiB",
       numeric=True),
    _s("function_log_files", "runtime", count(2), 5,
       "log files kept per function, the current one included; the cap per function is "
       "about N x size (default: 5)", metavar="N", numeric=True),
    _s("async_backoff", "runtime", seconds, 60,
       "asynchronous invocations: attempt N waits N x this many seconds before the next "
       "(default: 60, so retries come after 1 and 2 more minutes)", metavar="SECONDS",
       numeric=True),
    _s("max_queued_events", "runtime", count(1), 1000,
       "asynchronous invocations waiting per function; more are refused (429 with "
       "Retry-After at the gateway, RESOURCE_EXHAUSTED over gRPC) and schedule runs are "
       "skipped (default: 1000)", metavar="N", numeric=True),
    _s("max_event_size", "runtime", mib, 0.25,
       "largest asynchronous invocation payload, in MiB; with max_queued_events it bounds "
       "the disk one function's queue can take (default: 0.25, as AWS Lambda)",
       metavar="MiB", numeric=True),
    _s("schedule_catch_up", "runtime", seconds, 3600,
       "a schedule run missed while lambdad was down runs once at start if it was due within "
       "this many seconds; 0 disables (default: 3600)", metavar="SECONDS", numeric=True),
    _s("node_name", "cluster", node_name, None,
       "this node's name in `lambdactl nodes`, log tags and the metrics' node label "
       "(default: the host name)", metavar="NAME"),
    _s("advertise_address", "cluster", host_port, None,
       "HOST:PORT other nodes dial for this node's control API (log fan-out); needed with "
       "a postgresql database when grpc_listen is a wildcard address or 'none' (default: "
       "grpc_listen)", metavar="HOST:PORT"),
    _s("node_down_after", "cluster", positive_seconds, 10,
       "a node whose heartbeat stays silent this many seconds is marked down and what it "
       "held is released; it beats every fifth of it (default: 10)", metavar="SECONDS",
       numeric=True),
    _s("cluster_key_file", "cluster", path, None,
       "file holding the secret shared by the nodes of a cluster for their calls to each "
       "other; required with a postgresql database", metavar="PATH"),
    _s("log_level", "daemon", choice("debug", "info", "warning", "error"), "info",
       "daemon log level (default: info)", choices=("debug", "info", "warning", "error")),
    _s("pid_file", "daemon", path_or_none, None,
       "file holding lambdad's process id, written once it is ready and removed when it "
       "stops, for scripts that signal it (under `make run`, make is its parent); 'none' "
       "writes none (default: $RUNTIME_DIRECTORY/lambdad.pid under systemd, else "
       "STATE_DIR/run/lambdad.pid)", metavar="PATH"),
)
BY_KEY = {s.key: s for s in SETTINGS}

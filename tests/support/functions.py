"""Writing and deploying the small functions end-to-end tests make on the fly: a handler
with its manifest, or a Dockerfile function that is its own raw HTTP server.

The raw server is the attacker of the hop's tests (tests/e2e/test_hop_attacks.py,
test_restructure_attacks.py): it speaks bytes on the instance's socket, so each test
writes only `serve(conn)` and this module adds the request reading and the listener.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.support.daemon import CliResult, Lambdad, wait_for

# What a raw server's `serve(conn)` builds on: the imports it uses and `heads(conn)`, which
# yields each request head's (method, target) until the caller closes (bodies are not
# read: the raw servers are asked GETs, and a POST's body is a few bytes before the next
# head, never a head itself).
RAW_SERVER_HEAD = r'''
import os, socket, threading, time

def heads(conn):
    buffer = b""
    while True:
        while b"\r\n\r\n" not in buffer:
            data = conn.recv(65536)
            if not data:
                return
            buffer += data
        head, _, buffer = buffer.partition(b"\r\n\r\n")
        method, target = head.split(b" ")[:2]
        yield method, target
'''

# The listener: the instance's socket, one thread per connection of lambdad's.
RAW_SERVER_MAIN = r'''
path = os.environ["LAMBDA_SOCKET"]
if os.path.exists(path):
    os.unlink(path)
listener = socket.socket(socket.AF_UNIX)
listener.bind(path)
os.chmod(path, 0o666)
listener.listen(16)
while True:
    conn, _ = listener.accept()
    threading.Thread(target=serve, args=(conn,), daemon=True).start()
'''


def write_function(folder: Path, source: str, manifest: str, *, module: str = "handler"
                   ) -> Path:
    """`folder` with MODULE.py and lambda.toml (an existing folder is written over)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{module}.py").write_text(source)
    (folder / "lambda.toml").write_text(manifest)
    return folder


def manifest(name: str, handler: str = "handler.handler", **scaling: int) -> str:
    """lambda.toml of a function `name` with these `[scaling]` settings (none: no table)."""
    text = f'name = "{name}"\nhandler = "{handler}"\n'
    if scaling:
        text += "[scaling]\n" + "".join(f"{key} = {value}\n" for key, value in scaling.items())
    return text


def deploy_function(daemon: Lambdad, folder: Path, source: str, manifest: str) -> CliResult:
    """Writes the function and deploys it; a failed deploy fails the test (Lambdad.deploy)."""
    return daemon.deploy(write_function(folder, source, manifest))


def deploy_raw_server(daemon: Lambdad, folder: Path, name: str, serve: str) -> str:
    """A Dockerfile function `name` on one instance whose socket is served by `serve`
    (source defining `serve(conn)`, see RAW_SERVER_HEAD); its name."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "server.py").write_text(RAW_SERVER_HEAD + serve + RAW_SERVER_MAIN)
    (folder / "Dockerfile").write_text(
        "FROM lambda-runtime/python:3.11\nCOPY server.py /srv/server.py\n"
        'CMD ["python3", "/srv/server.py"]\n')
    (folder / "lambda.toml").write_text(
        f'name = "{name}"\nruntime = "docker"\n[scaling]\nmax_instances = 1\n')
    daemon.deploy(folder)
    return name


# A function pre-warmed on deploy (`--prewarm 2`, test_i17_attacks.py). TZ keeps it off the
# stem cells (a started process ignores it): each pre-warmed instance is a container
# labelled with its function and version from its creation on.
PREWARM_MANIFEST = ('name = "{name}"\nhandler = "handler.handler"\n[env]\nTZ = "UTC"\n'
                    "[scaling]\nmax_instances = 3\nidle_timeout = 120\n")
PREWARM_V1 = "def handler(event, context):\n    return 'v1'\n"
HANGING_IMPORT = "import time\ntime.sleep(120)\n\ndef handler(event, context):\n    return 'v2'\n"


@contextlib.contextmanager
def hanging_prewarm(daemon: Lambdad, folder: Path, name: str
                    ) -> Iterator[subprocess.Popen[str]]:
    """`name` v1 deployed from `folder`, then `lambdactl deploy FOLDER --prewarm 2` of a v2
    whose import hangs, left running once both of v2's pre-warmed containers exist (the
    moment to stop lambdad or the client under it); killed on the way out if it is still
    running."""
    daemon.deploy(write_function(folder, PREWARM_V1, PREWARM_MANIFEST.format(name=name)))
    (folder / "handler.py").write_text(HANGING_IMPORT)
    with daemon.cli_running("deploy", str(folder), "--prewarm", "2") as deploy:
        assert wait_for(lambda: sum(1 for c in daemon.containers(name)
                                    if daemon.owner(c) == (name, 2)) == 2,
                        timeout=60), daemon.log()
        yield deploy

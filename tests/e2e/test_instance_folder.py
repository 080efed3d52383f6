"""The instance folder under attack (issue 13): a function writes STATE/i/<id> on the host,
so it must never lead lambdad to another socket, fill the disk, or leave files behind.

Each test is an attack that worked on the code before the fix: a swapped socket made the
gateway relay requests to dockerd, and a Dockerfile function could put 200 MiB or
unreadable folders there.
"""

from __future__ import annotations

import concurrent.futures
import io
import os
import re
import time
from pathlib import Path

import pytest

from tests.support.daemon import HttpResult, Lambdad, wait_for

pytestmark = pytest.mark.slow

KINDS = ["symlink", "hardlink", "fifo", "directory", "file"]

# A standard-runtime handler that tries, once warm, to put something else in place of its
# socket, then cuts the daemon's keep-alive connections so that the next request retries
# on a new connection (the path the attack took).
SWAPPER = '''
import os, socket, threading, time

RUN = "/run/lambda"
KEEP = []


def _swap(kind):
    sock = RUN + "/invoke.sock"
    try:
        if kind == "hardlink":
            other = socket.socket(socket.AF_UNIX)
            other.bind(RUN + "/other.sock")
            other.listen()
            KEEP.append(other)
        os.rename(sock, RUN + "/moved.sock")
        if kind == "symlink":
            os.symlink("/var/run/docker.sock", sock)
        elif kind == "hardlink":
            os.link(RUN + "/other.sock", sock)
        elif kind == "fifo":
            os.mkfifo(sock)
        elif kind == "directory":
            os.mkdir(sock)
        else:
            with open(sock, "w") as out:
                out.write("HTTP/1.1 200 OK")
        return "swapped"
    except OSError as exc:
        return "refused: " + exc.strerror


def _cut_connections_later():
    def cut():
        time.sleep(0.3)
        for name in os.listdir("/proc/self/fd"):
            try:
                sock = socket.socket(fileno=os.dup(int(name)))
            except OSError:
                continue
            try:
                if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
                    sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            finally:
                sock.close()
    threading.Thread(target=cut, daemon=True).start()


def handler(event, context):
    if event["rawPath"] == "/swap":
        result = _swap(event["queryStringParameters"]["kind"])
        _cut_connections_later()
        return {"swap": result}
    time.sleep(0.2)  # concurrent requests overlap: each needs its own connection
    return {"function": context.function_name, "path": event["rawPath"]}
'''

# A Dockerfile function's own server (stdlib). KIND says what it does before serving.
START = '''
import http.server, json, os, socketserver, time

KIND = os.environ.get("KIND", "good")
RUN = "/run/lambda"
SOCK = RUN + "/invoke.sock"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        answer = {"function": "own", "path": self.path}
        if self.path == "/fill-volume":
            answer["written_mib"] = fill_volume()
        body = json.dumps(answer).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, *args):
        pass


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def fill_volume():
    written = 0
    try:
        with open("/data/fill", "wb") as out:
            while written < 1024:
                out.write(b"x" * (1 << 20))
                out.flush()
                written += 1
    except OSError:
        pass
    os.remove("/data/fill")
    return written


def serve(path):
    server = Server(path, Handler)
    os.chmod(path, 0o666)
    return server


if KIND == "good":
    serve(SOCK).serve_forever()
elif KIND == "symlink":
    os.symlink("/var/run/docker.sock", SOCK)
elif KIND == "hardlink":
    server = serve(RUN + "/real.sock")
    os.link(RUN + "/real.sock", SOCK)
    server.serve_forever()
elif KIND == "fifo":
    os.mkfifo(SOCK)
elif KIND == "directory":
    os.mkdir(SOCK)
elif KIND == "file":
    with open(SOCK, "w") as out:
        out.write("HTTP/1.1 200 OK")
elif KIND == "fill":  # 200 MiB on the host's disk, then a proper server
    with open(RUN + "/fill", "wb") as out:
        for _ in range(200):
            out.write(b"x" * (1 << 20))
            out.flush()
    serve(SOCK).serve_forever()
elif KIND == "hide":  # folders lambdad's user cannot read or empty, then a proper server
    for name, mode in (("private", 0o700), ("locked", 0o000)):
        os.mkdir(RUN + "/" + name)
        for n in range(3):
            with open(f"{RUN}/{name}/secret{n}", "w") as out:
                out.write("kept?")
        os.mkdir(f"{RUN}/{name}/deeper")
        with open(f"{RUN}/{name}/deeper/more", "w") as out:
            out.write("kept?")
        os.chmod(RUN + "/" + name, mode)
    serve(SOCK).serve_forever()
time.sleep(3600)
'''


def _dockerd(response: HttpResult) -> bool:
    """dockerd's answer, whatever the status: its Api-Version header or its JSON."""
    return ("api-version" in response.headers or b"ApiVersion" in response.body
            or response.body.lstrip().startswith(b"["))


def _dockerfile_function(folder: Path, name: str, extra: str = "", **scaling: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "start.py").write_text(START)
    (folder / "Dockerfile").write_text(
        f"FROM lambda-runtime/python:3.11\n{extra}COPY start.py /var/task/start.py\n"
        'CMD ["python3", "/var/task/start.py"]\n')
    lines = [f'name = "{name}"', "timeout = 10", "[scaling]"]
    lines += [f"{key} = {value}" for key, value in scaling.items()]
    (folder / "lambda.toml").write_text("\n".join(lines) + "\n")
    return folder


def _turn_hostile(daemon: Lambdad, name: str, kind: str) -> None:
    """From now on, new instances of `name` v1 start as `kind`: the version's image is
    replaced under its tag (as if its code behaved differently on later starts), and the
    instance the deploy started is killed so that the next request starts a new one."""
    image = f"{daemon.image_prefix}/{name}:v1"
    daemon.docker.images.build(fileobj=io.BytesIO(f"FROM {image}\nENV KIND={kind}\n".encode()),
                               tag=image, rm=True)
    for container in daemon.containers(name):
        container.kill()
    assert wait_for(lambda: not daemon.containers(name), 30)


def _refusals(daemon: Lambdad, name: str) -> list[tuple[str, str]]:
    """(instance id, reason) of every instance of `name` lambdad refused, from its log."""
    pattern = re.compile(
        rf'instance refused instance=(\w+) what="instance of {name} v\d+" reason="([^"]*)"')
    return pattern.findall(daemon.log())


def _only_live_folders(daemon: Lambdad) -> bool:
    """Nothing is left in STATE/i but the socket folders of running containers (and a
    stem cell's, a moment before its container exists), each holding at most its socket."""
    live = {c.labels.get("lambda.instance") for c in daemon.containers()}
    for folder in (daemon.state_dir / "i").iterdir():
        if folder.name not in live or os.listdir(folder) not in ([], ["invoke.sock"]):
            return False
    return True


def test_swapping_the_socket_never_reaches_dockerd(lambdad: Lambdad, tmp_path: Path) -> None:
    folder = tmp_path / "swapper"
    folder.mkdir()
    (folder / "handler.py").write_text(SWAPPER)
    (folder / "lambda.toml").write_text(
        'name = "swapper"\ntimeout = 10\n[scaling]\nconcurrency = 8\nmax_instances = 1\n')
    lambdad.deploy(folder)
    lambdad.deploy("greet", "--name", "bystander-swap")
    paths = ["/version", "/containers/json"] * 3
    for kind in KINDS:
        swap = lambdad.http("swapper", f"/swap?kind={kind}").json()
        time.sleep(0.6)  # the handler has cut the idle connections: the next one is stale
        with concurrent.futures.ThreadPoolExecutor(len(paths)) as pool:
            answers = list(pool.map(lambda path: lambdad.http("swapper", path), paths))
        assert not [a for a in answers if _dockerd(a)], f"{kind}: dockerd answered"
        # The folder was locked before the handler was even imported: nothing moved.
        assert swap == {"swap": "refused: Permission denied"}, kind
        assert sorted((a.status, a.json()["path"]) for a in answers) == sorted(
            (200, path) for path in paths), kind
    assert lambdad.http("bystander-swap", "/?name=ok").json() == {"message": "Hello, ok!"}


@pytest.mark.parametrize("kind", KINDS)
def test_a_dockerfile_function_presenting_another_socket_is_refused(
        lambdad: Lambdad, tmp_path: Path, kind: str) -> None:
    name = f"present-{kind}"
    folder = _dockerfile_function(tmp_path / name, name)
    result = lambdad.cli("deploy", str(folder), "--env", f"KIND={kind}")
    reason = {
        "symlink": "invoke.sock is a symbolic link, not a socket",
        "hardlink": "invoke.sock has 2 hard links",
        "fifo": "invoke.sock is a FIFO, not a socket",
        "directory": "invoke.sock is a directory, not a socket",
        "file": "invoke.sock is a regular file, not a socket",
    }[kind]
    assert result.code == 9, result.stderr
    assert f"instance of {name} v1 was refused: {reason}" in result.stderr
    assert [why for _, why in _refusals(lambdad, name)] == [reason]
    assert lambdad.containers(name) == [] and lambdad.images(name) == []
    assert wait_for(lambda: _only_live_folders(lambdad), 10)


def test_a_socket_turned_into_a_link_later_gets_502s(lambdad: Lambdad, tmp_path: Path) -> None:
    folder = _dockerfile_function(tmp_path / "turncoat", "turncoat", max_instances=2)
    lambdad.deploy(folder)
    lambdad.deploy("greet", "--name", "bystander-turn")
    assert lambdad.http("turncoat", "/version").json() == {"function": "own", "path": "/version"}
    _turn_hostile(lambdad, "turncoat", "symlink")
    paths = ["/version", "/containers/json"] * 2
    with concurrent.futures.ThreadPoolExecutor(len(paths)) as pool:
        answers = list(pool.map(lambda path: lambdad.http("turncoat", path), paths))
    assert not [a for a in answers if _dockerd(a)]
    for answer in answers:
        assert answer.status == 502 and answer.json()["error"] == "bad_gateway"
        assert ("instance of turncoat v1 was refused: invoke.sock is a symbolic link, not a "
                "socket") in answer.json()["message"]
    assert _refusals(lambdad, "turncoat")
    assert lambdad.http("bystander-turn", "/?name=ok").json() == {"message": "Hello, ok!"}
    assert lambdad.cli("delete", "turncoat").code == 0
    assert wait_for(lambda: _only_live_folders(lambdad), 10)


@pytest.mark.parametrize("kind", ["fill", "hide"])
def test_what_a_dockerfile_function_writes_in_its_folder_is_bounded_and_removed(
        lambdad: Lambdad, tmp_path: Path, kind: str) -> None:
    name = f"writer-{kind}"
    lambdad.deploy(_dockerfile_function(tmp_path / name, name))
    _turn_hostile(lambdad, name, kind)
    answer = lambdad.http(name, "/")
    assert answer.status == 502, answer.body
    message = answer.json()["message"]
    if kind == "fill":
        assert re.search(rf"instance of {name} v1 was refused: the socket folder holds \d+ "
                         r"bytes before its socket appeared \(at most 1048576\)", message)
    else:  # lambdad runs as root here: it can read them, and refuses them beside the socket
        assert (f"instance of {name} v1 was refused: the socket folder holds 'locked', "
                "'private' besides invoke.sock") in message
    assert lambdad.cli("delete", name).code == 0
    assert wait_for(lambda: _only_live_folders(lambdad), 10)


def test_without_capabilities_a_cleanup_container_removes_what_lambdad_cannot(
        fresh_lambdad: Lambdad, tmp_path: Path) -> None:
    """lambdad as a user that is not root (root without any capability, which Linux
    checks like any other user): folders a function made 0700 or 000 before the lock,
    and the same left by a crash, are removed by a cleanup container."""
    daemon = fresh_lambdad
    daemon.stop()
    daemon.command_prefix = ["setpriv", "--bounding-set", "-all", "--inh-caps", "-all"]
    leftover = daemon.state_dir / "i" / "0123456789ab"  # as if a crash left it
    for name, mode in (("private", 0o700), ("locked", 0o000)):
        (leftover / name / "deeper").mkdir(parents=True)
        (leftover / name / "deeper" / "secret").write_text("kept?")
        for path in (leftover / name, leftover / name / "deeper",
                     leftover / name / "deeper" / "secret"):
            os.chown(path, 10001, 10001)
        (leftover / name).chmod(mode)
    daemon.start()
    status = (Path("/proc") / str(daemon.process.pid if daemon.process else 0) / "status")
    assert "CapEff:\t0000000000000000" in status.read_text()
    assert not leftover.exists()
    assert "instance folder removed by a cleanup container instance=0123456789ab" in daemon.log()

    name = "hider"
    daemon.deploy(_dockerfile_function(tmp_path / name, name))
    _turn_hostile(daemon, name, "hide")
    answer = daemon.http(name, "/")
    assert answer.status == 502, answer.body
    # Unreadable to lambdad while it starts (or, if it was quick, beside the socket).
    assert f"instance of {name} v1 was refused: the socket folder holds " in (
        answer.json()["message"])
    ((refused, _),) = _refusals(daemon, name)
    assert f"instance folder removed by a cleanup container instance={refused}" in daemon.log()
    assert daemon.cli("delete", name).code == 0
    assert wait_for(lambda: not list((daemon.state_dir / "i").iterdir()), 10)
    # Cleanup containers go once done, and none is left running.
    assert [c for c in daemon.containers() if "lambda.cleanup" in c.labels] == []


def test_a_dockerfile_volume_is_a_bounded_tmpfs(lambdad: Lambdad, tmp_path: Path) -> None:
    """A VOLUME in a function's Dockerfile gave it a Docker volume: host disk without a
    bound, and left behind after the container."""
    volume = "USER root\nRUN mkdir /data && chown 10001:10001 /data\nVOLUME /data\nUSER 10001\n"
    lambdad.deploy(_dockerfile_function(tmp_path / "volumed", "volumed", volume))
    answer = lambdad.http("volumed", "/fill-volume").json()
    (container,) = lambdad.containers("volumed")
    assert [m for m in container.attrs["Mounts"] if m["Type"] == "volume"] == []
    assert "/data" in container.attrs["HostConfig"]["Tmpfs"]
    assert 0 < answer["written_mib"] <= 64  # a tmpfs the size of /tmp
    assert lambdad.cli("delete", "volumed").code == 0

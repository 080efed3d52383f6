"""The gateway's listener when the process is out of file descriptors, for real: a child
process runs a Gateway, uses up its descriptors, and clients keep connecting."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

CHILD = r"""
import asyncio, json, logging, os, resource, sys
from lambdad.gateway import Gateway

records = []
class Keep(logging.Handler):
    def emit(self, record):
        records.append(record.getMessage())
logging.getLogger().addHandler(Keep())  # no QuietEmfile: the listener alone is tested
logging.getLogger().setLevel(logging.INFO)
resource.setrlimit(resource.RLIMIT_NOFILE, (128, 128))

class Nothing:
    async def invoke(self, request):
        raise AssertionError("no function is called")

async def main():
    gateway = Gateway(Nothing())
    await gateway.start("127.0.0.1", 0)
    print(gateway.port, flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # the parent says: use up the descriptors
    hogs = []
    try:
        while True:
            hogs.append(os.open("/dev/null", os.O_RDONLY))
    except OSError:
        pass
    print("full", flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # the parent has been connecting for a while
    for fd in hogs:
        os.close(fd)
    print("freed", flush=True)
    await asyncio.to_thread(sys.stdin.readline)  # the parent made a request
    await gateway.stop(1)
    print(json.dumps(records), flush=True)

asyncio.run(main())
"""


def test_a_listener_out_of_descriptors_logs_once_a_second_and_recovers() -> None:
    """Python 3.11's accept loop logged (and rescheduled itself) up to 100 times per
    wake-up when accept() failed with EMFILE: 634,598 lines in one flood."""
    child = subprocess.Popen([sys.executable, "-c", CHILD], cwd=ROOT, text=True,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdin is not None and child.stdout is not None
    clients: list[socket.socket] = []
    try:
        port = int(child.stdout.readline())
        child.stdin.write("go\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "full"
        started = time.monotonic()
        while time.monotonic() - started < 3:  # connections wait in the backlog
            clients.append(socket.create_connection(("127.0.0.1", port), timeout=5))
            time.sleep(0.05)
        seconds = time.monotonic() - started
        child.stdin.write("free\n")
        child.stdin.flush()
        assert child.stdout.readline().strip() == "freed"
        for sock in clients:
            sock.close()
        with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: nope.example\r\nConnection: close\r\n\r\n")
            sock.settimeout(5)
            assert sock.recv(4096).startswith(b"HTTP/1.1 404 ")  # accepting again
        child.stdin.write("done\n")
        child.stdin.flush()
        records = json.loads(child.stdout.readline())
    finally:
        for sock in clients:
            sock.close()
        child.kill()
        child.wait()
    complaints = [r for r in records if "Too many open files" in r or "out of system" in r]
    assert 1 <= len(complaints) <= seconds + 2, (len(complaints), complaints[:3])

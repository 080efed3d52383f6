"""A bounded fuzz run of the gateway's request parsing over a real loopback socket.

Random request heads and bytes go to one running gateway; every connection must end
with a well-formed HTTP response or a plain close, and the gateway must still answer a
valid request afterwards. Every response handed out by the invoker is released once.
"""

from __future__ import annotations

import asyncio
import random

from tests.unit.test_gateway_server import host, parse, raw, request_bytes, run

TOKENS = [b"GET", b"POST", b"HEAD", b" ", b"/", b"?a=1", b"HTTP/1.1", b"HTTP/1.0", b"\r\n",
          b"\n", b":", b"Host", b"Content-Length", b"Transfer-Encoding", b"chunked", b"0",
          b"-1", b"99999999999", b"\x00", b"\xff", b"Expect", b"100-continue", b"x" * 300]


def _fuzz_input(rng: random.Random, gw_host: str) -> bytes:
    if rng.random() < 0.5:
        base = request_bytes(gw_host, rng.choice(["GET", "POST", "HEAD"]))
        cut = rng.randrange(len(base))
        noise = b"".join(rng.choice(TOKENS) for _ in range(rng.randrange(6)))
        return base[:cut] + noise + base[cut:]
    return b"".join(rng.choice(TOKENS) for _ in range(rng.randrange(1, 25)))


async def _exchange(port: int, data: bytes) -> bytes | None:
    """What the gateway answers, or None if it is still waiting for more."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(data)
        await writer.drain()
        try:
            return await asyncio.wait_for(reader.read(), 0.4)
        except TimeoutError:
            return None
    except ConnectionError:
        return b""
    finally:
        writer.close()


def test_fuzzed_requests_never_break_the_gateway() -> None:
    rng = random.Random(20261126)

    async def test(gw, inv) -> None:  # type: ignore[no-untyped-def]
        for _ in range(40):
            data = _fuzz_input(rng, host(gw, "echo"))
            reply = await _exchange(gw.port, data)
            if reply:
                assert reply.startswith(b"HTTP/1.1 "), reply[:80]
                status = int(reply.split(b" ")[1])
                assert 100 <= status <= 599
        ok = parse(await raw(gw.port, request_bytes(host(gw, "echo"))))
        assert ok.status == 200

    run(test, header_timeout=0.2)

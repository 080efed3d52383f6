"""A FastAPI app behind Mangum, written as for AWS Lambda: `handler = Mangum(app)`."""

import asyncio
import struct
import threading
import zlib

from fastapi import Cookie, FastAPI, HTTPException, Query, Response
from mangum import Mangum
from pydantic import BaseModel, Field
from snapshot_restore_py import register_before_snapshot

app = FastAPI(title="items")

ITEMS: dict[int, dict[str, object]] = {1: {"id": 1, "name": "hammer", "price": 9.5, "tags": []}}


class Item(BaseModel):
    # Bounded: items stay in memory, so unbounded fields would let a few large requests
    # fill the instance's memory.
    name: str = Field(min_length=1, max_length=200)
    price: float = Field(gt=0)
    tags: list[str] = Field(default=[], max_length=20)


@app.get("/health")
def health() -> dict[str, bool]:
    """Answers without touching any state: the warm-up below calls it."""
    return {"ok": True}


@app.get("/items/{item_id}")
def read_item(item_id: int, q: str | None = None, limit: int = 10) -> dict[str, object]:
    if item_id not in ITEMS:
        raise HTTPException(status_code=404, detail=f"item {item_id} not found")
    return {**ITEMS[item_id], "q": q, "limit": limit}


@app.get("/wait/{ms}")
async def wait(ms: int) -> dict[str, int]:
    """An async route that holds its request a while, so parallel requests overlap."""
    await asyncio.sleep(ms / 1000)
    return {"waited_ms": ms}


@app.post("/items", status_code=201)
def create_item(item: Item) -> dict[str, object]:
    item_id = max(ITEMS) + 1
    ITEMS[item_id] = {"id": item_id, **item.model_dump()}
    return ITEMS[item_id]


@app.post("/login")
def login(response: Response, user: str) -> dict[str, str]:
    # Cookies, not authentication: a client can send any `session` it likes. A real app
    # checks a password and signs the cookie (or keeps sessions server-side).
    response.set_cookie("session", f"user-{user}", httponly=True, samesite="lax")
    response.set_cookie("theme", "dark")
    return {"logged_in": user}


@app.get("/me")
def me(session: str | None = Cookie(default=None), theme: str | None = Cookie(default=None)
       ) -> dict[str, str | None]:
    if session is None:
        raise HTTPException(status_code=401, detail="no session cookie")
    return {"session": session, "theme": theme}


def _png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A solid-colour PNG, built by hand so the example needs no imaging library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    row = b"\x00" + bytes(rgb) * width
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(row * height))
            + chunk(b"IEND", b""))


@app.get("/pixel.png")
def pixel(size: int = Query(4, ge=1, le=256)) -> Response:
    # Bounded: the buffer grows with size squared, and one request for size=20000 (1.2 GB)
    # would take the instance, and every request on it, down. Bound what a query sizes.
    return Response(content=_png(size, size, (255, 0, 0)), media_type="image/png")


handler = Mangum(app)


# One request through the whole stack, once per instance, before any worker exists.
#
# Much of a FastAPI app's first request is one-off work done lazily: anyio imports its
# asyncio backend (~25 ms), Starlette builds the middleware stack, FastAPI and pydantic build
# what the first call of a route needs. Without this, every worker the instance forks pays it
# again on its first request (20-100 ms). A before-snapshot hook runs in the zygote after the
# import, so the workers inherit the result copy-on-write (Lambda SnapStart runs the same
# hook before taking its snapshot). The event is a plain GET of /health, which reads and
# writes no state (a warm-up must have no side effects: it runs again in every new
# instance). /health is a sync route, so anyio runs it in a worker thread, which it stops
# when Mangum's call ends; the hook waits for that thread to be gone, as the fork rules ask
# (a thread running at the fork is not in the workers, and a lock it held stays held there).
_WARM_UP_EVENT = {
    "version": "2.0", "routeKey": "$default", "rawPath": "/health", "rawQueryString": "",
    "headers": {"host": "localhost"}, "isBase64Encoded": False,
    "requestContext": {
        "accountId": "anonymous", "apiId": "warm-up", "domainName": "localhost",
        "domainPrefix": "warm-up", "requestId": "warm-up", "routeKey": "$default",
        "stage": "$default", "time": "01/Jan/2026:00:00:00 +0000", "timeEpoch": 0,
        "http": {"method": "GET", "path": "/health", "protocol": "HTTP/1.1",
                 "sourceIp": "127.0.0.1", "userAgent": "warm-up"},
    },
}


@register_before_snapshot
def warm_up() -> None:
    response = handler(_WARM_UP_EVENT, None)
    if response["statusCode"] != 200:  # fail the init, loudly, rather than serve half-warm
        raise RuntimeError(f"warm-up request answered {response['statusCode']}")
    for thread in threading.enumerate():
        if thread is not threading.main_thread():
            thread.join(timeout=1.0)

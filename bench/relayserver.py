"""The peer for ``bench.realtime``: a bare python-socketio relay on aiohttp.

What our server does for signalling and fan-out, with nothing else: no authentication, no
validation, no database. A client emits ``join`` ``{"room"}`` to enter a room; ``call.signal``
is relayed to the other members of the room named by its ``call_id`` (the sender skipped) and
answered ``{"relayed": true}``; ``POST /note`` emits one ``event`` to the room ``centre`` (with
``--redis``, through python-socketio's ``AsyncRedisManager``, so to every process sharing it).

    python -m bench.relayserver --port 8081 [--redis redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import socketio
from aiohttp import web

from bench import gcwatch


def make_app(redis_url: str | None) -> web.Application:
    manager = socketio.AsyncRedisManager(redis_url) if redis_url else None
    sio = socketio.AsyncServer(
        async_mode="aiohttp", client_manager=manager, cors_allowed_origins=[], logger=False
    )

    async def join(sid: str, data: Any) -> dict[str, Any]:
        await sio.enter_room(sid, str(data["room"]))
        return {"joined": data["room"]}

    async def signal(sid: str, data: Any) -> dict[str, Any]:
        await sio.emit("call.signal", data, room=str(data["call_id"]), skip_sid=sid)
        return {"relayed": True}

    sio.on("join", join)
    sio.on("call.signal", signal)

    async def note(request: web.Request) -> web.Response:
        body = await request.json()
        await sio.emit("event", {**body, "at": time.time()}, room="centre")
        return web.json_response({"sent": True})

    app = web.Application()
    sio.attach(app)
    app.router.add_post("/note", note)
    app.router.add_get("/readyz", _ready)
    return app


async def _ready(request: web.Request) -> web.Response:
    return web.json_response({"status": "ready"})


def main() -> None:
    gcwatch.install()
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis")
    args = parser.parse_args()
    web.run_app(make_app(args.redis), host="127.0.0.1", port=args.port, print=None)


if __name__ == "__main__":
    main()

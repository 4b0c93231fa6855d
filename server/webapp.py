"""Serving the built web front end (``web/dist``) from the same server.

Hashed assets under ``/assets/`` are cached for a year; every other GET outside the API and
the system paths answers with ``index.html`` so that the single-page app's routes work on reload.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from server.problems import NotFound

_RESERVED = ("/api/", "/socket.io/", "/dicomweb/", "/metrics", "/healthz", "/readyz")

_NOT_BUILT = """<!doctype html><html lang="zh-CN"><meta charset="utf-8"><title>会诊 Huizhen</title>
<body><h1>会诊 Huizhen</h1><p>前端尚未构建，请运行 <code>make web</code>。</p>
<p>The web front end is not built: run <code>make web</code>.</p></body></html>"""

CSP = (
    "default-src 'self'; img-src 'self' data: blob:; style-src 'self' 'unsafe-inline'; "
    "connect-src 'self' ws: wss:; media-src 'self' blob:; worker-src 'self' blob:; "
    "font-src 'self' data:; frame-ancestors 'none'; base-uri 'self'; form-action 'self'"
)


def install_web(app: web.Application, dist: Path) -> None:
    index = dist / "index.html"
    assets = dist / "assets"
    if assets.is_dir():
        app.router.add_static("/assets/", assets, append_version=False)

    # Real files at the top of dist (favicon, manifest) are served as themselves.
    top_files = {p.name: p for p in dist.iterdir() if p.is_file()} if dist.is_dir() else {}
    built = index.is_file()

    async def spa(request: web.Request) -> web.StreamResponse:
        if request.path.startswith(_RESERVED):
            raise NotFound("no such route")
        if built:
            top = top_files.get(request.match_info["tail"])
            if top is not None and top.name != "index.html":
                return web.FileResponse(top)
            response: web.StreamResponse = web.FileResponse(index)
            response.headers["Cache-Control"] = "no-cache"
        else:
            response = web.Response(text=_NOT_BUILT, content_type="text/html")
        response.headers["Content-Security-Policy"] = CSP
        return response

    async def api_not_found(request: web.Request) -> web.StreamResponse:
        raise NotFound("no such API route")

    app.router.add_route("*", "/api/{tail:.*}", api_not_found, name="api_not_found")
    app.router.add_get("/{tail:.*}", spa, name="web")

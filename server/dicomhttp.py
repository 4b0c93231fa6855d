"""HTTP plumbing shared by the DICOMweb routes: media types, multipart bodies, CORS, audit.

* ``Accept`` negotiation (PS3.18 §8.7): a list of media ranges with ``type`` and
  ``transfer-syntax`` parameters and quality values.
* Multipart/related responses streamed part by part from files or bytes, after the request's
  transaction has committed (the body is an async iterator that aiohttp drains).
* CORS for the origins in ``HUIZHEN_CORS_ORIGINS``: preflight answered without authentication,
  and ``Access-Control-Allow-Origin`` on every DICOMweb response to those origins.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from aiohttp import web
from pydantic import StringConstraints

from server.keys import SETTINGS

DICOM_JSON = "application/dicom+json"
UID_RE = r"^[0-9]+(\.[0-9]+)*$"
Uid = Annotated[str, StringConstraints(pattern=UID_RE, max_length=64)]
UID_PATHS: dict[str, Any] = {"study": Uid, "series": Uid, "instance": Uid}

_CHUNK = 256 * 1024


@dataclass(frozen=True, slots=True)
class MediaRange:
    type: str  # "multipart/related", "application/dicom", "*/*"
    params: dict[str, str]
    q: float

    @property
    def part_type(self) -> str:
        return self.params.get("type", "").strip('"').lower()

    @property
    def transfer_syntax(self) -> str | None:
        ts = self.params.get("transfer-syntax")
        return ts.strip('"') if ts is not None else None


def parse_accept(header: str | None) -> list[MediaRange]:
    """The media ranges of an Accept header, best first; none given means ``*/*``."""
    if not header or not header.strip():
        return [MediaRange("*/*", {}, 1.0)]
    ranges: list[MediaRange] = []
    for item in _split_outside_quotes(header, ","):
        pieces = _split_outside_quotes(item, ";")
        media = pieces[0].strip().lower()
        if not media:
            continue
        params: dict[str, str] = {}
        q = 1.0
        for piece in pieces[1:]:
            key, _, value = piece.partition("=")
            key = key.strip().lower()
            value = value.strip()
            if key == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
            elif key:
                params[key] = value
        if q > 0:
            ranges.append(MediaRange(media, params, q))
    ranges.sort(key=lambda r: -r.q)
    return ranges


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    out: list[str] = []
    current: list[str] = []
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        if ch == sep and not quoted:
            out.append("".join(current))
            current = []
        else:
            current.append(ch)
    out.append("".join(current))
    return out


def accepts(ranges: Iterable[MediaRange], media: str, part_type: str | None = None) -> bool:
    """Whether ``media`` (with ``part_type`` for multipart) is acceptable."""
    major = media.split("/")[0]
    for r in ranges:
        if r.type in ("*/*", media, f"{major}/*"):
            if part_type is None or r.type != media:
                return True
            if r.part_type in ("", part_type, "*/*"):
                return True
    return False


def dicom_json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(
        status=status,
        body=json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode(),
        headers={"Content-Type": DICOM_JSON},
    )


@dataclass(frozen=True, slots=True)
class Part:
    content_type: str
    path: Path | None = None
    data: bytes | None = None
    location: str = ""


def multipart_response(parts: list[Part], part_type: str) -> web.Response:
    """A multipart/related response whose parts are read from disk while being sent."""
    boundary = uuid.uuid4().hex
    return web.Response(
        body=_stream(parts, boundary),
        headers={
            "Content-Type": f'multipart/related; type="{part_type}"; boundary={boundary}',
        },
    )


async def _stream(parts: list[Part], boundary: str) -> AsyncIterator[bytes]:
    for part in parts:
        head = f"--{boundary}\r\nContent-Type: {part.content_type}\r\n"
        if part.location:
            head += f"Content-Location: {part.location}\r\n"
        yield (head + "\r\n").encode()
        if part.data is not None:
            yield part.data
        elif part.path is not None:
            async for chunk in _file_chunks(part.path):
                yield chunk
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


async def _file_chunks(path: Path) -> AsyncIterator[bytes]:
    fh = await asyncio.to_thread(path.open, "rb")
    try:
        while True:
            chunk = await asyncio.to_thread(fh.read, _CHUNK)
            if not chunk:
                return
            yield chunk
    finally:
        fh.close()


def base_url(request: web.Request) -> str:
    """The DICOMweb root as the client sees it (behind a trusted proxy: its scheme and host)."""
    return f"{request.scheme}://{request.host}/dicomweb"


# -- CORS -------------------------------------------------------------------------------

_CORS_METHODS = "GET, POST, DELETE, OPTIONS"
_CORS_HEADERS = "Authorization, Accept, Content-Type, X-Request-Id"


def _allowed_origin(request: web.Request) -> str | None:
    origin = request.headers.get("Origin")
    if not origin or not request.path.startswith(("/dicomweb", "/wado")):
        return None
    return origin if origin in request.app[SETTINGS].cors_origins else None


async def preflight(request: web.Request) -> web.Response:
    """CORS preflight for DICOMweb; answered without authentication, as browsers require."""
    origin = _allowed_origin(request)
    if origin is None:
        return web.Response(status=403, text="origin not allowed")
    return web.Response(
        status=204,
        headers={
            "Access-Control-Allow-Origin": origin,
            "Access-Control-Allow-Methods": _CORS_METHODS,
            "Access-Control-Allow-Headers": _CORS_HEADERS,
            "Access-Control-Max-Age": "600",
            "Vary": "Origin",
        },
    )


async def add_cors_headers(request: web.Request, response: web.StreamResponse) -> None:
    """``on_response_prepare``: DICOMweb responses to an allowed origin carry its name."""
    origin = _allowed_origin(request)
    if origin is not None:
        response.headers["Access-Control-Allow-Origin"] = origin
        response.headers["Access-Control-Expose-Headers"] = "Content-Type, Content-Location"
        response.headers["Vary"] = "Origin"

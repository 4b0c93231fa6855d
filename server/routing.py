"""Declared API routes: one table drives validation, authorisation, the handlers and OpenAPI.

A route states its method and path, the :class:`~server.policy.Action` it needs (or that it is
public), and the pydantic models of its body, query and response. The router

1. opens one unit of work (an ``AsyncSession`` and its transaction) for the request,
2. authenticates the caller and checks CSRF for cookie-authenticated writes,
3. asks the policy layer whether the caller's roles allow the route's action,
4. validates path, query and body against the declared models,
5. runs the handler and commits, or rolls back on any error.

The OpenAPI document is generated from the same table and models, so it cannot drift.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, cast

from aiohttp import web
from pydantic import BaseModel, ConfigDict, TypeAdapter, ValidationError
from pydantic.json_schema import models_json_schema
from sqlalchemy.ext.asyncio import AsyncSession

from server.audit import Actor, Entry, record
from server.events import PendingEvent
from server.events import write as write_events
from server.keys import ANNOUNCE, AUTHENTICATOR, CLIENT_ADDRESS, REQUEST_ID, SESSIONS
from server.policy import Action, Principal, require
from server.problems import (
    CSRFRejected,
    MalformedJSON,
    NotFound,
    UnsupportedMediaType,
    ValidationFailed,
)

BodyT = TypeVar("BodyT")
QueryT = TypeVar("QueryT")

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
_PATH_PARAM = re.compile(r"\{([a-z_]+)\}")


class RequestModel(BaseModel):
    """Base of request bodies: unknown fields and type coercions are refused."""

    model_config = ConfigDict(extra="forbid", strict=True, str_strip_whitespace=True)


class QueryModel(BaseModel):
    """Base of query strings: unknown parameters are refused; values arrive as text."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class ResponseModel(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class NoQuery(QueryModel):
    pass


@dataclass(slots=True)
class Call(Generic[BodyT, QueryT]):
    """What a handler gets: the request, its caller, its unit of work and validated input."""

    request: web.Request
    session: AsyncSession
    principal_or_none: Principal | None
    body: BodyT
    query: QueryT
    path: dict[str, Any]
    commit_on_error: bool = False
    pending_events: list[PendingEvent] = field(default_factory=list)

    @property
    def principal(self) -> Principal:
        if self.principal_or_none is None:  # pragma: no cover - the router guarantees it
            raise RuntimeError("route is public; no principal")
        return self.principal_or_none

    @property
    def app(self) -> web.Application:
        return self.request.app

    @property
    def client_address(self) -> str:
        return client_address(self.request)

    def actor(self, *, username: str = "") -> Actor:
        p = self.principal_or_none
        return Actor(
            user_id=p.user_id if p else None,
            username=p.username if p else username,
            institution_id=p.institution_id if p else None,
            client_address=self.client_address,
            request_id=self.request[REQUEST_ID],
        )

    async def audit(self, *entries: Entry) -> None:
        await record(self.session, self.actor(), entries)

    async def audit_many(self, entries: Iterable[Entry]) -> None:
        await record(self.session, self.actor(), entries)

    def publish(
        self,
        streams: Iterable[str],
        type: str,
        *,
        consult_id: uuid.UUID | None = None,
        payload: dict[str, Any] | None = None,
    ) -> None:
        """Stage an event; it is written with this request's transaction, or not at all."""
        self.pending_events.append(
            PendingEvent(tuple(streams), type, consult_id, dict(payload or {}))
        )


def client_address(request: web.Request) -> str:
    return request.get(CLIENT_ADDRESS) or (request.remote or "")[:64]


Handler = Callable[[Call[Any, Any]], Awaitable[Any]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    handler: Handler
    action: Action | None
    summary: str
    tags: tuple[str, ...]
    body: type[BaseModel] | None = None
    query: type[BaseModel] | None = None
    response: type[BaseModel] | None = None
    status: int = 200
    path_types: dict[str, Any] = field(default_factory=dict)
    errors: tuple[int, ...] = ()
    description: str = ""
    #: The handler reads the body itself as a byte stream (uploads); documented as binary.
    raw_body: bool = False
    #: Media type(s) of a binary success response (downloads, PDF, images); documented as binary.
    produces: str | tuple[str, ...] | None = None

    @property
    def public(self) -> bool:
        return self.action is None

    @property
    def path_params(self) -> list[str]:
        return _PATH_PARAM.findall(self.path)

    def param_type(self, name: str) -> Any:
        if name in self.path_types:
            return self.path_types[name]
        return uuid.UUID if name.endswith("_id") else str

    @property
    def operation_id(self) -> str:
        return self.handler.__name__

    @property
    def error_statuses(self) -> tuple[int, ...]:
        statuses = set(self.errors)
        if not self.public:
            statuses |= {401, 403}
        if self.body is not None:
            statuses |= {400, 413, 415, 422}
        if self.raw_body:
            statuses.add(413)
        if self.query is not None and self.query is not NoQuery:
            statuses.add(422)
        if self.path_params:
            statuses.add(404)
        return tuple(sorted(statuses))


class Router:
    def __init__(self) -> None:
        self.routes: list[Route] = []

    def route(
        self,
        method: str,
        path: str,
        *,
        action: Action | None,
        summary: str,
        tags: Sequence[str],
        body: type[BaseModel] | None = None,
        query: type[BaseModel] | None = None,
        response: type[BaseModel] | None = None,
        status: int = 200,
        path_types: dict[str, Any] | None = None,
        errors: Sequence[int] = (),
        raw_body: bool = False,
        produces: str | tuple[str, ...] | None = None,
    ) -> Callable[[Handler], Handler]:
        def register(handler: Handler) -> Handler:
            self.routes.append(
                Route(
                    method=method,
                    path=path,
                    handler=handler,
                    action=action,
                    summary=summary,
                    tags=tuple(tags),
                    body=body,
                    query=query,
                    response=response,
                    status=status,
                    path_types=dict(path_types or {}),
                    errors=tuple(errors),
                    description=(handler.__doc__ or "").strip(),
                    raw_body=raw_body,
                    produces=produces,
                )
            )
            return handler

        return register

    def include(self, other: Router) -> None:
        self.routes.extend(other.routes)

    def install(self, app: web.Application) -> None:
        for route in self.routes:
            app.router.add_route(
                route.method, route.path, _endpoint(route), name=route.operation_id
            )


def _endpoint(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    adapters = {name: TypeAdapter(route.param_type(name)) for name in route.path_params}

    async def endpoint(request: web.Request) -> web.StreamResponse:
        factory = request.app[SESSIONS]
        async with factory() as session:
            call: Call[Any, Any] | None = None
            try:
                principal: Principal | None = None
                if route.action is not None:
                    auth = request.app[AUTHENTICATOR]
                    principal = await auth.authenticate(request, session)
                    if (
                        principal.via_cookie
                        and request.method in UNSAFE_METHODS
                        and not auth.csrf_valid(request, principal)
                    ):
                        raise CSRFRejected("send the X-CSRF-Token header given at sign-in")
                    require(principal, route.action)
                path = _parse_path(request, adapters)
                query = _parse_query(request, route.query)
                body = await _parse_body(request, route.body)
                call = Call(
                    request=request,
                    session=session,
                    principal_or_none=principal,
                    body=body,
                    query=query,
                    path=path,
                )
                result = await route.handler(call)
                event_ids = await write_events(session, call.pending_events)
                await session.commit()
            except BaseException:
                if call is not None and call.commit_on_error:
                    await session.commit()
                else:
                    await session.rollback()
                raise
        if event_ids and ANNOUNCE in request.app:
            await request.app[ANNOUNCE](event_ids)
        return _render(result, route)

    endpoint.__name__ = route.operation_id
    return endpoint


def _parse_path(request: web.Request, adapters: dict[str, TypeAdapter[Any]]) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name, adapter in adapters.items():
        try:
            values[name] = adapter.validate_python(request.match_info[name])
        except ValidationError:
            raise NotFound(f"no such {name.removesuffix('_id')}") from None
    return values


def _parse_query(request: web.Request, model: type[BaseModel] | None) -> Any:
    if model is None:
        if request.query:
            raise ValidationFailed("this route takes no query parameters")
        return None
    raw: dict[str, Any] = {}
    for key in request.query:
        values = request.query.getall(key)
        annotation = model.model_fields.get(key)
        is_list = annotation is not None and _is_list(annotation.annotation)
        raw[key] = values if is_list else values[-1]
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ValidationFailed(errors=_errors(exc, "query")) from None


def _is_list(annotation: Any) -> bool:
    return getattr(annotation, "__origin__", None) in (list, tuple)


async def _parse_body(request: web.Request, model: type[BaseModel] | None) -> Any:
    if model is None:
        return None
    if request.content_type != "application/json":
        raise UnsupportedMediaType("send the body as application/json")
    raw = await request.read()  # bounded by the application's client_max_size
    if not raw:
        raise MalformedJSON("the body is empty")
    try:
        json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise MalformedJSON("the body is not valid UTF-8 JSON") from None
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise ValidationFailed(errors=_errors(exc, "body")) from None


def _errors(exc: ValidationError, where: str) -> list[dict[str, Any]]:
    """Validation errors without the offending input values (they may be patient data)."""
    return [
        {"loc": [where, *[str(p) for p in err["loc"]]], "msg": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_input=False, include_context=False)
    ]


def _render(result: Any, route: Route) -> web.StreamResponse:
    if isinstance(result, web.StreamResponse):
        return result
    if result is None:
        return web.Response(status=204 if route.status == 200 else route.status)
    if isinstance(result, BaseModel):
        return web.Response(
            status=route.status,
            body=result.model_dump_json().encode(),
            content_type="application/json",
        )
    raise TypeError(f"handler {route.operation_id} returned {type(result).__name__}")


# -- OpenAPI ----------------------------------------------------------------------------

PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details",
    "required": ["type", "title", "status", "code", "request_id"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "title_zh": {"type": "string"},
        "status": {"type": "integer"},
        "code": {"type": "string"},
        "detail": {"type": "string"},
        "request_id": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
        "retry_after": {"type": "integer"},
    },
}

_STATUS_TEXT = {
    400: "Malformed request",
    401: "Not signed in, or the token is invalid or expired",
    403: "The caller's roles do not allow this, or a CSRF token is missing",
    404: "Not found, or not visible to the caller",
    409: "Conflicts with the current state",
    413: "Body too large",
    415: "Body is not JSON",
    422: "Validation failed",
    429: "Too many attempts",
}


def openapi_document(routes: Iterable[Route], *, title: str, version: str) -> dict[str, Any]:
    routes = list(routes)
    models: list[tuple[type[BaseModel], Any]] = []
    for r in routes:
        if r.body is not None:
            models.append((r.body, "validation"))
        if r.query is not None:
            models.append((r.query, "validation"))
        if r.response is not None:
            models.append((r.response, "serialization"))
    keys, top = models_json_schema(
        list(dict.fromkeys(models)), ref_template="#/components/schemas/{model}"
    )
    schemas: dict[str, Any] = dict(top.get("$defs", {}))
    schemas["Problem"] = PROBLEM_SCHEMA

    paths: dict[str, dict[str, Any]] = {}
    for r in routes:
        op: dict[str, Any] = {
            "operationId": r.operation_id,
            "summary": r.summary,
            "tags": list(r.tags),
            "responses": {},
        }
        if r.description:
            op["description"] = r.description
        if r.public:
            op["security"] = []
        else:
            op["x-huizhen-action"] = cast(Action, r.action).value
        params: list[dict[str, Any]] = []
        for name in r.path_params:
            params.append(
                {
                    "name": name,
                    "in": "path",
                    "required": True,
                    "schema": TypeAdapter(r.param_type(name)).json_schema(),
                }
            )
        if r.query is not None and r.query is not NoQuery:
            qschema = schemas.get(r.query.__name__) or r.query.model_json_schema()
            schemas.pop(r.query.__name__, None)
            required = set(qschema.get("required", []))
            for name, prop in qschema.get("properties", {}).items():
                param: dict[str, Any] = {
                    "name": name,
                    "in": "query",
                    "required": name in required,
                    "schema": prop,
                }
                if prop.get("type") == "array":
                    param["style"] = "form"
                    param["explode"] = True
                params.append(param)
        if params:
            op["parameters"] = params
        if r.body is not None:
            ref = keys[(r.body, "validation")]["$ref"]
            op["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": ref}}},
            }
        if r.raw_body:
            op["requestBody"] = {
                "required": True,
                "content": {"*/*": {"schema": {"type": "string", "format": "binary"}}},
            }
        ok: dict[str, Any] = {"description": "OK" if r.status < 300 else "Created"}
        if r.response is not None:
            ref = keys[(r.response, "serialization")]["$ref"]
            ok["content"] = {"application/json": {"schema": {"$ref": ref}}}
        elif r.produces is not None:
            kinds = (r.produces,) if isinstance(r.produces, str) else r.produces
            ok["content"] = {k: {"schema": _binary_schema(k)} for k in kinds}
        has_content = r.response is not None or r.produces is not None
        op["responses"][str(r.status if has_content else _empty_status(r))] = ok
        for status in r.error_statuses:
            op["responses"][str(status)] = {
                "description": _STATUS_TEXT.get(status, "Error"),
                "content": {
                    "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
                },
            }
        paths.setdefault(r.path, {})[r.method.lower()] = op

    return {
        "openapi": "3.1.0",
        "info": {
            "title": title,
            "version": version,
            "description": "会诊 Huizhen remote-consultation API; errors are problem+json.",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "cookie": {"type": "apiKey", "in": "cookie", "name": "huizhen_session"},
            },
        },
        "security": [{"bearer": []}, {"cookie": []}],
    }


def _binary_schema(media_type: str) -> dict[str, Any]:
    if media_type.endswith("json"):  # application/dicom+json: the DICOM JSON model
        return {"type": ["array", "object"], "description": "DICOM JSON (PS3.18 F.2)"}
    return {"type": "string", "format": "binary"}


def _empty_status(r: Route) -> int:
    return 204 if r.status == 200 else r.status

"""Domain errors rendered as RFC 9457 ``application/problem+json``.

Every error the API returns is a :class:`Problem`. A handler raises one; the error middleware
renders it. An exception that is not a Problem becomes a generic 500 carrying only the request id.
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

PROBLEM_CONTENT_TYPE = "application/problem+json"
TYPE_PREFIX = "urn:huizhen:problem:"


class Problem(Exception):
    """An error with an HTTP status, a stable machine code and a human title."""

    status: int = 500
    code: str = "internal-error"
    title: str = "Internal server error"
    title_zh: str = "服务器内部错误"

    def __init__(
        self,
        detail: str | None = None,
        *,
        headers: dict[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or self.title)
        self.detail = detail
        self.headers = headers or {}
        self.extensions = extensions

    def body(self, request_id: str) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "type": TYPE_PREFIX + self.code,
            "title": self.title,
            "title_zh": self.title_zh,
            "status": self.status,
            "code": self.code,
            "request_id": request_id,
        }
        if self.detail:
            doc["detail"] = self.detail
        doc.update(self.extensions)
        return doc

    def response(self, request_id: str) -> web.Response:
        return problem_response(self.status, self.body(request_id), self.headers)


def problem_response(
    status: int, body: dict[str, Any], headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        text=json.dumps(body, ensure_ascii=False),
        content_type=PROBLEM_CONTENT_TYPE,
        charset="utf-8",
        headers=headers,
    )


class BadRequest(Problem):
    status, code, title, title_zh = 400, "bad-request", "Bad request", "请求无效"


class MalformedJSON(Problem):
    status, code, title, title_zh = 400, "malformed-json", "Malformed JSON body", "JSON 格式错误"


class ValidationFailed(Problem):
    status, code, title, title_zh = (
        422,
        "validation",
        "Request validation failed",
        "请求数据校验失败",
    )


class Unauthenticated(Problem):
    status, code, title, title_zh = 401, "unauthenticated", "Authentication required", "需要登录"

    def __init__(self, detail: str | None = None, **extensions: Any) -> None:
        super().__init__(
            detail, headers={"WWW-Authenticate": 'Bearer realm="huizhen"'}, **extensions
        )


class TokenExpired(Unauthenticated):
    code, title, title_zh = "token-expired", "Session expired", "登录已过期"


class InvalidCredentials(Problem):
    status, code = 401, "invalid-credentials"
    title, title_zh = "Wrong username or password", "用户名或密码错误"


class WrongPassword(Problem):
    """The current password given to change it is wrong (the session itself is fine)."""

    status, code = 422, "wrong-password"
    title, title_zh = "Current password is wrong", "当前密码错误"


class Forbidden(Problem):
    status, code, title, title_zh = 403, "forbidden", "Not allowed", "无权访问"


class CSRFRejected(Problem):
    status, code = 403, "csrf"
    title, title_zh = "Missing or wrong CSRF token", "缺少或错误的 CSRF 令牌"


class NotFound(Problem):
    status, code, title, title_zh = 404, "not-found", "Not found", "未找到"


class MethodNotAllowed(Problem):
    status, code, title, title_zh = (
        405,
        "method-not-allowed",
        "Method not allowed",
        "不支持的请求方法",
    )


class NotAcceptable(Problem):
    status, code, title, title_zh = 406, "not-acceptable", "Not acceptable", "无法提供所需格式"


class Conflict(Problem):
    status, code, title, title_zh = 409, "conflict", "Conflict", "数据冲突"


class PayloadTooLarge(Problem):
    status, code, title, title_zh = 413, "payload-too-large", "Request body too large", "请求体过大"


class UnsupportedMediaType(Problem):
    status, code = 415, "unsupported-media-type"
    title, title_zh = "Unsupported media type", "不支持的内容类型"


class TooManyRequests(Problem):
    status, code, title, title_zh = 429, "too-many-requests", "Too many attempts", "尝试次数过多"

    def __init__(self, detail: str | None = None, *, retry_after: int) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)}, retry_after=retry_after)


class ServiceUnavailable(Problem):
    status, code, title, title_zh = 503, "unavailable", "Service unavailable", "服务暂不可用"


#: Statuses aiohttp itself may raise, mapped to our problem classes.
BY_STATUS: dict[int, type[Problem]] = {
    cls.status: cls
    for cls in (
        BadRequest,
        Unauthenticated,
        Forbidden,
        NotFound,
        MethodNotAllowed,
        NotAcceptable,
        Conflict,
        PayloadTooLarge,
        UnsupportedMediaType,
        ValidationFailed,
        TooManyRequests,
        ServiceUnavailable,
    )
}

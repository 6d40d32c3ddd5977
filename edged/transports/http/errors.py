"""Errors in OpenAI's shape, `{"error": {"message", "type", "code"}}`, with the fitting HTTP status."""

from __future__ import annotations

import json
from typing import Any, Final

from aiohttp import web

# wire code -> (HTTP status, OpenAI error type)
STATUS: Final[dict[str, tuple[int, str]]] = {
    "bad_request": (400, "invalid_request_error"),
    "unauthorized": (401, "authentication_error"),
    "permission_denied": (403, "permission_error"),
    "not_found": (404, "not_found_error"),
    "method_not_allowed": (405, "invalid_request_error"),
    "too_large": (413, "invalid_request_error"),
    "busy": (429, "rate_limit_error"),
    "model_unavailable": (503, "server_error"),
    "deadline_exceeded": (504, "timeout_error"),
    "cancelled": (503, "server_error"),
    "internal": (500, "server_error"),
}
# How long a client told "busy" should wait: one short answer on a small board.
RETRY_AFTER_S: Final = 1


def error_body(code: str, message: str) -> dict[str, Any]:
    _, kind = STATUS.get(code, STATUS["internal"])
    return {"error": {"message": message, "type": kind, "code": code, "param": None}}


def error_response(code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    status, _ = STATUS.get(code, STATUS["internal"])
    extra = dict(headers or {})
    if code == "busy":
        extra.setdefault("Retry-After", str(RETRY_AFTER_S))
    return web.Response(status=status, body=json.dumps(error_body(code, message)).encode(),
                        content_type="application/json", headers=extra)


def from_http_exception(exc: web.HTTPException) -> web.Response:
    """aiohttp's own refusals (no route, wrong method, body too large) in OpenAI's shape."""
    if exc.status == 404:
        return error_response("not_found", "no such endpoint; see GET /v1/models, POST /v1/chat/completions, "
                                           "POST /v1/completions, GET /health, GET /metrics")
    if exc.status == 405:
        allowed = getattr(exc, "allowed_methods", None) or ()
        return error_response("method_not_allowed", f"method not allowed here; use {', '.join(sorted(allowed))}",
                              {"Allow": ",".join(sorted(allowed))})
    if exc.status == 413:
        return error_response("too_large", f"request body too large: {exc.text or ''}".strip())
    return error_response("bad_request" if 400 <= exc.status < 500 else "internal", exc.reason or "error")

"""Errors in OpenAI's shape, `{"error": {"message", "type", "code"}}`, with the fitting HTTP status."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Final

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


JSON_TYPE: Final = "application/json"


@dataclass(frozen=True)
class Response:
    """A whole response; the server adds Content-Length."""

    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def json_response(obj: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()
    return Response(status, body, {"Content-Type": JSON_TYPE, **(headers or {})})


def error_body(code: str, message: str) -> dict[str, Any]:
    _, kind = STATUS.get(code, STATUS["internal"])
    return {"error": {"message": message, "type": kind, "code": code, "param": None}}


def error_response(code: str, message: str, headers: dict[str, str] | None = None, *, close: bool = False) -> Response:
    """`close`: the connection ends after this answer (the request could not be read to its end)."""
    status, _ = STATUS.get(code, STATUS["internal"])
    extra = dict(headers or {})
    if code == "busy":
        extra.setdefault("Retry-After", str(RETRY_AFTER_S))
    if close:
        extra["Connection"] = "close"
    return json_response(error_body(code, message), status, extra)


def not_found() -> Response:
    return error_response("not_found", "no such endpoint; see GET /v1/models, POST /v1/chat/completions, "
                                       "POST /v1/completions, GET /health, GET /metrics")


def method_not_allowed(allowed: list[str]) -> Response:
    return error_response("method_not_allowed", f"method not allowed here; use {', '.join(sorted(allowed))}",
                          {"Allow": ",".join(sorted(allowed))})

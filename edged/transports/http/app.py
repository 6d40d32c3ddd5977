"""The HTTP transport: the OpenAI routes, /health and /metrics on the Unix socket and, optionally, TCP.

The protocol is h11's, the connection handling ours (server.py). Measured against aiohttp, which
served this API first: `import aiohttp` costs 100-130 ms of interpreter time (it loads its whole
client) and, whether paid before READY or after it, that time lands on start-up or on the first
request after a start; h11 costs ~6 ms. uvicorn (26 ms) would need an ASGI app that never sees the
connection's socket, and the peer credentials come from that socket.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

import structlog

from edged.errors import ConfigError, EdgedError, RequestError
from edged.ports import ApiKeyPort
from edged.transports.http.auth import CALLER, Access, Caller
from edged.transports.http.errors import Response, error_response, json_response, method_not_allowed, not_found
from edged.transports.http.openai_api import MODEL_PREFIX, OpenAIRoutes, Submit
from edged.transports.http.request import HttpRequest
from edged.transports.http.server import HttpServer
from edged.transports.http.settings import HttpSettings, Listener, check_listen

logger = structlog.get_logger(__name__)

KEY_CHECK_S = 2.0  # how soon a new or revoked API key takes effect without SIGHUP
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class HttpTransport:
    def __init__(self, settings: HttpSettings, submit: Submit, model_name: Callable[[], str],
                 health: Callable[[], tuple[int, dict[str, Any]]], metrics: Callable[[], str],
                 keys: ApiKeyPort) -> None:
        check_listen(settings)
        self.settings = settings
        self.keys = keys  # crypto.api_keys.ApiKeyStore over settings.keys_path, built by http_service
        self._access = Access(settings.plaintext_uids, settings.plaintext_gids, self.keys)
        self._health = health
        self._metrics = metrics
        openai = OpenAIRoutes(submit, model_name)
        self._routes: dict[str, dict[str, Callable[[HttpRequest], Awaitable[Response | None]]]] = {
            "/v1/chat/completions": {"POST": openai.chat},
            "/v1/completions": {"POST": openai.completions},
            "/v1/models": {"GET": openai.models},
            MODEL_PREFIX: {"GET": openai.model},  # /v1/models/{model}
            "/health": {"GET": self.health},
            "/metrics": {"GET": self.metrics},
        }
        self._server = HttpServer(self._guard, max_body_bytes=settings.max_body_bytes)
        self._key_task: asyncio.Task[None] | None = None

    async def start(self, listeners: list[Listener]) -> None:
        """Serve on sockets bound by `settings.bind_listeners` (they are closed by `stop_listening`)."""
        try:
            self.keys.refresh()
        except ConfigError as exc:
            logger.error("api keys unreadable; TCP clients are refused until it is fixed", error=str(exc))
        for sock, context in listeners:
            await self._server.serve(sock, context)
        self._key_task = asyncio.create_task(self._watch_keys(), name="http-api-keys")
        logger.info("listening", transport="http", path=str(self.settings.socket_path), mode=oct(self.settings.mode),
                    listen=self.settings.listen, tls=self.settings.tls_cert is not None)

    def reload_keys(self) -> None:
        """SIGHUP: re-read the API keys now (a broken file raises ConfigError; the old keys stay)."""
        self.keys.refresh(force=True)

    async def _watch_keys(self) -> None:
        while True:
            await asyncio.sleep(KEY_CHECK_S)
            try:
                self.keys.refresh()
            except EdgedError as exc:
                logger.error("api keys unreadable; keeping the previous keys", error=str(exc))

    async def stop_listening(self) -> None:
        """No new connections; requests in flight go on until the core has drained."""
        self._server.stop_listening()
        self.settings.socket_path.unlink(missing_ok=True)

    async def close(self) -> None:
        if self._key_task is not None:
            self._key_task.cancel()
            await asyncio.gather(self._key_task, return_exceptions=True)
        await self._server.close(timeout_s=2.0)

    # ---- every request ---------------------------------------------------------------------
    def _route(self, request: HttpRequest) -> Callable[[HttpRequest], Awaitable[Response | None]] | Response:
        path = request.path
        if path == MODEL_PREFIX:
            path = ""  # /v1/models/ names no model
        elif path.startswith(MODEL_PREFIX):
            path = MODEL_PREFIX
        methods = self._routes.get(path)
        if methods is None:
            return not_found()
        method = "GET" if request.method == "HEAD" else request.method
        handler = methods.get(method)
        if handler is None:
            allowed = list(methods) + (["HEAD"] if "GET" in methods else [])
            return method_not_allowed(allowed)
        return handler

    async def _guard(self, request: HttpRequest) -> Response | None:
        caller = self._access.check(request)
        if isinstance(caller, Response):
            logger.info("http refused", path=request.path, status=caller.status)
            return caller
        request.state[CALLER] = caller
        handler = self._route(request)
        if isinstance(handler, Response):
            return handler
        try:
            return await handler(request)
        except RequestError as exc:
            if request.streaming:
                raise
            return error_response(exc.code, exc.message)

    async def health(self, request: HttpRequest) -> Response:
        status, body = self._health()
        return json_response(body, status=status)

    async def metrics(self, request: HttpRequest) -> Response:
        return Response(200, self._metrics().encode(), {"Content-Type": METRICS_TYPE})


__all__ = ["Caller", "HttpSettings", "HttpTransport"]

"""The HTTP transport: one aiohttp application served on the Unix socket and, optionally, TCP.

aiohttp, not uvicorn: it gives the handler the connection's socket (peer credentials without
reaching into server internals), serves a Unix socket, TCP and TLS from one runner, streams with
backpressure, and cancels a handler whose client hung up (handler_cancellation), which is how a
disconnect stops generation at the next token.
"""

from __future__ import annotations

import asyncio
from typing import Any, Awaitable, Callable

import structlog
from aiohttp import web

from edged.errors import ConfigError, EdgedError, RequestError
from edged.ports import ApiKeyPort
from edged.transports.http.auth import CALLER, Access, Caller
from edged.transports.http.errors import error_response, from_http_exception
from edged.transports.http.openai_api import OpenAIRoutes, Submit
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
        self._routes = OpenAIRoutes(submit, model_name)
        self._runner: web.AppRunner | None = None
        self._sites: list[web.BaseSite] = []
        self._key_task: asyncio.Task[None] | None = None

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=self.settings.max_body_bytes, middlewares=[self._guard])
        self._routes.add_to(app)
        app.router.add_get("/health", self.health)
        app.router.add_get("/metrics", self.metrics)
        return app

    async def start(self, listeners: list[Listener]) -> None:
        """Serve on sockets bound by `settings.bind_listeners` (they are closed by `stop_listening`)."""
        try:
            self.keys.refresh()
        except ConfigError as exc:
            logger.error("api keys unreadable; TCP clients are refused until it is fixed", error=str(exc))
        self._runner = web.AppRunner(self._app(), handler_cancellation=True, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        for sock, context in listeners:
            site = web.SockSite(self._runner, sock, ssl_context=context)
            await site.start()
            self._sites.append(site)
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
        for site in self._sites:
            await site.stop()
        self._sites.clear()
        self.settings.socket_path.unlink(missing_ok=True)

    async def close(self) -> None:
        if self._key_task is not None:
            self._key_task.cancel()
            await asyncio.gather(self._key_task, return_exceptions=True)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ---- every request ---------------------------------------------------------------------
    @web.middleware
    async def _guard(self, request: web.Request,
                     handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        caller = self._access.check(request)
        if isinstance(caller, web.Response):
            logger.info("http refused", path=request.path, status=caller.status)
            return caller
        request[CALLER] = caller
        try:
            return await handler(request)
        except web.HTTPException as exc:
            return from_http_exception(exc)
        except RequestError as exc:
            return error_response(exc.code, exc.message)

    async def health(self, request: web.Request) -> web.Response:
        status, body = self._health()
        return web.json_response(body, status=status)

    async def metrics(self, request: web.Request) -> web.Response:
        return web.Response(text=self._metrics(), headers={"Content-Type": METRICS_TYPE})


__all__ = ["Caller", "HttpSettings", "HttpTransport"]

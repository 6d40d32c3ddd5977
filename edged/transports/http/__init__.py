"""The OpenAI-compatible HTTP API (h11 under a small asyncio server), on a Unix socket and optionally TCP.

Importing this package is free; `edged.transports.http.app` pulls in h11 and is imported only
when `[http] enabled` is true. Like the frame socket, this transport only turns HTTP into typed
requests for the core and the core's events back into OpenAI JSON or server-sent events.
"""

"""structlog set-up: JSON lines under systemd or in a pipe, readable console on a terminal."""

from __future__ import annotations

import logging
import sys
from typing import Any

import structlog

# Keys that may carry prompt text or key material; they are dropped unless prompt logging is on.
SENSITIVE_KEYS = frozenset({"prompt", "messages", "content", "text", "answer", "body", "key", "secret",
                            "private_key", "resp_secret", "plaintext"})


def _redact(_: Any, __: str, event: dict[str, Any]) -> dict[str, Any]:
    for key in SENSITIVE_KEYS.intersection(event):
        event[key] = "[redacted]"
    return event


def configure_logging(level: str = "info", fmt: str = "auto", log_prompts: bool = False,
                      stream: Any = None) -> None:
    stream = stream or sys.stderr
    console = fmt == "console" or (fmt == "auto" and stream.isatty())
    processors: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    if not log_prompts:
        processors.append(_redact)
    processors.append(structlog.processors.format_exc_info if not console else structlog.dev.set_exc_info)
    renderer: Any = structlog.dev.ConsoleRenderer() if console else structlog.processors.JSONRenderer()
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelNamesMapping()[level.upper()]),
        logger_factory=structlog.PrintLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )
    # Libraries log through stdlib logging (paho, onnxruntime); keep them quiet but visible on warnings.
    logging.basicConfig(level=logging.WARNING, stream=stream, format="%(levelname)s %(name)s: %(message)s")

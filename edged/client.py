"""edged's Python client API under one name: `from edged.client import SocketClient, json_schema_format, ...`.

The code lives in `edged.clients` (the socket client here, the sealed MQTT client in
`edged.clients.mqtt`, which needs paho and is imported only when asked for).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from edged.clients.socket import Answer, SocketClient, answer_of, event_of, function_tool, json_schema_format, tool_choice

if TYPE_CHECKING:
    from edged.clients.mqtt import SealedMqttClient

__all__ = ["Answer", "SealedMqttClient", "SocketClient", "answer_of", "event_of", "function_tool",
           "json_schema_format", "tool_choice"]


def __getattr__(name: str) -> Any:
    if name == "SealedMqttClient":
        from edged.clients.mqtt import SealedMqttClient  # noqa: PLC0415  (paho only when asked for)

        return SealedMqttClient
    raise AttributeError(f"module 'edged.client' has no attribute {name!r}")

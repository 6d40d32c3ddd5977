"""What a transport needs from the rest of the daemon, as Protocols: the core and the sealed gateway.

Transports depend on these shapes, never on edged.core or edged.crypto, so they can be tested with
small fakes and never import the engine, the power code or the security package.
"""

from __future__ import annotations

from typing import Any, Protocol

from edged.messages import ChatRequest


class CorePort(Protocol):
    """edged.core.Core as a transport uses it: submit one request, get a job whose events it relays."""

    def submit(self, request: ChatRequest, *, transport: str, peer: str, client: str | None = None,
               request_id: str | None = None) -> Any: ...


class ExchangePort(Protocol):
    """One opened sealed request (edged.crypto.gateway.SealedExchange): who sent it and how to seal the answer."""

    @property
    def request_id(self) -> str: ...
    @property
    def client_label(self) -> str: ...

    def seal(self, obj: dict[str, Any], *, final: bool, error: bool = False) -> bytes: ...


class GatewayPort(Protocol):
    """edged.crypto.gateway.SealedGateway as a transport uses it: open, admit (rate and parse), then seal."""

    def open(self, data: bytes, request_topic: str) -> ExchangePort: ...
    def admit(self, exchange: Any) -> ChatRequest: ...

"""The seams between the daemon's parts, as Protocols: what a transport or feature may call.

Transports and features (MQTT requests, commands, presence, telemetry, updates, the socket) are
typed against these, never against the concrete classes, so they can be read and tested alone:
``CorePort`` is ``edged.core.Core``, ``GatewayPort`` is ``edged.crypto.gateway.SealedGateway``,
``ControlPort`` is ``edged.control.DeviceControl``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from edged.engines.base import Engine, ModelInfo
    from edged.job import Job
    from edged.messages import ChatRequest
    from edged.state import DeviceState, InstallState, PowerState


class CorePort(Protocol):
    """Admission into the one core; raises a RequestError at once when the request is refused."""

    def submit(self, request: ChatRequest, *, transport: str, peer: str, client: str | None = None,
               request_id: str | None = None) -> Job: ...


class ModelCorePort(CorePort, Protocol):
    """The core as the updater sees it: it also swaps the model between requests."""

    async def swap_engine(self, engine: Engine) -> ModelInfo: ...


class OpenedPort(Protocol):
    """The authenticated parts of a sealed request (``crypto.envelope.OpenedRequest``)."""

    @property
    def req_id(self) -> bytes: ...
    @property
    def body(self) -> bytes: ...
    @property
    def resp_topic(self) -> str: ...


class ExchangePort(Protocol):
    """One opened sealed request and the way to answer it (``crypto.gateway.SealedExchange``)."""

    @property
    def opened(self) -> OpenedPort: ...
    @property
    def request_id(self) -> str: ...
    @property
    def client_label(self) -> str: ...
    @property
    def resp_topic(self) -> str: ...

    def seal(self, obj: dict[str, Any], *, final: bool, error: bool = False) -> bytes: ...


class GatewayPort(Protocol):
    """The one security path: open (checks 1-10, raises EnvelopeRejected), admit, seal."""

    def open(self, data: bytes, request_topic: str) -> ExchangePort: ...
    def admit(self, exchange: Any) -> ChatRequest: ...
    def may_command(self, exchange: Any) -> bool: ...
    def check_rate(self, exchange: Any) -> None: ...


class ControlPort(Protocol):
    """What the device can be asked and told, whatever the transport (see edged/control.py)."""

    def status(self) -> dict[str, Any]: ...
    def override_profile(self, name: str, source: str) -> dict[str, Any]: ...
    def describe(self) -> dict[str, Any]: ...
    def device_state(self) -> DeviceState: ...
    def power_state(self) -> PowerState: ...
    def prekey_reply(self) -> dict[str, str]: ...
    def prekey_record(self) -> bytes: ...
    def model_name(self) -> str: ...
    def add_status_section(self, name: str, provider: Callable[[], dict[str, Any]]) -> None: ...


class UpdateControlPort(Protocol):
    """What the update service needs of the device besides the core."""

    @property
    def configured_model(self) -> Path: ...
    def downloads_allowed(self) -> bool: ...
    def install_state(self) -> InstallState: ...


class ApiKeyPort(Protocol):
    """The HTTP API's bearer keys (``crypto.api_keys.ApiKeyStore``): re-read when changed, checked per request."""

    def __len__(self) -> int: ...
    def refresh(self, *, force: bool = False) -> bool: ...
    def check(self, presented: str) -> str | None: ...

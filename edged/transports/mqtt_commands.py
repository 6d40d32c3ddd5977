"""Operator commands over MQTT: sealed (e2e-v1) like requests, accepted only from clients allowed to command.

A command is an e2e-v1 request published to `<prefix>/<device>/cmd` whose body is one JSON command; the
answer is one sealed FINAL chunk on the request's authenticated response topic. See docs/protocol.md.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Callable, Literal

import structlog
from pydantic import Field, TypeAdapter, ValidationError

from edged.validation import StrictModel, describe_validation_error
from edged.errors import BadRequest, EnvelopeRejected, RequestError, Unauthorized
from edged.transports.topics import DeviceTopics

logger = structlog.get_logger(__name__)


class _Command(StrictModel):
    pad: str | None = Field(None, max_length=65536, description="length-hiding padding; ignored")


class ProfileCommand(_Command):
    """Pin a power profile (a remote override; a local one wins), or hand back to the governor with `auto`."""

    command: Literal["profile"]
    set: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")


class StatusCommand(_Command):
    """Republish the retained birth status now and answer with the device status."""

    command: Literal["status"]


Command = ProfileCommand | StatusCommand
_COMMAND = TypeAdapter(Command)


def parse_command(body: bytes) -> Command:
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadRequest(f"command is not valid JSON: {exc}") from None
    try:
        return _COMMAND.validate_python(data)
    except ValidationError as exc:
        raise BadRequest(describe_validation_error(exc, "command", separator="; ")) from None


class MqttCommands:
    def __init__(self, link: Any, topics: DeviceTopics, gateway: Any,
                 on_profile: Callable[[str], dict[str, Any]], on_status: Callable[[], dict[str, Any]]) -> None:
        self._link = link
        self._topics = topics
        self._gateway = gateway
        self._on_profile = on_profile
        self._on_status = on_status
        self._inbox: Any = None
        self._reader: asyncio.Task[None] | None = None
        self.dropped = 0

    async def start(self) -> None:
        self._inbox = self._link.inbox(asyncio.get_running_loop(), 64)
        self._link.subscribe(self._topics.commands, 1, self._inbox)
        self._reader = asyncio.create_task(self._read_forever(), name="mqtt-commands")

    async def close(self) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)

    async def _read_forever(self) -> None:
        while True:
            message = await self._inbox.get()
            try:
                self._command_from_mqtt(message)
            except Exception:
                logger.exception("mqtt command handling failed")

    def _command_from_mqtt(self, message: Any) -> None:
        try:
            exchange = self._gateway.open(message.payload, message.topic)
        except EnvelopeRejected:
            self.dropped += 1
            return
        try:
            if not self._gateway.may_command(exchange):
                raise Unauthorized(f"client {exchange.client_label!r} may not send commands "
                                   "(allow-list entry without commands = true)")
            self._gateway.check_rate(exchange)
            command = parse_command(exchange.opened.body)
            logger.info("mqtt command", command=command.command, client=exchange.client_label)
            reply = (self._on_profile(command.set) if isinstance(command, ProfileCommand) else self._on_status())
            self._reply(exchange, {"ok": True, **reply}, error=False)
        except RequestError as exc:
            self._reply(exchange, exc.to_wire(), error=True)

    def _reply(self, exchange: Any, obj: dict[str, Any], error: bool) -> None:
        self._link.publish(exchange.resp_topic, exchange.seal(obj, final=True, error=error), qos=1,
                           correlation_data=exchange.opened.req_id)

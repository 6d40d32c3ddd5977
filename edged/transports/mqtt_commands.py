"""Operator commands over MQTT: sealed (e2e-v1) like requests, accepted only from clients allowed to command.

A command is an e2e-v1 request published to `<prefix>/<device>/cmd` whose body is one JSON command; the
answer is one sealed FINAL chunk on the request's authenticated response topic. See docs/protocol.md.
"""

from __future__ import annotations

from typing import Any, Callable, Literal

import structlog
from pydantic import Field, TypeAdapter, ValidationError

from edged.validation import StrictModel, describe_validation_error
from edged.errors import BadRequest, ClockNotSynchronised, EnvelopeRejected, RequestError, Unauthorized
from edged.jsonbody import load_json
from edged.mqtt.feature import LinkPort, MqttFeature
from edged.mqtt.inbound import InboundMessage
from edged.ports import ControlPort, ExchangePort, GatewayPort
from edged.topics import DeviceTopics

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
    data = load_json(body, "command")
    try:
        return _COMMAND.validate_python(data)
    except ValidationError as exc:
        raise BadRequest(describe_validation_error(exc, "command", separator="; ")) from None


class MqttCommands(MqttFeature):
    name = "mqtt-commands"

    def __init__(self, topics: DeviceTopics, gateway: GatewayPort, control: ControlPort,
                 on_status: Callable[[], None] | None = None) -> None:
        super().__init__()
        self._topics = topics
        self._gateway = gateway
        self._control = control
        self._on_status = on_status  # the session republishes the birth status on a status command
        self.dropped = 0

    async def start(self, link: LinkPort) -> None:
        await super().start(link)
        self.subscribe(self._topics.commands, 1, 64, self._command_from_mqtt)

    async def close(self) -> None:
        await self.stop()

    def _command_from_mqtt(self, message: InboundMessage) -> None:
        try:
            exchange = self._gateway.open(message.payload, message.topic)
        except ClockNotSynchronised as exc:  # authenticated: told why, sealed
            self._reply(exc.exchange, exc.answer().to_wire(), error=True)  # type: ignore[arg-type]
            return
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
            reply = (self._control.override_profile(command.set, "remote") if isinstance(command, ProfileCommand)
                     else self._status())
            self._reply(exchange, {"ok": True, **reply}, error=False)
        except RequestError as exc:
            self._reply(exchange, exc.to_wire(), error=True)

    def _status(self) -> dict[str, Any]:
        if self._on_status is not None:
            self._on_status()
        return self._control.status()

    def _reply(self, exchange: ExchangePort, obj: dict[str, Any], error: bool) -> None:
        self.link.publish(exchange.resp_topic, exchange.seal(obj, final=True, error=error), qos=1,
                           correlation_data=exchange.opened.req_id)

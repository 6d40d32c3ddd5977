"""MQTT link of edged: a disciplined paho-mqtt 2.x client, its settings and its asyncio bridge."""

from edged.mqtt.connection import LinkCounters, LinkEvent
from edged.errors import InvalidTopicError
from edged.mqtt.inbound import AsyncInbox, InboundHandler, InboundMessage
from edged.mqtt.link import ConnectionHook, MqttLink, WillFactory
from edged.mqtt.publishing import PublishHandle, StatusMessage
from edged.mqtt.settings import MqttSettings
from edged.mqtt.url import BrokerUrl, parse_broker_url

__all__ = [
    "AsyncInbox",
    "BrokerUrl",
    "ConnectionHook",
    "InboundHandler",
    "InboundMessage",
    "InvalidTopicError",
    "LinkCounters",
    "LinkEvent",
    "MqttLink",
    "MqttSettings",
    "PublishHandle",
    "StatusMessage",
    "WillFactory",
    "parse_broker_url",
]

"""MqttLink: one disciplined paho-mqtt 2.x connection (jittered backoff, resubscribe, no raising callbacks)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.client import ConnectFlags, DisconnectFlags, MQTTMessage
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from pydantic import ValidationError

from edged.errors import TransportError
from edged.ratelog import RejectSummary
from edged.mqtt.connection import ConnectionSupervisor, LinkCounters, LinkEvent, ReconnectBackoff
from edged.mqtt.inbound import AsyncInbox, InboundHandler, Subscriptions, check_topic_name, inbound_from_paho
from edged.mqtt.client_factory import build_client, connect_properties, publish_properties, stop_network_thread
from edged.mqtt.publishing import PendingPublishes, PublishHandle, StatusMessage
from edged.mqtt.settings import MqttSettings

logger = structlog.get_logger(__name__)

# A link's inboxes hold at most this many payload bytes each (plus one largest packet): a
# flood of valid-sized messages must not grow a 1 GB device's memory by more than this.
DEFAULT_INBOX_BYTES = 4 * 1024 * 1024
ConnectionHook = Callable[[LinkEvent], None]
WillFactory = Callable[[], StatusMessage]


class MqttLink:
    """One broker connection that keeps itself up.

    ``start()`` returns at once; paho's network thread connects, and on every (re)connect all
    subscriptions are sent again and then ``on_connect`` runs (publish the birth message there).
    Handlers, hooks and ack callbacks run on that network thread: they must be quick and must
    not block; ``AsyncInbox`` moves messages to asyncio. Nothing raised in them reaches paho.

    Offline publishing: QoS 1 messages wait in paho's memory queue and go out on reconnect,
    up to ``max_queued_messages`` (in flight plus waiting); beyond that, and for QoS 0 while
    offline, ``publish()`` returns a handle that has already failed. It never raises for that.
    The queue is memory only: a durable store (the telemetry spool) deletes a record on PUBACK.
    """

    def __init__(
        self,
        settings: MqttSettings,
        *,
        client_id: str,
        will: StatusMessage | WillFactory | None = None,
        on_connect: ConnectionHook | None = None,
        on_disconnect: ConnectionHook | None = None,
        environ: Mapping[str, str] | None = None,
        max_packet_bytes: int | None = None,
    ) -> None:
        """``client_id`` is used when ``settings.client_id`` is unset; ``environ`` is for tests.

        ``max_packet_bytes`` bounds every incoming packet: sent as MQTT 5 Maximum Packet Size in
        CONNECT (the broker then drops bigger messages for us), and enforced before reading on
        both protocols (a bigger packet closes the connection; see ``BoundedClient``). Inboxes
        made by ``inbox()`` hold at least one such packet.

        ``will`` is a fixed message, or a factory called on paho's thread before every connection
        attempt (a birth/death sequence number in the will changes per attempt, as in Sparkplug).
        """
        self._settings = settings
        self._client_id = settings.client_id or client_id
        self._will = will
        self._on_connect_hook = on_connect
        self._on_disconnect_hook = on_disconnect
        self._environ = environ
        self._max_packet_bytes = max_packet_bytes
        self._v5 = settings.protocol == "5"
        self.counters = LinkCounters()
        self._supervisor = ConnectionSupervisor(
            ReconnectBackoff(settings.backoff_min_s, settings.backoff_max_s, settings.auth_retry_s),
            self.counters,
            self._client_id,
            settings.broker_url().redacted(),
        )
        self._rejects = RejectSummary("mqtt inbound message dropped", logger)
        self._subscriptions = Subscriptions()
        self._pending = PendingPublishes()
        self._client: mqtt.Client | None = None
        self._stopping = False

    @property
    def is_connected(self) -> bool:
        return self._supervisor.connected

    @property
    def client_id(self) -> str:
        return self._client_id

    def inbox(self, loop: asyncio.AbstractEventLoop, maxsize: int, max_bytes: int = DEFAULT_INBOX_BYTES) -> AsyncInbox:
        """An AsyncInbox whose drops count in this link's ``dropped_inbound``.

        Bounded in messages and in payload bytes (never below one largest allowed packet).
        """
        floor = self._max_packet_bytes or 0
        return AsyncInbox(loop, maxsize, self.counters, max_bytes=max(max_bytes, floor))

    def start(self) -> None:
        """Read the secrets, build the client and let paho's thread connect; never waits for the broker.

        Raises ConfigError for an unreadable password, CA, certificate or key file.
        """
        if self._client is not None:
            raise TransportError("this MQTT link was already started; make a new one")
        broker = self._settings.broker_url()
        fixed_will = self._will if isinstance(self._will, StatusMessage) else None
        client = build_client(self._settings, self._client_id, fixed_will, self._environ,
                              self._max_packet_bytes, self._oversize)
        client.on_pre_connect = self._guarded("on_pre_connect", self._handle_pre_connect)
        client.on_connect = self._guarded("on_connect", self._handle_connect)
        client.on_connect_fail = self._guarded("on_connect_fail", self._handle_connect_fail)
        client.on_disconnect = self._guarded("on_disconnect", self._handle_disconnect)
        client.on_publish = self._guarded("on_publish", self._handle_publish)
        client.on_subscribe = self._guarded("on_subscribe", self._handle_subscribe)
        client.on_message = self._guarded("on_message", self._handle_message)
        if self._v5:
            client.connect_async(broker.host, broker.port, self._settings.keepalive_s, clean_start=True,
                                 properties=connect_properties(True, self._max_packet_bytes))
        else:
            client.connect_async(broker.host, broker.port, self._settings.keepalive_s)
        self._client = client
        client.loop_start()
        logger.info(
            "mqtt link started", broker=broker.redacted(), client_id=self._client_id, protocol=self._settings.protocol
        )

    def stop(self, final_messages: Sequence[StatusMessage] = (), timeout: float = 5.0) -> None:
        """Publish ``final_messages`` (QoS 1), wait up to ``timeout`` s for their PUBACKs, then close.

        The close is a normal DISCONNECT, so the broker discards the will. Final messages are
        only waited for while connected; offline they are dropped with a warning. Handles still
        pending afterwards fail with "link stopped". Safe to call twice or before start(); call
        it from the owner's thread, never from a handler or hook (it joins paho's thread).
        """
        client = self._client
        if client is None or self._stopping:
            return
        deadline = time.monotonic() + timeout
        handles = [self.publish(m.topic, m.payload, qos=1, retain=m.retain) for m in final_messages]
        if handles and self._supervisor.connected:
            delivered = all(handle.wait(max(0.0, deadline - time.monotonic())) for handle in handles)
            if not delivered:
                topics = [h.topic for h in handles]
                logger.warning("mqtt final messages not acknowledged before the timeout", topics=topics)
        elif handles:
            logger.warning("mqtt offline at stop, final messages not sent", topics=[h.topic for h in handles])
        self._stopping = True
        client.disconnect()
        stop_network_thread(client, self._client_id)
        lost = self._pending.fail_all("link stopped")
        if lost:
            self.counters.bump("publish_failures", lost)
        logger.info("mqtt link stopped", client_id=self._client_id, unacknowledged=lost)

    def subscribe(self, topic_filter: str, qos: int, handler: InboundHandler) -> None:
        """Call ``handler`` for every message matching ``topic_filter``; kept across reconnects.

        Subscribing again to the same filter replaces its QoS and handler. Raises
        InvalidTopicError for a malformed filter.
        """
        self._subscriptions.add(topic_filter, qos, handler)
        client = self._client
        if client is not None and self._supervisor.connected:
            self._send_subscribe(client, [(topic_filter, qos)])

    def unsubscribe(self, topic_filter: str) -> None:
        if self._subscriptions.remove(topic_filter) and self._client is not None and self._supervisor.connected:
            self._client.unsubscribe(topic_filter)

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
        expiry_s: int | None = None,
    ) -> PublishHandle:
        """Send a message; the handle completes on PUBACK (see PublishHandle). Never raises for
        being offline; raises InvalidTopicError for a malformed topic. ``response_topic``,
        ``correlation_data`` and ``expiry_s`` are MQTT 5 properties, ignored on 3.1.1.
        """
        check_topic_name(topic)
        if response_topic is not None:
            check_topic_name(response_topic)
        client = self._client
        if client is None or self._stopping:
            return self._failed(PublishHandle(0, topic, qos), "link stopped" if self._stopping else "link not started")
        properties = publish_properties(self._v5, response_topic, correlation_data, expiry_s)
        info = client.publish(topic, payload, qos=qos, retain=retain, properties=properties)
        handle = PublishHandle(info.mid, topic, qos)
        # Offline QoS 1 publishes report "no connection" but stay queued in paho for the reconnect.
        queued = info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS or (info.rc == MQTTErrorCode.MQTT_ERR_NO_CONN and qos > 0)
        if queued:
            self._pending.register(handle)
            return handle
        self._pending.forget(info.mid)
        return self._failed(handle, mqtt.error_string(info.rc))

    def _failed(self, handle: PublishHandle, reason: str) -> PublishHandle:
        self.counters.bump("publish_failures")
        logger.debug("mqtt publish refused locally", topic=handle.topic, reason=reason)
        handle.complete(False, reason)
        return handle

    def _send_subscribe(self, client: mqtt.Client, filters: list[tuple[str, int]]) -> None:
        result, mid = client.subscribe(filters)
        if result == MQTTErrorCode.MQTT_ERR_SUCCESS and mid is not None:
            self._subscriptions.sent(mid, [topic_filter for topic_filter, _ in filters])

    # ---- paho callbacks: all run on paho's network thread, all wrapped by _guarded ----

    def _guarded(self, name: str, body: Callable[..., None]) -> Callable[..., None]:
        def callback(*args: object) -> None:
            try:
                body(*args)
            except Exception:
                self.counters.bump("callback_errors")
                logger.exception("mqtt callback raised; swallowed to keep the network thread alive", callback=name)

        return callback

    def _handle_pre_connect(self, client: mqtt.Client, _userdata: object) -> None:
        self._supervisor.attempt_started()
        if callable(self._will):
            # paho builds the CONNECT packet after this callback, so the new will goes with it.
            will = self._will()
            client.will_set(will.topic, will.payload, qos=1, retain=will.retain)

    def _handle_connect(
        self, client: mqtt.Client, _userdata: object, flags: ConnectFlags, reason_code: ReasonCode, _: Properties
    ) -> None:
        event = self._supervisor.connack(reason_code, flags.session_present)
        if event is None:
            return  # refused: on_disconnect follows and schedules the retry
        filters = self._subscriptions.filters()
        if filters:
            self._send_subscribe(client, filters)
        self._call_hook("on_connect", self._on_connect_hook, event)

    def _handle_connect_fail(self, client: mqtt.Client, _userdata: object) -> None:
        self._set_reconnect_delay(client, self._supervisor.connect_failed())

    def _handle_disconnect(
        self, client: mqtt.Client, _userdata: object, _flags: DisconnectFlags, reason_code: ReasonCode, _: Properties
    ) -> None:
        self._subscriptions.forget_sent()
        event, delay = self._supervisor.connection_closed(reason_code, self._stopping)
        if event is not None:
            self._call_hook("on_disconnect", self._on_disconnect_hook, event)
        if not self._stopping:
            self._set_reconnect_delay(client, delay)

    @staticmethod
    def _set_reconnect_delay(client: mqtt.Client, delay: float) -> None:
        # paho 2.2 calls on_connect_fail / on_disconnect right before it sleeps in
        # _reconnect_wait(), so pinning its min and max delay here makes that sleep ours.
        client.reconnect_delay_set(delay, delay)  # type: ignore[arg-type]  # float seconds work
        logger.debug("mqtt reconnect scheduled", delay_s=round(delay, 3))

    def _handle_publish(
        self, _client: mqtt.Client, _userdata: object, mid: int, reason_code: ReasonCode, _properties: Properties
    ) -> None:
        if reason_code.is_failure:
            self.counters.bump("publish_failures")
            handle = self._pending.resolve(mid, False, str(reason_code))
            topic = handle.topic if handle is not None else None
            logger.warning("mqtt broker rejected a publish", topic=topic, mid=mid, reason=str(reason_code))
        else:
            self._pending.resolve(mid, True)

    def _handle_subscribe(
        self, _client: mqtt.Client, _userdata: object, mid: int, reason_codes: list[ReasonCode], _: Properties
    ) -> None:
        self._subscriptions.acknowledged(mid, reason_codes)

    def _oversize(self, size: int) -> None:
        self.counters.bump("oversize_inbound")
        self._rejects.note("oversize", size=size, max_packet_bytes=self._max_packet_bytes)

    def _handle_message(self, _client: mqtt.Client, _userdata: object, message: MQTTMessage) -> None:
        try:
            inbound = inbound_from_paho(message)
        except (UnicodeDecodeError, ValidationError):
            self.counters.bump("dropped_inbound")
            self._rejects.note("malformed", mid=message.mid)
            return
        for handler in self._subscriptions.handlers_for(inbound.topic):
            try:
                handler(inbound)
            except Exception:
                self.counters.bump("handler_errors")
                logger.exception("mqtt message handler raised", topic=inbound.topic)

    def _call_hook(self, name: str, hook: ConnectionHook | None, event: LinkEvent) -> None:
        if hook is None:
            return
        try:
            hook(event)
        except Exception:
            self.counters.bump("handler_errors")
            logger.exception("mqtt connection hook raised", hook=name)


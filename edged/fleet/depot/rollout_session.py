"""Running a rollout over the broker: one link that reads every device's retained status and update state into
the roster and publishes offers (retained, QoS 1, each acknowledged), until the rollout stops or is asked to.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Final

from edged.errors import TransportError
from edged.fleet.depot.operator import connect
from edged.fleet.depot.rollout_roster import FleetRoster
from edged.fleet.depot.rollout_runner import SUMMARY_EVERY_S, Rollout
from edged.fleet.depot.rollout_state import RolloutState
from edged.mqtt.inbound import InboundMessage
from edged.mqtt.link import MqttLink
from edged.mqtt.settings import MqttSettings

INBOX_MAX: Final = 400_000
SETTLE_QUIET_S: Final = 1.0  # retained messages come right after the SUBACK; this much quiet means all came
SETTLE_MAX_S: Final = 20.0
PUBLISH_TIMEOUT_S: Final = 30.0
TICK_S: Final = 0.2


class BrokerView:
    """The roster kept current from the broker, and the publisher a Rollout uses."""

    def __init__(self, settings: MqttSettings, roster: FleetRoster, client_id: str) -> None:
        self.settings = settings
        self.roster = roster
        self.client_id = client_id
        self.inbox: queue.Queue[InboundMessage] = queue.Queue(maxsize=INBOX_MAX)
        self.dropped = 0
        self.link: MqttLink | None = None

    def _put(self, message: InboundMessage) -> None:
        try:
            self.inbox.put_nowait(message)
        except queue.Full:
            self.dropped += 1  # a retained state comes again with the device's next report

    def open(self) -> None:
        """Connect, subscribe, and wait until the broker's retained messages have arrived."""
        link = connect(self.settings, self.client_id)
        self.link = link
        for topic_filter in self.roster.filters():
            link.subscribe(topic_filter, 1, self._put)
        end = time.monotonic() + SETTLE_MAX_S
        quiet_since = time.monotonic()
        while time.monotonic() < end and time.monotonic() - quiet_since < SETTLE_QUIET_S:
            if self.drain(0.05):
                quiet_since = time.monotonic()

    def drain(self, wait: float) -> int:
        """Fold every waiting message into the roster; waits up to ``wait`` for the first one."""
        folded = 0
        try:
            message = self.inbox.get(timeout=wait)
        except queue.Empty:
            return 0
        while True:
            self.roster.apply(message)
            folded += 1
            try:
                message = self.inbox.get_nowait()
            except queue.Empty:
                return folded

    def publish(self, messages: list[tuple[str, bytes]]) -> None:
        if self.link is None:
            raise TransportError("not connected to the broker")
        handles = [self.link.publish(topic, payload, qos=1, retain=True) for topic, payload in messages]
        end = time.monotonic() + PUBLISH_TIMEOUT_S
        for handle in handles:
            if not handle.wait(max(0.1, end - time.monotonic())):
                raise TransportError(f"the broker did not acknowledge {handle.topic}: {handle.failure}; the "
                                     "rollout is recorded, run the same command again to carry on")

    def close(self) -> None:
        if self.link is not None:
            self.link.stop()
            self.link = None


def drive(rollout: Rollout, view: BrokerView, stop: threading.Event,
          take_request: Callable[[], tuple[str, str] | None],
          on_change: Callable[[RolloutState], None]) -> RolloutState:
    """Step the rollout until it is no longer running, ``stop`` is set, or pause/abort is asked for."""
    rollout.republish_running()
    last_summary = 0.0
    shown: RolloutState | None = None
    while not stop.is_set():
        view.drain(TICK_S)
        request = take_request()
        if request is not None:
            action, by = request
            state = rollout.abort(f"aborted by {by}") if action == "abort" else rollout.pause(by)
        else:
            state = rollout.step()
        if time.monotonic() - last_summary >= SUMMARY_EVERY_S or state.phase != "running":
            rollout.publish_summary()
            last_summary = time.monotonic()
        if shown is None or state.updated_unix_ms != shown.updated_unix_ms:
            on_change(state)
            shown = state
        if state.phase != "running":
            break
    return rollout.state

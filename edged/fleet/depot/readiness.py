"""Operator side: can device X take an update now? Read from its retained status before a push.

The device's retained birth (transports/mqtt_presence.py) carries an ``updates`` object:
``enabled`` (is ``[updates]`` configured), ``clock_policy``, ``clock_synchronised``,
``blocked_by_clock``, ``install_window`` and ``install_when``. `edged fleet push --device X`
reads it so that an offer which X would ignore, refuse or hold back is not met with silence.
"""

from __future__ import annotations

import queue
import time
from typing import Any, Final

from edged.jsonbody import json_object_or_none
from edged.fleet.depot.operator import connect
from edged.mqtt.inbound import InboundMessage
from edged.mqtt.settings import MqttSettings
from edged.topics import DeviceTopics

RETAINED_WAIT_S: Final = 2.0  # a retained message arrives right after the SUBACK; none after this means none


def retained_status(settings: MqttSettings, device_id: str, wait_s: float = RETAINED_WAIT_S) -> dict[str, Any] | None:
    """The device's retained status object, or None when the broker holds none (or it is not JSON)."""
    got: queue.Queue[InboundMessage] = queue.Queue(maxsize=1)

    def put(message: InboundMessage) -> None:
        try:
            got.put_nowait(message)
        except queue.Full:
            pass

    link = connect(settings, f"edged-readiness-{int(time.time() * 1000) % 10**9}")
    try:
        link.subscribe(DeviceTopics(settings.topic_prefix, device_id).status, 1, put)
        try:
            message = got.get(timeout=wait_s)
        except queue.Empty:
            return None
    finally:
        link.stop()
    return json_object_or_none(message.payload)


def push_warnings(device_id: str, status: dict[str, Any] | None, *, retained: bool) -> list[str]:
    """What the operator should know about pushing to this device now; empty when nothing stands in the way."""
    if status is None:
        if not retained:
            return [f"{device_id} has no retained status on this broker and the offer is not retained "
                    "(--no-retain): unless it is connected right now it will never see the offer"]
        return [f"{device_id} has no retained status on this broker (never connected here, or another "
                "--topic-prefix?); the offer stays retained until it connects"]
    warnings = []
    state = status.get("state")
    if state in ("offline", "stopped"):
        warnings.append(f"{device_id} is {state}: it sees the offer when it connects again"
                        + ("" if retained else ", but --no-retain means the broker does not keep it"))
    updates = status.get("updates")
    if not isinstance(updates, dict):
        return warnings  # an edged from before readiness was reported: nothing more is known
    if updates.get("enabled") is False:
        warnings.append(f"{device_id} reports that updates are off (its config has no [updates] section): it "
                        "ignores this offer; add [updates] to its edged.toml and restart it")
    elif updates.get("blocked_by_clock"):
        warnings.append(f"{device_id} reports that its clock is not synchronised and its [updates] clock_policy "
                        "is \"reject\": it refuses the offer (reason clock) and checks it again after retry_after_s; "
                        "enable time sync on the device (timedatectl set-ntp true), or set "
                        "[updates] clock_policy = \"trust-system-clock\" if it has no time source")
    elif (policy := _install_policy(updates)) is not None:
        warnings.append(f"{device_id} downloads the release now and installs it only {policy}; until then it "
                        "reports deferred")
    return warnings


def _install_policy(updates: dict[str, Any]) -> str | None:
    """``between 02:00-05:00 local time and when idle``, from the birth (broker data: shown only if well formed)."""
    window, when = updates.get("install_window"), updates.get("install_when")
    parts = []
    if isinstance(window, str) and len(window) <= 11 and window.replace(":", "").replace("-", "").isdigit():
        parts.append(f"between {window} local time")
    if when in ("idle", "parked"):
        parts.append(f"when {when}")
    return " and ".join(parts) or None

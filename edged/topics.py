"""Every MQTT topic a device uses, built in one place from the prefix and the device id (e2e-v1 §7)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceTopics:
    prefix: str
    device_id: str

    def _topic(self, leaf: str) -> str:
        return f"{self.prefix}/{self.device_id}/{leaf}"

    @property
    def request(self) -> str:
        """Sealed requests in; plaintext is never accepted here."""
        return self._topic("req")

    @property
    def prekey(self) -> str:
        """The signed prekey record, retained."""
        return self._topic("prekey")

    @property
    def status(self) -> str:
        """Birth (`online`), will (`offline`) and `stopped`, retained."""
        return self._topic("status")

    @property
    def telemetry(self) -> str:
        return self._topic("telemetry")

    @property
    def commands(self) -> str:
        """Sealed operator commands (profile override, status refresh)."""
        return self._topic("cmd")

    @property
    def update_offer(self) -> str:
        """Signed release manifests pushed to this device."""
        return self._topic("update/offer")

    @property
    def update_chunks(self) -> str:
        """Model chunks sent by the depot to this device."""
        return self._topic("update/chunks")

    @property
    def update_state(self) -> str:
        """Update progress and result, retained."""
        return self._topic("update/state")


def fleet_status_filter(prefix: str) -> str:
    return f"{prefix}/+/status"


def fleet_telemetry_filter(prefix: str) -> str:
    return f"{prefix}/+/telemetry"

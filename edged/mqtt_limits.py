"""The largest packet a device legitimately receives, sent to the broker as MQTT 5 Maximum Packet Size."""

from __future__ import annotations

from typing import Final

from edged.fleet.dsse import MAX_ENVELOPE_BYTES
from edged.fleet.messages import HEADER_BYTES
from edged.fleet.manifest import MAX_CHUNK_SIZE

# Around the payload: fixed header (5), topic (2 + 65535), packet id (2) and the MQTT 5 properties
# a publisher may set (response topic, correlation data: 3 + 65535 each; the rest is small).
PACKET_OVERHEAD: Final = 5 + (2 + 65535) + 2 + 2 * (3 + 65535) + 256
# A chunk frame's names: channel and artifact, each at most 255 bytes by the frame's length bytes.
CHUNK_NAMES: Final = 2 * 255


def max_inbound_packet(max_request_bytes: int) -> int:
    """The biggest sealed request or command, signed offer or chunk frame, plus MQTT framing."""
    payload = max(max_request_bytes, MAX_ENVELOPE_BYTES, HEADER_BYTES + CHUNK_NAMES + MAX_CHUNK_SIZE)
    return payload + PACKET_OVERHEAD

"""The one record of what a request did: the core builds it once; every view renders from it.

The final event's ``edged`` object (``edged_object``), the daemon's log line (``log_fields``), the
metrics registry (``Metrics.record_request``) and the ``edged.request`` telemetry record
(``telemetry.compose.request_record``) all read this one object. Field names follow the telemetry
record; the final event keeps its documented wire names (docs/protocol.md), mapped here only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

ESTIMATE = "estimate"


@dataclass(frozen=True, slots=True)
class RequestSummary:
    """``outcome`` is ``ok`` or the wire error code. ``None`` means not measured: a request that
    failed or was refused has no queue, first-token or decode figure, and no energy of its own."""

    request_id: str
    transport: str
    peer: str
    client: str | None
    priority: str
    profile: str
    outcome: str
    finish_reason: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    queue_time_ms: float | None = None
    time_to_first_token_ms: float | None = None
    duration_ms: float | None = None
    decode_tokens_per_s: float | None = None
    energy_j: float | None = None
    energy_source: str | None = None  # a sensor name, "+"-joined names, or "estimate"
    energy_scope: str | None = None
    reject_reason: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome == "ok"

    def edged_object(self) -> dict[str, Any]:
        """The ``edged`` statistics object of the final event (wire names as in docs/protocol.md)."""
        return {"queue_ms": round(self.queue_time_ms or 0.0, 3),
                "ttft_ms": round(self.time_to_first_token_ms or 0.0, 3),
                "total_ms": round(self.duration_ms or 0.0, 3),
                "decode_tokens_per_s": round(self.decode_tokens_per_s or 0.0, 2),
                "energy_j": round(self.energy_j or 0.0, 4), "energy_source": self.energy_source or ESTIMATE,
                "energy_scope": self.energy_scope or ESTIMATE,
                "profile": self.profile, "prompt_cached_tokens": self.cached_input_tokens}

    def log_fields(self) -> dict[str, Any]:
        """The one ``request`` log line; never prompt or answer text (the record has none)."""
        return {name: value for name, value in asdict(self).items() if value is not None}

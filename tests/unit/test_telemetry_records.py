"""Telemetry records: strict validation, dotted OTel-style JSON names, envelope encoding, builders."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
from pydantic import ValidationError

from edged.telemetry.compose import PowerState, device_record, request_record
from edged.telemetry.metrics import Metrics
from edged.telemetry.records import (
    SCHEMA,
    DeviceMessage,
    RequestMessage,
    RequestRecord,
    decode_message,
    encode_message,
    record_body,
)
from edged.telemetry.sampler import ProcessSample
from edged.telemetry.spool import SpoolStats
from tests.fakes import summary

STATS = summary("ok", transport="mqtt", priority="interactive", profile="eco", queue_time_ms=4.0,
                     time_to_first_token_ms=180.5, duration_ms=2400.0, decode_tokens_per_s=7.5, input_tokens=20,
                     output_tokens=16, energy_j=8.0, energy_source="ina219", energy_scope="board_input")
SAMPLE = ProcessSample(uptime_s=12.0, rss_bytes=50_000_000, rss_peak_bytes=60_000_000,
                       memory_total_bytes=8_000_000_000, memory_available_bytes=6_000_000_000,
                       process_cpu_utilization=0.5, system_cpu_utilization=None)
SPOOL = SpoolStats(pending=3, pending_bytes=900, next_seq=40, dropped_total=2, recoveries_total=1,
                   recovered_from_corruption=False)
POWER = PowerState(temperature_cel=61.5, temperature_source="cpu-thermal", power_w=4.2, energy_j=3600.0,
                   energy_source="ina219", energy_scope="board_input", throttled_flags=0x50000)


def _request_json() -> dict[str, Any]:
    record = request_record(STATS, device_id="pi-7", time_unix_ms=1_700_000_000_000)
    return json.loads(encode_message(record_body(record), 5, historical=False))


def _device(**overrides: Any) -> Any:
    metrics = Metrics()
    metrics.record_request(STATS)
    metrics.record_request(summary("busy", transport="unix", priority="background",
                                        profile="eco", reject_reason="priority_not_admitted"))
    arguments: dict[str, Any] = dict(device_id="pi-7", time_unix_ms=1_700_000_000_000, uptime_s=12.5,
                                     sample=SAMPLE, metrics=metrics.snapshot(reset_histograms=True), spool=SPOOL,
                                     power=POWER, queue_depth=2, profile="eco", governor_reason="temperature 61.5 C")
    arguments.update(overrides)
    return device_record(**arguments)


def test_request_message_uses_dotted_names_and_round_trips() -> None:
    wire = _request_json()
    assert wire["schema"] == SCHEMA
    assert (wire["seq"], wire["historical"], wire["kind"]) == (5, False, "edged.request")
    assert wire["edged.request.time_to_first_token_ms"] == 180.5
    assert wire["gen_ai.usage.input_tokens"] == 20
    assert wire["edged.request.energy_j_per_token"] == 0.5
    assert wire["edged.energy.source"] == "ina219"
    assert "edged.request.reject_reason" not in wire  # absent means not applicable
    message = decode_message(json.dumps(wire))
    assert isinstance(message, RequestMessage)
    assert message.time_to_first_token_ms == 180.5
    assert message.device_id == "pi-7"


def test_device_message_round_trips_with_summaries_and_counters() -> None:
    record = _device()
    payload = encode_message(record_body(record), 9, historical=True)
    wire = json.loads(payload)
    assert wire["edged.requests"] == {"ok": 1, "busy": 1}
    assert wire["edged.rejects"] == {"priority_not_admitted": 1}
    assert wire["edged.latency.time_to_first_token_ms"]["p50"] == 180.5
    assert wire["hw.temperature"] == 61.5
    assert wire["edged.telemetry.dropped"] == 2
    assert "system.cpu.utilization" not in wire
    message = decode_message(payload)
    assert isinstance(message, DeviceMessage)
    assert message.historical is True
    assert message.memory_rss_bytes == 50_000_000


@pytest.mark.parametrize("field, value", [
    ("seq", "5"),
    ("seq", 5.0),
    ("seq", True),
    ("historical", "false"),
    ("gen_ai.usage.input_tokens", 1.5),
    ("edged.request.queue_time_ms", "4"),
    ("edged.request.queue_time_ms", -1.0),
    ("edged.request.outcome", "exploded"),
    ("device_id", "pi/7"),
    ("schema", "edged.telemetry/2"),
])
def test_wrong_types_and_values_are_rejected(field: str, value: Any) -> None:
    wire = _request_json()
    wire[field] = value
    with pytest.raises(ValidationError):
        decode_message(json.dumps(wire))


@pytest.mark.parametrize("field", ["bogus", "queue_time_ms", "prompt"])
def test_unknown_fields_are_rejected_on_the_wire(field: str) -> None:
    # python attribute names are not wire names: a consumer must see exactly the documented keys
    wire = _request_json()
    wire[field] = 1
    with pytest.raises(ValidationError, match="Extra inputs"):
        decode_message(json.dumps(wire))


def test_unknown_fields_and_wrong_types_are_rejected_in_python() -> None:
    base: dict[str, Any] = dict(device_id="pi-7", time_unix_ms=1, outcome="ok", transport="unix",
                                priority="normal", profile="eco")
    RequestRecord(**base)
    with pytest.raises(ValidationError, match="Extra inputs"):
        RequestRecord(**base, prompt_text="hello")
    with pytest.raises(ValidationError):
        RequestRecord(**{**base, "time_unix_ms": "1"})
    with pytest.raises(ValidationError):
        RequestRecord(**base, duration_ms=math.nan)


def test_energy_needs_its_source() -> None:
    with pytest.raises(ValidationError, match=r"edged\.energy\.source"):
        RequestRecord(device_id="pi-7", time_unix_ms=1, outcome="ok", transport="unix", priority="normal",
                      profile="eco", energy_j=1.0)
    with pytest.raises(ValidationError, match=r"edged\.energy\.source"):
        _device(power=PowerState(power_w=3.0))


def test_builders_leave_out_what_was_not_measured() -> None:
    stats = summary("cancelled", transport="unix", priority="normal", profile="eco",
                         energy_source="ina219")
    record = request_record(stats, device_id="pi-7", time_unix_ms=2)
    assert record.energy_j is None and record.energy_source is None and record.energy_j_per_token is None
    zero_tokens = request_record(summary("ok", transport="unix", priority="normal", profile="eco",
                                              energy_j=2.0, energy_source="estimate"),
                                 device_id="pi-7", time_unix_ms=2)
    assert zero_tokens.energy_j == 2.0 and zero_tokens.energy_j_per_token is None
    quiet = _device(power=PowerState(), sample=ProcessSample(None, None, None, None, None, None, None))
    wire = json.loads(record_body(quiet))
    assert "hw.energy" not in wire and "edged.energy.source" not in wire and "process.memory.usage" not in wire
    assert wire["process.uptime"] == 12.5


def test_records_are_frozen() -> None:
    record = request_record(STATS, device_id="pi-7", time_unix_ms=3)
    with pytest.raises(ValidationError):
        record.duration_ms = 1.0  # type: ignore[misc]


@pytest.mark.parametrize("body", [b"", b"{}", b"[1]"])
def test_encode_message_needs_a_json_object(body: bytes) -> None:
    with pytest.raises(ValueError):
        encode_message(body, 1, historical=False)

"""Typed telemetry records (edged.request, edged.device) and their JSON wire form, after OpenTelemetry names."""

from __future__ import annotations

from typing import Annotated, Final, Literal, TypedDict

from pydantic import ConfigDict, Field, TypeAdapter, model_validator

from edged.validation import StrictModel

SCHEMA: Final = "edged.telemetry/1"
# A field named after an OpenTelemetry convention keeps that convention's unit (s, By, 1, J, W, Cel);
# an edged.* field carries its unit as a suffix (_ms, _s, _bytes, _j, _w); a count has no suffix.

DEVICE_ID_PATTERN: Final = r"^[A-Za-z0-9._-]{1,128}$"  # same rule as Config.device_id
LABEL_PATTERN: Final = r"^[A-Za-z0-9_.:-]{1,64}$"
MAX_MS: Final = 7 * 24 * 3600 * 1000.0  # a week; no request or queue wait is longer
MAX_TOKENS: Final = 10_000_000
MAX_JOULES: Final = 1e12
MAX_BYTES: Final = 2**50
MAX_LABELLED: Final = 64

# Energy over a window in which the meter switched sensors names them all, "+"-joined and sorted
# (power/energy.py `EnergyReport.source`); every part is a label.
ENERGY_SOURCE_PATTERN: Final = r"^[A-Za-z0-9_.:-]{1,64}(\+[A-Za-z0-9_.:-]{1,64}){0,15}$"

Label = Annotated[str, Field(pattern=LABEL_PATTERN)]
EnergySource = Annotated[str, Field(pattern=ENERGY_SOURCE_PATTERN, max_length=512)]
Outcome = Literal["ok", "bad_request", "unauthorized", "busy", "deadline_exceeded", "cancelled",
                  "model_unavailable", "internal"]


class _Aliases(TypedDict):
    validation_alias: str
    serialization_alias: str


def _wire(name: str) -> _Aliases:
    """The JSON name of a field. Not ``alias=``: type checkers would then demand it in constructors."""
    return _Aliases(validation_alias=name, serialization_alias=name)


class _Wire(StrictModel):
    # Python code uses the attribute names; the JSON uses the dotted aliases.
    model_config = ConfigDict(validate_by_name=True, validate_by_alias=True, serialize_by_alias=True)


def _check_energy_source(energy: float | None, source: str | None, what: str) -> None:
    # An energy figure without its source could be an estimate passed off as a measurement.
    if (energy is None) != (source is None):
        raise ValueError(f"{what}: an energy figure and edged.energy.source go together")


class _RecordBase(_Wire):
    device_id: str = Field(pattern=DEVICE_ID_PATTERN, description="the reporting device (config device_id)")
    time_unix_ms: int = Field(ge=0, le=2**53, description="when the event happened (Unix ms), not when it was sent")


class RequestRecord(_RecordBase):
    """One finished request (kind ``edged.request``); never carries prompt or answer text."""

    kind: Literal["edged.request"] = Field("edged.request", description="record kind")
    outcome: Outcome = Field(**_wire("edged.request.outcome"), description="ok or the wire error code")
    transport: Label = Field(**_wire("edged.request.transport"), description="unix, mqtt, ...")
    priority: Label = Field(**_wire("edged.request.priority"), description="interactive, normal, background")
    profile: Label = Field(**_wire("edged.profile"), description="power profile active when the request ran")
    reject_reason: Label | None = Field(None, **_wire("edged.request.reject_reason"),
                                        description="why admission refused it, when it did")
    queue_time_ms: float | None = Field(None, ge=0, le=MAX_MS, **_wire("edged.request.queue_time_ms"),
                                        description="ms from admission to the worker starting it")
    time_to_first_token_ms: float | None = Field(None, ge=0, le=MAX_MS,
                                                 **_wire("edged.request.time_to_first_token_ms"),
                                                 description="ms from admission to the first output token")
    duration_ms: float | None = Field(None, ge=0, le=MAX_MS, **_wire("edged.request.duration_ms"),
                                      description="ms from admission to the last chunk or the error")
    decode_tokens_per_s: float | None = Field(None, ge=0, le=1e6, **_wire("edged.request.decode_tokens_per_s"),
                                              description="output tokens per second after the first token")
    input_tokens: int = Field(0, ge=0, le=MAX_TOKENS, **_wire("gen_ai.usage.input_tokens"),
                              description="prompt tokens, {token}")
    output_tokens: int = Field(0, ge=0, le=MAX_TOKENS, **_wire("gen_ai.usage.output_tokens"),
                               description="completion tokens, {token}")
    energy_j: float | None = Field(None, ge=0, le=MAX_JOULES, **_wire("edged.request.energy_j"),
                                   description="J spent on this request")
    energy_j_per_token: float | None = Field(None, ge=0, le=MAX_JOULES, **_wire("edged.request.energy_j_per_token"),
                                             description="energy_j / output tokens")
    energy_source: EnergySource | None = Field(None, **_wire("edged.energy.source"),
                                        description="sensor name, or estimate")
    energy_scope: Label | None = Field(None, **_wire("edged.energy.scope"),
                                       description="what the sensor covers, e.g. board_input, soc_rails")

    @model_validator(mode="after")
    def _energy_has_source(self) -> RequestRecord:
        _check_energy_source(self.energy_j, self.energy_source, "edged.request.energy_j")
        return self


class LatencySummary(_Wire):
    """Percentiles of one histogram over the report window (nearest rank, within ~4.4 %)."""

    count: int = Field(ge=0, le=2**53, description="observations in the window")
    sum: float = Field(ge=0, le=1e15, description="sum of the observations, same unit as the parent field")
    p50: float | None = Field(None, ge=0, le=1e15, description="median, absent when count is 0")
    p95: float | None = Field(None, ge=0, le=1e15, description="95th percentile")
    p99: float | None = Field(None, ge=0, le=1e15, description="99th percentile")


LabelCounts = Annotated[dict[Label, Annotated[int, Field(ge=0, le=2**53)]], Field(max_length=MAX_LABELLED)]


class DeviceRecord(_RecordBase):
    """Periodic device state (kind ``edged.device``); absent optional fields were not available."""

    kind: Literal["edged.device"] = Field("edged.device", description="record kind")
    uptime_s: float = Field(ge=0, le=1e10, **_wire("process.uptime"), description="daemon process uptime, s")
    memory_rss_bytes: int | None = Field(None, ge=0, le=MAX_BYTES, **_wire("process.memory.usage"),
                                         description="process resident set (VmRSS), By")
    memory_rss_peak_bytes: int | None = Field(None, ge=0, le=MAX_BYTES, **_wire("edged.process.memory.peak_bytes"),
                                              description="peak resident set (VmHWM)")
    system_memory_total_bytes: int | None = Field(None, ge=0, le=MAX_BYTES, **_wire("system.memory.limit"),
                                                  description="MemTotal, By")
    system_memory_available_bytes: int | None = Field(None, ge=0, le=MAX_BYTES,
                                                      **_wire("edged.system.memory.available_bytes"),
                                                      description="MemAvailable")
    process_cpu_utilization: float | None = Field(None, ge=0, le=1, **_wire("process.cpu.utilization"),
                                                  description="0..1 of all CPUs the process may use, since last record")
    system_cpu_utilization: float | None = Field(None, ge=0, le=1, **_wire("system.cpu.utilization"),
                                                 description="0..1 busy share of all CPUs, since last record")
    temperature_cel: float | None = Field(None, ge=-273.15, le=500, **_wire("hw.temperature"),
                                          description="hottest reported zone, Cel")
    temperature_source: Label | None = Field(None, **_wire("edged.hw.temperature.source"),
                                             description="thermal zone or sensor name")
    throttled_flags: int | None = Field(None, ge=0, le=2**32 - 1, **_wire("edged.hw.throttled"),
                                        description="Raspberry Pi get_throttled bit mask")
    power_w: float | None = Field(None, ge=0, le=1e6, **_wire("hw.power"), description="instant power, W")
    energy_j: float | None = Field(None, ge=0, le=MAX_JOULES, **_wire("hw.energy"),
                                   description="cumulative energy counter, J")
    energy_source: EnergySource | None = Field(None, **_wire("edged.energy.source"),
                                        description="sensor name of hw.power/hw.energy, or estimate")
    energy_scope: Label | None = Field(None, **_wire("edged.energy.scope"), description="what the sensor covers")
    queue_depth: int = Field(ge=0, le=1_000_000, **_wire("edged.queue.depth"), description="queued requests")
    requests_by_outcome: LabelCounts = Field(**_wire("edged.requests"),
                                             description="finished requests per outcome since start")
    rejects_by_reason: LabelCounts = Field(**_wire("edged.rejects"), description="refusals per reason since start")
    input_tokens_total: int = Field(ge=0, le=2**53, **_wire("edged.tokens.input"), description="since start")
    output_tokens_total: int = Field(ge=0, le=2**53, **_wire("edged.tokens.output"), description="since start")
    queue_time_ms: LatencySummary = Field(**_wire("edged.latency.queue_time_ms"), description="window summary")
    time_to_first_token_ms: LatencySummary = Field(**_wire("edged.latency.time_to_first_token_ms"),
                                                   description="window summary")
    duration_ms: LatencySummary = Field(**_wire("edged.latency.duration_ms"), description="window summary")
    decode_tokens_per_s: LatencySummary = Field(**_wire("edged.decode.tokens_per_s"), description="window summary")
    latency_window_s: float = Field(ge=0, le=1e10, **_wire("edged.latency.window_s"),
                                    description="s covered by the summaries (since the previous record)")
    profile: Label = Field(**_wire("edged.profile"), description="active power profile")
    governor_reason: str = Field(max_length=200, **_wire("edged.governor.reason"),
                                 description="why the governor chose it")
    spool_pending: int = Field(ge=0, le=2**53, **_wire("edged.telemetry.pending"),
                               description="records waiting in the spool")
    spool_dropped: int = Field(ge=0, le=2**53, **_wire("edged.telemetry.dropped"),
                               description="records evicted by the spool byte cap, ever")
    spool_recoveries: int = Field(ge=0, le=2**53, **_wire("edged.telemetry.spool_recoveries"),
                                  description="times a corrupt spool was moved aside, ever")
    spool_recovered: bool = Field(**_wire("edged.telemetry.spool_recovered"),
                                  description="the spool was recreated from corruption during this run")

    @model_validator(mode="after")
    def _energy_has_source(self) -> DeviceRecord:
        present = None if self.energy_j is None and self.power_w is None else 0.0
        _check_energy_source(present, self.energy_source, "hw.energy/hw.power")
        return self


class _Envelope(_Wire):
    schema_id: Literal["edged.telemetry/1"] = Field(SCHEMA, **_wire("schema"), description="wire schema")
    seq: int = Field(ge=1, le=2**53, description="per-device sequence, contiguous unless records were dropped")
    historical: bool = Field(description="sent after a reconnect rather than live")


class RequestMessage(_Envelope, RequestRecord):
    """An ``edged.request`` record as published."""


class DeviceMessage(_Envelope, DeviceRecord):
    """An ``edged.device`` record as published."""


TelemetryRecord = RequestRecord | DeviceRecord
TelemetryMessage = Annotated[RequestMessage | DeviceMessage, Field(discriminator="kind")]
_MESSAGE_ADAPTER: TypeAdapter[RequestMessage | DeviceMessage] = TypeAdapter(TelemetryMessage)


def record_body(record: TelemetryRecord) -> bytes:
    """The record's JSON object (no envelope); what the spool stores."""
    return record.model_dump_json(exclude_none=True).encode()


def encode_message(body: bytes, seq: int, historical: bool) -> bytes:
    """Prefix a stored record body with the envelope fields; ``body`` is a non-empty JSON object."""
    if not body.startswith(b"{") or body == b"{}":
        raise ValueError("a record body is a non-empty JSON object")
    flag = b"true" if historical else b"false"
    return b'{"schema":"%s","seq":%d,"historical":%s,%s' % (SCHEMA.encode(), seq, flag, body[1:])


def decode_message(payload: bytes | str) -> RequestMessage | DeviceMessage:
    """Parse and validate a published message (consumers, tests); raises ``pydantic.ValidationError``."""
    return _MESSAGE_ADAPTER.validate_json(payload, by_alias=True, by_name=False)

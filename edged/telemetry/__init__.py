"""Telemetry: request metrics, typed records, the SQLite store-and-forward spool and procfs readings."""

from edged.telemetry.compose import PowerState, device_record, request_record
from edged.telemetry.metrics import LogHistogram, Metrics, MetricsSnapshot
from edged.telemetry.records import (
    SCHEMA,
    DeviceMessage,
    DeviceRecord,
    RequestMessage,
    RequestRecord,
    TelemetryRecord,
    decode_message,
    encode_message,
    record_body,
)
from edged.telemetry.sampler import ProcessSample, ProcSampler
from edged.telemetry.spool import MAX_RECORD_BYTES, RecordTooLarge, Spool, SpooledMessage, SpoolError, SpoolStats

__all__ = [
    "MAX_RECORD_BYTES", "SCHEMA", "DeviceMessage", "DeviceRecord", "LogHistogram", "Metrics", "MetricsSnapshot",
    "PowerState", "ProcSampler", "ProcessSample", "RecordTooLarge", "RequestMessage", "RequestRecord",
    "Spool", "SpoolError", "SpoolStats", "SpooledMessage", "TelemetryRecord", "decode_message",
    "device_record", "encode_message", "record_body", "request_record",
]

"""The one exception tree of edged; each request-level error maps to a wire error code.

    EdgedError
    ├── ConfigError              a config, profile, allow-list or trust file is invalid
    │   └── InvalidTopicError    a topic name or filter breaks the MQTT rules
    ├── RequestError             a request failed; ``code`` is the spec section 5 wire code
    │   ├── BadRequest           bad_request: malformed frame, JSON, field or value
    │   ├── Unauthorized         unauthorized: the peer or key is not allowed
    │   │   └── EnvelopeRejected a sealed request failed check ``check`` of spec section 3
    │   │       └── ClockNotSynchronised  ...check 4 only, for want of a synchronised clock: answered sealed
    │   ├── TooLarge             too_large: an HTTP request head or body over its limit
    │   ├── Busy                 busy: queue full, priority not admitted, rate limit
    │   ├── DeadlineExceeded     deadline_exceeded
    │   ├── Cancelled            cancelled: client went away or daemon stopping
    │   ├── ModelUnavailable     model_unavailable: no model loaded or it failed to load
    │   └── InternalError        internal
    ├── RemoteError              a client got an error object from the daemon; ``code`` is its wire code
    ├── StreamError              a response stream failed a client-side check (spec section 4)
    │   └── StreamFinished       the device side sealed a chunk after the FINAL one
    ├── InnerParseError          a sealed request's inner payload is not the spec layout (check ``parse``)
    ├── PrekeyRecordRejected     a prekey record failed a client-side check; ``reason`` says why
    ├── EngineError              the engine failed to load or run a model
    ├── SensorError              a power sensor could not be read or parsed
    ├── TransportError           a transport could not start or lost its peer
    ├── IdleConnection           a socket client started no frame within the idle timeout (closed unanswered)
    ├── SpoolError               the telemetry spool cannot store or read records
    │   ├── RecordTooLarge       one record is over the per-record limit (refused, never truncated)
    │   └── SpoolCorrupt         the spool file is not a healthy spool (it is moved aside)
    └── UpdateError              a model update was rejected or failed; ``reason`` says why
        ├── AlreadyAccepted      the very manifest accepted before, seen again: ignored quietly
        └── UnverifiedOffer      refused before any signature was verified (anyone can send junk)
"""

from __future__ import annotations

from typing import Any


class EdgedError(Exception):
    """Base of every error edged raises on purpose."""


class ConfigError(EdgedError):
    """A configuration-like file (config, profile, allow-list, trust root) is invalid."""


class RequestError(EdgedError):
    """A request failed; ``code`` is the wire error code sent to the client."""

    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def to_wire(self) -> dict[str, dict[str, str]]:
        return error_object(self.code, self.message)


def error_object(code: str, message: str) -> dict[str, dict[str, str]]:
    """The error object of the wire protocol (docs/protocol.md); the one place it is built."""
    return {"error": {"code": code, "message": message}}


class BadRequest(RequestError):
    code = "bad_request"


class Unauthorized(RequestError):
    code = "unauthorized"


class EnvelopeRejected(Unauthorized):
    """A sealed request failed one of the device checks of e2e-v1 section 3.

    ``check`` names the failed check (``size``, ``version``, ``prekey``, ``timestamp``,
    ``decrypt``, ``parse``, ``client``, ``signature``, ``response_topic``, ``replay``).
    """

    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"{check}: {message}")
        self.check = check


class ClockNotSynchronised(EnvelopeRejected):
    """Check 4 under ``[e2e] clock_policy = "reject"``: the device clock is not synchronised.

    Raised only once checks 5-10 have passed, so the sender is an allowed client whose request is
    fresh to the replay cache. Unlike the other rejections it is answered, sealed, so the operator
    learns what to fix: ``opened`` is the authenticated request, ``exchange`` (set by the gateway)
    seals the answer.
    """

    ANSWER = ("the device clock is not synchronised, so the request's timestamp cannot be checked; "
              "let the device sync its clock (NTP), or set [e2e] clock_policy on the device if its host keeps time")

    def __init__(self, opened: object) -> None:
        super().__init__("timestamp", "device clock not synchronised (clock_policy=reject); sync it with NTP, "
                                      "or set e2e.clock_policy if the host keeps time")
        self.opened = opened
        self.exchange: object = None

    def answer(self) -> Unauthorized:
        return Unauthorized(self.ANSWER)


class TooLarge(RequestError):
    code = "too_large"


class Busy(RequestError):
    code = "busy"


class DeadlineExceeded(RequestError):
    code = "deadline_exceeded"


class Cancelled(RequestError):
    code = "cancelled"


class ModelUnavailable(RequestError):
    code = "model_unavailable"


class InternalError(RequestError):
    code = "internal"


class RemoteError(EdgedError):
    """The daemon answered a client's request with an error object (seen from the client side)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class InvalidTopicError(ConfigError):
    """A topic name or topic filter breaks the MQTT rules."""


class StreamError(EdgedError):
    """A sealed response stream is tampered, reordered, truncated or otherwise invalid."""


class StreamFinished(StreamError):
    """The device tried to seal a chunk after the FINAL one."""


class InnerParseError(EdgedError):
    """The inner payload of a sealed request is not exactly the spec layout (device check ``parse``)."""


class PrekeyRecordRejected(EdgedError):
    """A prekey record failed a client-side check; ``reason`` is a short machine-readable word."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


class EngineError(EdgedError):
    """An engine could not load a model or generate."""


class SensorError(EdgedError):
    """A power or thermal sensor could not be read or parsed."""


class TransportError(EdgedError):
    """A transport could not start, or lost its connection."""


class IdleConnection(EdgedError):
    """No frame started within the idle timeout: the connection is closed without an answer."""


class UpdateError(EdgedError):
    """A model update was rejected or failed; ``reason`` is a short machine-readable word."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason


class AlreadyAccepted(UpdateError):
    """The very manifest this device accepted before (e.g. a retained message seen again): ignore it quietly."""

    def __init__(self, manifest: Any, message: str) -> None:
        super().__init__("version", message)
        self.manifest = manifest  # the fleet.manifest.ReleaseManifest accepted before (errors.py imports nothing)


class SpoolError(EdgedError):
    """The telemetry spool cannot store or read records (disk full, I/O error, bad use)."""


class RecordTooLarge(SpoolError):
    """One record is larger than the per-record limit; it is refused, never truncated."""


class SpoolCorrupt(SpoolError):
    """The file is not a healthy spool; the spool moves it aside and starts a new one."""


class UnverifiedOffer(UpdateError):
    """Refused before any signature was verified (junk, a wrong key, no trust root): anyone can send this."""

"""The ``[updates]`` section of the daemon config: who this device is in the fleet and how it downloads."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Literal, Self

from pydantic import BeforeValidator, Field, field_validator, model_validator

from edged.fleet.install_window import MAX_WINDOW_TEXT, InstallWindow, parse_window
from edged.fleet.names import GIB, Name
from edged.crypto.clock import UpdateClockPolicy, update_clock_policy
from edged.validation import StrictModel

if TYPE_CHECKING:  # the documents' code is imported when an update is handled, not with the config
    from edged.fleet.manifest import ArtifactLimits, FleetMembership
    from edged.fleet.trust import ExpiryClock

# Defaults with the reason for each value.
DEFAULT_WINDOW_BYTES = 4 * 1024 * 1024  # in flight: fills a LAN round trip (about 75 MB/s locally), small for a Pi
DEFAULT_REQUEST_BYTES = 512 * 1024  # per pull message: few requests, still fine-grained retries
DEFAULT_IDLE_S = 5.0  # a chunk not back in 5 s over a local broker is lost, not slow
DEFAULT_MAX_RETRIES = 8  # per chunk; past that the depot is gone and the download waits for a retry
DEFAULT_RETRY_AFTER_S = 300.0  # a failed download is tried again after this long (or on the next offer)
DEFAULT_PROGRESS_S = 2.0  # retained progress reports at most this often: a fleet of them is broker load
DEFAULT_SYNC_BYTES = 8 * 1024 * 1024  # fsync data, then the bitmap, every 8 MiB: bounds work lost on power cut

InstallWhen = Literal["any", "idle", "parked"]


class UpdateSettings(StrictModel):
    """Signed model updates over MQTT (issue 6). Present in the config = updates on (needs ``[mqtt]``).

    The device takes a release only if it is signed by its trust root (``edged fleet install-root``),
    names this ``fleet`` and matches ``device id``, ``groups`` and ``hardware``.
    """

    fleet: Name = Field(default="default", description="fleet name; releases of other fleets are refused")
    channels: list[Name] = Field(
        default_factory=list, max_length=16, description="release channels whose retained offers this device follows"
    )
    groups: list[Name] = Field(
        default_factory=list, max_length=64, description="device groups: the device follows their offer topics too"
    )
    hardware: list[Name] = Field(default_factory=list, max_length=16, description="hardware ids, e.g. rpi5")
    clock_policy: Annotated[UpdateClockPolicy, BeforeValidator(update_clock_policy)] = Field(
        default="reject",
        description="with an unsynchronised clock (the words of [e2e] clock_policy): 'reject' refuses offers "
        "(reason clock) until NTP has synced; 'trust-system-clock' checks expiry against the local clock anyway "
        "(no time source at all); the older 'require_sync' and 'trust_local' are still read",
    )
    max_artifact_bytes: int = Field(
        default=8 * GIB, ge=1, le=2**53,
        description="largest model accepted: a GGUF file, or all the files of an ONNX directory together")
    window_bytes: int = Field(
        default=DEFAULT_WINDOW_BYTES, ge=16 * 1024, le=256 * 1024 * 1024,
        description="bytes of chunks requested and not yet received (at least one chunk)",
    )
    request_bytes: int = Field(
        default=DEFAULT_REQUEST_BYTES, ge=16 * 1024, le=64 * 1024 * 1024,
        description="bytes asked for in one pull request (at least one chunk)",
    )
    idle_timeout_s: float = Field(
        default=DEFAULT_IDLE_S, ge=0.05, le=600.0, description="a requested chunk not back after this is asked again"
    )
    max_retries: int = Field(
        default=DEFAULT_MAX_RETRIES, ge=1, le=1000, description="re-requests of one chunk before the download fails"
    )
    retry_after_s: float = Field(
        default=DEFAULT_RETRY_AFTER_S, ge=1.0, le=86_400.0, description="wait before retrying a failed download"
    )
    progress_interval_s: float = Field(
        default=DEFAULT_PROGRESS_S, ge=0.1, le=3600.0, description="minimum time between two progress reports"
    )
    sync_bytes: int = Field(
        default=DEFAULT_SYNC_BYTES,
        ge=64 * 1024,
        le=1024**3,
        description="fsync the partial file and its bitmap after this many new bytes",
    )
    health_prompt: str = Field(
        default="Say OK.",
        min_length=1,
        max_length=2000,
        description="health-check prompt used when the release manifest has none",
    )
    health_timeout_s: int = Field(
        default=120, ge=1, le=3600, description="health-check time (load plus answer) when the manifest sets none"
    )

    install_window: str | None = Field(
        default=None, max_length=MAX_WINDOW_TEXT,
        description="local times HH:MM-HH:MM (may cross midnight, e.g. 22:00-05:00) when a downloaded release "
        "may be installed; absent = at any time. Downloads go on outside it",
    )
    install_when: InstallWhen = Field(
        default="any",
        description="'any'; 'idle': no request in flight or queued; 'parked': the governor's parked profile "
        "(ignition_off_profile) is active. Checked with install_window before each install",
    )

    @field_validator("install_window")
    @classmethod
    def _window_parses(cls, value: str | None) -> str | None:
        return None if value is None else str(parse_window(value))

    def window(self) -> InstallWindow | None:
        return None if self.install_window is None else parse_window(self.install_window)

    @model_validator(mode="after")
    def _window_holds_a_request(self) -> Self:
        if self.request_bytes > self.window_bytes:
            raise ValueError("request_bytes must not exceed window_bytes")
        return self

    def window_chunks(self, chunk_size: int) -> int:
        return max(1, self.window_bytes // chunk_size)

    def request_chunks(self, chunk_size: int) -> int:
        return max(1, min(self.request_bytes // chunk_size, self.window_chunks(chunk_size)))

    def membership(self, device_id: str) -> FleetMembership:
        from edged.fleet.manifest import FleetMembership

        return FleetMembership(
            fleet=self.fleet, device_id=device_id, groups=frozenset(self.groups), hardware=frozenset(self.hardware)
        )

    def limits(self) -> ArtifactLimits:
        from edged.fleet.manifest import KNOWN_FORMATS, MAX_RELEASE_FILES, ArtifactLimits

        # A release is one model (a GGUF file or an ONNX directory): the cap is for the whole model.
        return ArtifactLimits(max_artifact_bytes=self.max_artifact_bytes, max_total_bytes=self.max_artifact_bytes,
                              max_artifacts=MAX_RELEASE_FILES, allowed_formats=list(KNOWN_FORMATS))

    def expiry_clock(self) -> ExpiryClock:
        from edged.fleet.trust import ExpiryClock

        return ExpiryClock(policy=self.clock_policy)

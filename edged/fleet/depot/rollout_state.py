"""The durable record of a rollout in the operator's key directory, and the lock of the process running it.

``KEYS/rollouts/<fleet>-<channel>-<version>.json`` is replaced atomically (edged.atomic) after every change,
so a Ctrl-C, SIGTERM or kill -9 leaves the last recorded state and the next ``start``/``resume`` carries on
from it. ``<id>.lock`` is held (flock) by the one process running the rollout and names it; the kernel
drops the lock when that process dies, however it dies. ``<id>.request.json`` is how ``pause`` and
``abort`` ask a running process to stop.
"""

from __future__ import annotations

import fcntl
import getpass
import json
import os
import socket
import time
from pathlib import Path
from typing import Final, Literal

from pydantic import Field, ValidationError

from edged import atomic
from edged.errors import ConfigError, UpdateError
from edged.fleet import dsse
from edged.validation import StrictModel

MAX_STATE_BYTES: Final = 32 * 1024 * 1024
MAX_SMALL_BYTES: Final = 4096
MAX_HISTORY: Final = 100
RolloutPhase = Literal["running", "paused", "aborted", "finished"]
WavePhase = Literal["waiting", "running", "done"]


class DeviceRecord(StrictModel):
    outcome: str = Field(max_length=16, description="pending, offline, deferred, in_progress, succeeded, failed")
    label: str = Field(default="-", max_length=96, description="the device's last update state, as status shows it")
    presence_at_start: str = Field(default="?", max_length=16, description="online/offline when its wave started")
    previous_model: str | None = Field(default=None, max_length=256, description="model it served before")
    previous_version: int | None = Field(default=None, ge=0, description="release version it served before")


class WaveRecord(StrictModel):
    group: str = Field(max_length=64)
    percent: int = Field(ge=1, le=100)
    phase: WavePhase = "waiting"
    started_unix_ms: int | None = Field(default=None, ge=0)
    offer_topics: list[str] = Field(default_factory=list, max_length=100_000)
    devices: dict[str, DeviceRecord] = Field(default_factory=dict, max_length=100_000)

    def label(self) -> str:
        return self.group if self.percent == 100 else f"{self.group}:{self.percent}"

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(("total", "succeeded", "failed", "in_progress", "deferred", "pending", "offline"), 0)
        counts["total"] = len(self.devices)
        for record in self.devices.values():
            counts[record.outcome] = counts.get(record.outcome, 0) + 1
        return counts


class Holder(StrictModel):
    user: str = Field(max_length=64)
    host: str = Field(max_length=255)
    pid: int = Field(ge=1)
    since_unix_ms: int = Field(ge=0)

    def describe(self) -> str:
        since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.since_unix_ms / 1000))
        return f"{self.user}@{self.host} (pid {self.pid}) since {since}"


class RolloutState(StrictModel):
    v: Literal[1] = 1
    id: str = Field(max_length=200)
    fleet: str = Field(max_length=64)
    channel: str = Field(max_length=64)
    version: int = Field(ge=1)
    manifest_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="the signed envelope this rollout offers")
    manifest_path: str = Field(max_length=4096)
    topic_prefix: str = Field(max_length=256)
    success_threshold: float = Field(ge=0, le=100)
    error_threshold: float = Field(ge=0, le=100)
    wave_timeout_s: float = Field(gt=0)
    phase: RolloutPhase = "running"
    reason: str | None = Field(default=None, max_length=500)
    waves: list[WaveRecord] = Field(min_length=1, max_length=32)
    created_unix_ms: int = Field(ge=0)
    updated_unix_ms: int = Field(ge=0)
    paused_unix_ms: int | None = Field(default=None, ge=0, description="when it was paused (the wave clock stops)")
    history: list[str] = Field(default_factory=list, max_length=MAX_HISTORY)

    def current_wave(self) -> int | None:
        running = [i for i, wave in enumerate(self.waves) if wave.phase == "running"]
        return running[-1] if running else None

    def committed(self) -> dict[str, DeviceRecord]:
        return {d: r for wave in self.waves for d, r in wave.devices.items() if r.outcome == "succeeded"}


class RolloutRequest(StrictModel):
    action: Literal["pause", "abort"]
    by: str = Field(max_length=200)
    at_unix_ms: int = Field(ge=0)


def now_ms() -> int:
    return int(time.time() * 1000)


def holder_now() -> Holder:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid{os.getuid()}"
    return Holder(user=user[:64], host=socket.gethostname()[:255], pid=os.getpid(), since_unix_ms=now_ms())


class RolloutStore:
    """The rollouts of one key directory."""

    def __init__(self, keys_dir: Path) -> None:
        self.directory = keys_dir / "rollouts"

    def path(self, rollout_id: str) -> Path:
        return self.directory / f"{rollout_id}.json"

    def exists(self, rollout_id: str) -> bool:
        return self.path(rollout_id).exists()

    def load(self, rollout_id: str) -> RolloutState:
        path = self.path(rollout_id)
        try:
            raw = atomic.read_bounded(path, MAX_STATE_BYTES)
        except FileNotFoundError:
            raise ConfigError(f"no rollout {rollout_id} in {self.directory} (start one with "
                              "`edged fleet rollout start`)") from None
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
        if len(raw) > MAX_STATE_BYTES:
            raise ConfigError(f"{path} is larger than {MAX_STATE_BYTES} bytes: not a rollout state; it was left "
                              "untouched")
        try:
            return RolloutState.model_validate(dsse.loads_strict(raw, "rollout state"))
        except (ValidationError, UpdateError) as exc:
            detail = dsse.describe_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
            raise ConfigError(f"{path} is damaged ({detail[:300]}); it was left untouched: restore it from a "
                              "backup or move it away and start the rollout again") from None

    def save(self, state: RolloutState) -> RolloutState:
        fresh = state.model_copy(update={"updated_unix_ms": now_ms()})
        atomic.write_atomic(self.path(state.id), fresh.model_dump_json(indent=1).encode(), 0o600)
        return fresh

    def ids(self) -> list[str]:
        if not self.directory.is_dir():
            return []
        return sorted(p.stem for p in self.directory.glob("*.json") if not p.name.endswith(".request.json"))

    # ---- requests from pause / abort to the running process --------------------------------------
    def request_path(self, rollout_id: str) -> Path:
        return self.directory / f"{rollout_id}.request.json"

    def post_request(self, rollout_id: str, action: Literal["pause", "abort"]) -> None:
        request = RolloutRequest(action=action, by=holder_now().describe()[:200], at_unix_ms=now_ms())
        atomic.write_atomic(self.request_path(rollout_id), request.model_dump_json().encode(), 0o600)

    def take_request(self, rollout_id: str) -> RolloutRequest | None:
        """The pending request (removed once read); a damaged one is removed and ignored."""
        path = self.request_path(rollout_id)
        try:
            raw = atomic.read_bounded(path, MAX_SMALL_BYTES)
        except OSError:
            return None
        path.unlink(missing_ok=True)
        try:
            return RolloutRequest.model_validate(dsse.loads_strict(raw, "rollout request"))
        except (ValidationError, UpdateError):
            return None


class RolloutLock:
    """An exclusive flock on ``<id>.lock`` that names its holder; released on close or process death."""

    def __init__(self, store: RolloutStore, rollout_id: str) -> None:
        self.path = store.directory / f"{rollout_id}.lock"
        self._fd: int | None = None

    def acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder_now().model_dump_json().encode(), 0)
        os.fsync(fd)
        self._fd = fd
        return True

    def held_elsewhere(self) -> bool:
        """Is a process running this rollout now? (A shared lock is refused while it holds the exclusive one.)"""
        try:
            fd = os.open(self.path, os.O_RDONLY)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # closing drops the shared lock if it was taken
        return False

    def holder(self) -> Holder | None:
        try:
            raw = atomic.read_bounded(self.path, MAX_SMALL_BYTES)
            return Holder.model_validate(json.loads(raw))
        except (OSError, ValueError, ValidationError):
            return None

    def refusal(self, rollout_id: str) -> ConfigError:
        holder = self.holder()
        who = holder.describe() if holder else "another process (its lock file names nobody)"
        return ConfigError(f"rollout {rollout_id} is being run by {who}; only one process runs a rollout. Watch "
                           f"it with `edged fleet rollout status --watch`, or stop it with `pause` or `abort`")

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def wait_free(self, timeout: float) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.acquire():
                return True
            time.sleep(0.1)
        return False

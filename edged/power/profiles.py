"""Power profile schema (one strict TOML file per profile) and its loaders."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

import edged
from edged.errors import ConfigError
from edged.validation import StrictModel, describe_validation_error, read_toml

MAX_PROFILE_BYTES = 64 * 1024
PROFILE_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"

Priority = Literal["interactive", "normal", "background"]
KvCacheType = Literal["f16", "q8_0", "q4_0"]

MIN_BUDGET_TOKENS_PER_S = 4.0


class ProfileEngine(StrictModel):
    """How the engine runs the model; changing any field but ``max_tokens`` needs a reload."""


    threads: int = Field(ge=1, le=64, description="CPU threads for decoding (clamped to the CPU count)")
    batch: int = Field(ge=1, le=4096, description="n_batch: prompt tokens evaluated per step")
    context: int = Field(ge=128, le=131072, description="n_ctx: context window in tokens")
    kv_cache_type: KvCacheType = Field(description="KV cache element type; q8_0/q4_0 save memory")
    mmap: bool = Field(description="map the model file instead of reading it into memory")
    mlock: bool = Field(description="lock the model in RAM so it is never swapped out")
    max_tokens: int = Field(ge=1, le=32768, description="upper bound on completion tokens per request")


class PaceSettings(StrictModel):
    """Pacing between tokens, applied at the next token after a profile change.

    The pause after each token is the larger of two constraints (``pause_after_token``):
    a token-rate cap ``min(max_tokens_per_s, power_budget_w / joules_per_token)``, where
    joules_per_token is the meter's recent figure (no budget cap until one is known), and the duty
    cycle, which keeps generation to that fraction of wall time.
    """


    max_tokens_per_s: float | None = Field(
        default=None, gt=0, le=10000, description="decode rate cap in tokens/s; absent = no cap")
    duty_cycle: float = Field(
        gt=0, le=1, description="fraction of wall time spent generating; 1 = never pause")
    power_budget_w: float | None = Field(
        default=None, gt=0, le=1000,
        description="average power to hold while generating, in W; turned into a token-rate cap")

    def token_rate_cap(self, joules_per_token: float | None) -> float | None:
        """The tokens/s ceiling from the rate cap and the power budget, ``None`` when uncapped.

        A budget of B W at J joules per token allows B / J tokens/s on average. ``joules_per_token``
        comes from the energy meter: the last request's J/token, or during a request the current
        power divided by the current decode rate. Until a figure exists the budget adds no cap.
        """
        caps: list[float] = []
        if self.max_tokens_per_s is not None:
            caps.append(self.max_tokens_per_s)
        if self.power_budget_w is not None and joules_per_token is not None and joules_per_token > 0:
            # A budget below the board's idle power can never be met; slowing further only stretches
            # requests towards their deadlines, so the budget's cap stops at a floor.
            caps.append(max(self.power_budget_w / joules_per_token, MIN_BUDGET_TOKENS_PER_S))
        return min(caps) if caps else None

    def pause_after_token(self, token_seconds: float, joules_per_token: float | None) -> float:
        """Seconds to sleep after a token that took ``token_seconds`` (pure arithmetic, no I/O).

        The token period is stretched to the longest of: the token itself, ``token_seconds /
        duty_cycle`` (generate only that fraction of the time) and ``1 / token_rate_cap``.
        """
        token_seconds = max(0.0, token_seconds)
        period = token_seconds / self.duty_cycle
        cap = self.token_rate_cap(joules_per_token)
        if cap is not None:
            period = max(period, 1.0 / cap)
        return max(0.0, period - token_seconds)


class AdmissionSettings(StrictModel):
    """Which requests the core accepts while this profile is active."""


    queue_length: int = Field(ge=0, le=1024, description="waiting requests beyond the running one")
    priorities: list[Priority] = Field(
        min_length=1, max_length=3, description="request priorities admitted; others get `busy`")
    requests_per_minute: int | None = Field(
        default=None, ge=1, le=100000, description="per-client request rate; absent = unlimited")

    @field_validator("priorities")
    @classmethod
    def _unique(cls, value: list[Priority]) -> list[Priority]:
        if len(set(value)) != len(value):
            raise ValueError("priorities must not repeat")
        return value


class IdleSettings(StrictModel):
    """What happens when no request arrives for a while."""


    unload_after_s: float | None = Field(
        default=None, gt=0, le=7 * 24 * 3600,
        description="unload the model after this many idle seconds (GGUF with mmap on and mlock off: the context "
                    "and KV cache are freed, the mapped weights kept as reclaimable file pages); absent = never")


class ProfileUpdates(StrictModel):
    """Whether fleet model updates may use the network and disk, and switch models, while this profile is active."""


    allow_downloads: bool = Field(description="true lets model update downloads run")
    allow_installs: bool = Field(
        default=True, description="optional, default true: false keeps a downloaded release waiting (state "
        "deferred, reason profile) until a profile that allows installs is active")


class Profile(StrictModel):
    """One power profile: engine, pacing, admission, idle and update policy."""


    name: str = Field(pattern=PROFILE_NAME_PATTERN, description="equals the file stem")
    description: str = Field(min_length=1, max_length=500, description="one line for operators")
    engine: ProfileEngine = Field(description="engine settings")
    pace: PaceSettings = Field(description="token pacing")
    admission: AdmissionSettings = Field(description="admission control")
    idle: IdleSettings = Field(description="idle policy")
    updates: ProfileUpdates = Field(description="update policy")

    def needs_reload(self, other: Profile) -> bool:
        """True when switching between the two profiles means reloading the model."""
        mine, theirs = self.engine, other.engine
        return (mine.threads, mine.context, mine.batch, mine.kv_cache_type, mine.mmap, mine.mlock) != (
            theirs.threads, theirs.context, theirs.batch, theirs.kv_cache_type, theirs.mmap, theirs.mlock)


def parse_profile(data: dict[str, Any], source: str) -> Profile:
    """Validate already-parsed TOML; errors name ``source`` and every bad field."""
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, source, show_values=True)) from None


def load_profile(path: Path | str) -> Profile:
    """Read, parse and validate one profile file; its ``name`` must equal the file stem."""
    path = Path(path)
    profile = parse_profile(read_toml(path, MAX_PROFILE_BYTES), str(path))
    if profile.name != path.stem:
        raise ConfigError(f"{path}: name: {profile.name!r} does not match the file name {path.stem!r}")
    return profile


def load_profiles(directory: Path | str) -> dict[str, Profile]:
    """Every ``*.toml`` in ``directory``; all bad files are reported together in one ConfigError."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ConfigError(f"{directory}: profiles directory does not exist")
    profiles: dict[str, Profile] = {}
    problems: list[str] = []
    for path in sorted(directory.glob("*.toml")):
        try:
            profiles[path.stem] = load_profile(path)
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError("\n".join(problems))
    if not profiles:
        raise ConfigError(f"{directory}: no *.toml profiles found")
    return profiles


def builtin_profiles_dir() -> Path:
    """The shipped profiles: ``edged/_profiles`` in a wheel, else ``<repo>/profiles`` in a checkout."""
    package_dir = Path(edged.__file__).parent
    for candidate in (package_dir / "_profiles", package_dir.parent / "profiles"):
        if candidate.is_dir() and any(candidate.glob("*.toml")):
            return candidate
    raise ConfigError(f"no built-in profiles found next to {package_dir} (broken install?)")

"""Tokens/s, average power and energy per token in each power profile, on one daemon, one after another.

Each profile is pinned with the `profile` control op (as `edged profile set` does), which reloads the
model with that profile's engine settings; a short warm-up request absorbs the reload and is not
counted. Every request asks with "priority": "interactive", the only priority `parked` admits, so all
profiles see the same requests. Pacing (eco, parked) is part of what is measured: it is the profile.

Power and energy come from the final event's `edged` object: W = energy_j / total time, J/token =
energy_j / completion tokens, per request, medians reported. `energy_source` says whether the joules
were measured (a power sensor) or estimated from CPU time and a board model.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from edged.clients.socket import RemoteError

from benchlib.prompts import CHAT_PROMPTS, chat_messages
from benchlib.samples import RequestSample, summarize_requests
from benchlib.scenarios.base import Log, Scenario, describe_sample
from benchlib.settings import EDGED_PROFILE, BenchSettings
from benchlib.targets.base import POWER_PROFILES, Target
from benchlib.targets.edged_socket import EdgedSocketTarget

PROFILES = ("performance", "balanced", "eco", "parked")
PRIORITY = "interactive"
WARMUP_TOKENS = 4   # enough to load the model and take the first-request costs, short under parked's pace
BUSY_RETRIES = 3    # parked admits 6 requests a minute: a refusal means wait for the rate limit, not fail
BUSY_WAIT_S = 12.0


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def energy_figures(samples: list[RequestSample]) -> dict[str, Any]:
    """Median W and J/token over requests, from the daemon's own energy and total time per request."""
    watts, per_token = [], []
    for sample in samples:
        stats = sample.server.get("edged", {})
        energy, total_ms = stats.get("energy_j"), stats.get("total_ms")
        if isinstance(energy, (int, float)) and isinstance(total_ms, (int, float)) and total_ms > 0:
            watts.append(energy / (total_ms / 1000))
        if isinstance(energy, (int, float)) and sample.completion_tokens:
            per_token.append(energy / sample.completion_tokens)
    sources = sorted({str(s.server.get("edged", {}).get("energy_source")) for s in samples})
    totals = [s.server.get("edged", {}).get("total_ms") for s in samples]
    # End to end: completion tokens over the daemon's whole request time (includes prefill and pauses).
    overall = [s.completion_tokens / (t / 1000) for s, t in zip(samples, totals) if isinstance(t, (int, float)) and t]
    return {"power_w_median": _median(watts), "energy_j_per_token_median": _median(per_token),
            "energy_sources": sources, "estimate": sources == ["estimate"],
            "end_to_end_tokens_per_s_median": _median(overall)}


class PowerProfilesScenario(Scenario):
    name = "power-profiles"
    requires = frozenset({POWER_PROFILES})

    def run(self, target: Target, settings: BenchSettings, log: Log) -> dict[str, Any]:
        assert isinstance(target, EdgedSocketTarget)
        profiles: dict[str, Any] = {}
        try:
            for profile in PROFILES:
                profiles[profile] = self._one_profile(target, profile, settings, log)
        finally:
            target.control("profile", set=EDGED_PROFILE)   # leave the daemon as it started
        return {"profiles": profiles, "priority": PRIORITY, "tokens": settings.profile_tokens,
                "requests_per_profile": settings.profile_requests}

    def _one_profile(self, target: EdgedSocketTarget, profile: str, settings: BenchSettings,
                     log: Log) -> dict[str, Any]:
        reply = target.control("profile", set=profile)
        if reply.get("profile") != profile:
            raise RuntimeError(f"asked for profile {profile!r}, the daemon runs {reply.get('profile')!r}: {reply}")
        warmup = self._ask(target, "warm-up", WARMUP_TOKENS, log)
        model = target.control("status").get("model") or {}
        log(f"    {profile:<12} warm-up {describe_sample(warmup)} (takes any model reload; "
            f"threads {model.get('threads')})")
        samples = []
        prompts = list(CHAT_PROMPTS)
        for index in range(settings.profile_requests):
            prompt_id = prompts[index % len(prompts)]
            sample = self._ask(target, prompt_id, settings.profile_tokens, log)
            ran_in = sample.server.get("edged", {}).get("profile")
            if ran_in != profile:
                raise RuntimeError(f"a request meant for {profile!r} ran in profile {ran_in!r}")
            samples.append(sample)
            log(f"    {profile:<12} {prompt_id:<18} {describe_sample(sample)}")
        figures = energy_figures(samples)
        rate = (summarize_requests(samples)["decode_tokens_per_s"] or {}).get("median")
        log(f"    {profile:<12} {rate or 0:.1f} tok/s, {figures['power_w_median'] or 0:.2f} W, "
            f"{figures['energy_j_per_token_median'] or 0:.4f} J/token ({', '.join(figures['energy_sources'])})")
        return {"samples": [s.to_json() for s in samples], "warmup": warmup.to_json(),
                "summary": summarize_requests(samples), "threads": model.get("threads"),
                "context": model.get("context"), **figures}

    @staticmethod
    def _ask(target: EdgedSocketTarget, prompt_id: str, max_tokens: int, log: Log) -> RequestSample:
        for attempt in range(BUSY_RETRIES + 1):
            try:
                return target.socket_chat(chat_messages(prompt_id), max_tokens, prompt_id, priority=PRIORITY)
            except RemoteError as exc:
                if exc.code != "busy" or attempt == BUSY_RETRIES:
                    raise
                log(f"    busy ({exc.message}); waiting {BUSY_WAIT_S:.0f} s")
                time.sleep(BUSY_WAIT_S)
        raise AssertionError("unreachable")

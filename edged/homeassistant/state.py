"""The values behind the Home Assistant entities: the device state JSON and the model's update JSON.

Unknown values are JSON null, which Home Assistant's templates render as ``None``: the entity shows
"unknown" instead of a made-up number.
"""

from __future__ import annotations

import json
import statistics
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable

from edged.fleet.messages import UpdateStateReport
from edged.power.readings import ThrottleState
from edged.state import PowerState
from edged.summary import RequestSummary

MEDIAN_WINDOW = 100  # successful requests the medians cover
IN_PROGRESS = frozenset({"verifying", "downloading", "paused", "installing"})
MAX_SUMMARY = 255  # Home Assistant's limit for release_summary


@dataclass(frozen=True)
class DeviceFacts:
    """What the Home Assistant feature reads from the daemon; each call is cheap and never blocks."""

    power: Callable[[], PowerState]
    profile: Callable[[], str]
    queue_depth: Callable[[], int]
    served: Callable[[], int]
    model_name: Callable[[], str]
    profile_names: Callable[[], list[str]]
    profile_choice: Callable[[], str]  # the remote override, or "auto"
    set_profile: Callable[[str], Any]  # raises BadRequest for a name that is not a profile


class RequestWindow:
    """The last successful request and the medians of the recent ones."""

    def __init__(self, size: int = MEDIAN_WINDOW) -> None:
        self._speeds: deque[float] = deque(maxlen=size)
        self._ttfts: deque[float] = deque(maxlen=size)
        self.last: RequestSummary | None = None

    def add(self, summary: RequestSummary) -> bool:
        """Only answered requests count; returns whether this one did."""
        if not summary.ok:
            return False
        self.last = summary
        if summary.decode_tokens_per_s:
            self._speeds.append(summary.decode_tokens_per_s)
        if summary.time_to_first_token_ms is not None:
            self._ttfts.append(summary.time_to_first_token_ms)
        return True

    def values(self) -> dict[str, Any]:
        last = self.last
        per_token = (last.energy_j / last.output_tokens
                     if last is not None and last.output_tokens and last.energy_j else None)
        return {"decode_tps": _round(last.decode_tokens_per_s or None if last else None, 2),
                "decode_tps_median": _round(statistics.median(self._speeds) if self._speeds else None, 2),
                "ttft_ms": _round(last.time_to_first_token_ms if last else None, 1),
                "ttft_ms_median": _round(statistics.median(self._ttfts) if self._ttfts else None, 1),
                "j_per_token": _round(per_token, 5)}


def _round(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _on_off(value: bool | None) -> str | None:
    return None if value is None else ("ON" if value else "OFF")


def device_state(facts: DeviceFacts, window: RequestWindow) -> bytes:
    power = facts.power()
    throttle = ThrottleState.from_bits(power.throttled_flags) if power.throttled_flags is not None else None
    state = {**window.values(),
             "power_w": _round(power.power_w, 3),
             "energy_wh": _round(power.energy_j / 3600 if power.energy_j is not None else None, 4),
             "energy_source": power.energy_source, "energy_scope": power.energy_scope,
             "cpu_temp_c": _round(power.temperature_cel, 1),
             "throttled": _on_off(throttle.thermally_limited if throttle else None),
             "under_voltage": _on_off(throttle.under_voltage if throttle else None),
             "profile": facts.profile(), "profile_choice": facts.profile_choice(),
             "queue_depth": facts.queue_depth(), "requests_served": facts.served()}
    return json.dumps(state, separators=(",", ":")).encode()


def update_state(report: UpdateStateReport | None, model_name: str) -> bytes:
    """The update entity's JSON from the signed-update state report (None: no update seen yet)."""
    installed = model_name  # the configured model (no signed release): the same name before and after a report
    if report is not None and report.active is not None and report.active.release is not None:
        release = report.active.release
        installed = f"{release.channel} v{release.version}"
    payload: dict[str, Any] = {"installed_version": installed, "latest_version": installed, "in_progress": False,
                               "update_percentage": None, "title": "Language model",
                               "release_summary": f"serving {model_name}"}
    if report is not None and report.release is not None:
        offered = f"{report.release.channel} v{report.release.version}"
        if report.state in IN_PROGRESS:
            payload["latest_version"] = offered
            payload["in_progress"] = True
            if report.state in ("downloading", "paused") and report.progress_pct is not None:
                payload["update_percentage"] = round(report.progress_pct, 1)
        elif report.state == "deferred":  # downloaded, waiting for its install window or policy: pending
            payload["latest_version"] = offered
        summary = f"{offered}: {report.label()}" + (f"; {report.detail}" if report.detail else "")
        payload["release_summary"] = summary[:MAX_SUMMARY]
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()

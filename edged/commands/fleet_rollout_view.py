"""What `edged fleet rollout` prints: the status table, progress lines, the abort report with its rollback."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from edged.fleet.depot.rollout_runner import summary_of
from edged.fleet.depot.rollout_state import Holder, RolloutState

COLUMNS = ("wave", "group", "phase", "devices", "active", "failed", "in progress", "deferred", "pending", "offline")


def progress_line(state: RolloutState) -> str:
    current = state.current_wave()
    if state.phase != "running" or current is None:
        return f"rollout {state.id}: {state.phase}" + (f" ({state.reason})" if state.reason else "")
    wave = state.waves[current]
    c = wave.counts()
    return (f"wave {current + 1}/{len(state.waves)} {wave.label()}: {c['succeeded']}/{c['total']} active, "
            f"{c['failed']} failed, {c['in_progress']} in progress, {c['deferred']} deferred, "
            f"{c['pending'] + c['offline']} pending ({c['offline']} offline)")


def render_status(state: RolloutState, holder: Holder | None, keys_dir: Path) -> str:
    current = state.current_wave()
    where = f", wave {current + 1} of {len(state.waves)}" if current is not None else ""
    lines = [f"rollout {state.id}: {state.phase}{where}" + (f" ({state.reason})" if state.reason else ""),
             f"thresholds: success {state.success_threshold:g} %, error {state.error_threshold:g} %, "
             f"wave timeout {state.wave_timeout_s:g} s"]
    if holder is not None:
        lines.append(f"run by {holder.describe()}")
    elif state.phase in ("running", "paused"):
        lines.append(f"no process is running it: carry on with `edged fleet rollout resume {state.id} "
                     f"--dir {keys_dir} --mqtt URL`")
    rows: list[tuple[str, ...]] = [COLUMNS]
    for i, wave in enumerate(state.waves):
        c = wave.counts()
        numbers = ("-",) * 7 if wave.phase == "waiting" else tuple(str(c[k]) for k in (
            "total", "succeeded", "failed", "in_progress", "deferred", "pending", "offline"))
        rows.append((str(i + 1), wave.label(), wave.phase, *numbers))
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    waiting = [(d, i, r) for i, wave in enumerate(state.waves) for d, r in sorted(wave.devices.items())
               if r.outcome != "succeeded"]
    if waiting:
        lines.append("devices not active on this release:")
        lines += [f"  {d}  wave {i + 1}  {r.outcome}: {r.label}" for d, i, r in waiting[:200]]
        if len(waiting) > 200:
            lines.append(f"  ... and {len(waiting) - 200} more (--json lists them all)")
    return "\n".join(lines)


def status_json(state: RolloutState, holder: Holder | None) -> dict[str, Any]:
    return {**summary_of(state), "wave_timeout_s": state.wave_timeout_s,
            "runner": None if holder is None else holder.model_dump(),
            "devices": {d: {"wave": i + 1, **r.model_dump(exclude_none=True)}
                        for i, wave in enumerate(state.waves) for d, r in wave.devices.items()},
            "history": state.history}


def next_version(keys_dir: Path, channel: str, at_least: int) -> int:
    versions = [int(m.group(1)) for p in (keys_dir / "releases").glob(f"{channel}-*.json")
                if (m := re.fullmatch(re.escape(channel) + r"-(\d+)\.json", p.name))]
    return max([at_least, *versions]) + 1


def abort_report(state: RolloutState, keys_dir: Path) -> str:
    committed = state.committed()
    lines = [f"rollout {state.id}: {state.phase}" + (f" ({state.reason})" if state.reason else ""),
             "its offers were withdrawn (empty retained messages on "
             f"{sum(len(w.offer_topics) for w in state.waves)} offer topics)"]
    if not committed:
        lines.append("no device committed the new release: every device serves the model it had")
        return "\n".join(lines)
    lines.append(f"committed to {state.channel} v{state.version}, and keeping it ({len(committed)}): "
                 + ", ".join(sorted(committed)))
    previous = sorted({r.previous_model for r in committed.values() if r.previous_model})
    version = next_version(keys_dir, state.channel, state.version)
    model = previous[0] if len(previous) == 1 else "MODEL"
    lines.append("to roll them back, release the model they served before as a new, higher version "
                 "(a device never takes a lower one) and roll that out:")
    if len(previous) > 1:
        lines.append(f"  (they served different models before: {', '.join(previous)}; one release each)")
    elif not previous:
        lines.append("  (their previous model is not known: they served the configured model; name its file)")
    waves = " ".join(f"--wave {w.label()}" for w in state.waves if w.devices.keys() & committed.keys())
    out = f"{state.channel}-{version}.json"
    lines.append(f"  edged fleet release --dir {keys_dir} --model MODELS/{model} --channel {state.channel} "
                 f"--version {version} --out {out}")
    lines.append(f"  edged fleet rollout start {out} --dir {keys_dir} --mqtt URL {waves}")
    return "\n".join(lines)

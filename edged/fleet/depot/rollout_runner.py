"""The rollout's decisions: start a wave, count its devices, go on, finish or abort by itself.

``Rollout.step()`` looks at the roster (what the broker holds), changes the recorded state and saves it
before anything is published, so a process killed anywhere carries on from the record: offers of the
running wave are published again on every start (a device ignores an offer it already took).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Final

import structlog

from edged.fleet.depot.rollout_plan import outcome, share_of
from edged.fleet.depot.rollout_roster import FleetRoster
from edged.fleet.depot.rollout_state import DeviceRecord, RolloutState, RolloutStore, WaveRecord, now_ms
from edged.topics import DeviceTopics, group_offer_topic, rollout_topic

logger = structlog.get_logger(__name__)

Publish = Callable[[list[tuple[str, bytes]]], None]  # retained QoS 1 messages; returns once all are acknowledged
SUMMARY_EVERY_S: Final = 1.0


class Rollout:
    def __init__(self, store: RolloutStore, state: RolloutState, envelope: bytes, roster: FleetRoster,
                 publish: Publish, clock: Callable[[], int] = now_ms) -> None:
        self.store = store
        self.state = state
        self.envelope = envelope
        self.roster = roster
        self.publish = publish
        self.clock = clock
        self._summary_sent: bytes | None = None

    # ---- the decisions -------------------------------------------------------------------------
    def step(self) -> RolloutState:
        if self.state.phase != "running":
            return self.state
        changed = self._refresh_all()
        waves = self.state.waves
        for i, wave in enumerate(waves):
            counts = wave.counts()
            if wave.phase != "waiting" and counts["total"] and \
                    counts["failed"] * 100 / counts["total"] > self.state.error_threshold:
                return self.abort(f"wave {i + 1} ({wave.label()}): {counts['failed']} of {counts['total']} devices "
                                  f"failed, above the error threshold of {self.state.error_threshold:g} %")
        current = self.state.current_wave()
        if current is None:
            following = next((i for i, wave in enumerate(waves) if wave.phase == "waiting"), None)
            if following is None:
                return self._finish()
            return self._start_wave(following)
        wave = waves[current]
        counts = wave.counts()
        if counts["succeeded"] * 100 / counts["total"] >= self.state.success_threshold:
            self._set_wave(current, phase="done")
            self._note(f"wave {current + 1} ({wave.label()}) reached the success threshold: "
                       f"{counts['succeeded']} of {counts['total']} active")
            return self.step()
        if (counts["total"] - counts["failed"]) * 100 / counts["total"] < self.state.success_threshold:
            return self.abort(f"wave {current + 1} ({wave.label()}): {counts['failed']} of {counts['total']} devices "
                              f"failed, so the success threshold of {self.state.success_threshold:g} % cannot be met")
        assert wave.started_unix_ms is not None
        if self.clock() - wave.started_unix_ms > self.state.wave_timeout_s * 1000:
            return self.abort(f"wave {current + 1} ({wave.label()}) timed out after {self.state.wave_timeout_s:g} s: "
                              f"{counts['succeeded']} of {counts['total']} active, {counts['failed']} failed, "
                              f"{counts['pending'] + counts['offline'] + counts['in_progress'] + counts['deferred']} "
                              f"pending ({counts['offline']} offline, {counts['deferred']} deferred)")
        if changed:
            self._save()
        return self.state

    def refresh(self) -> RolloutState:
        """Bring the recorded device outcomes up to date with the roster, deciding nothing."""
        if self._refresh_all():
            self._save()
        return self.state

    def _refresh_all(self) -> bool:
        waves = [self._refresh(i, wave) for i, wave in enumerate(self.state.waves)]
        changed = waves != self.state.waves
        self.state = self.state.model_copy(update={"waves": waves})
        return changed

    def _refresh(self, index: int, wave: WaveRecord) -> WaveRecord:
        if wave.phase == "waiting":
            return wave
        devices = dict(wave.devices)
        if wave.percent == 100:  # the group topic also reaches members that appeared since the wave started
            for device_id in self.roster.members(self.state.fleet, wave.group):
                if device_id not in devices and not self._in_other_wave(device_id, index):
                    devices[device_id] = self._first_record(device_id)
        for device_id, record in devices.items():
            view = self.roster.view(device_id)
            result = outcome(view.report, view.presence, self.state.channel, self.state.version)
            label = printable(view.report.label()) if view.report is not None else "-"
            if result == "offline" and view.report is not None and view.report.release is not None \
                    and view.report.release.version == self.state.version:
                label = f"{label}, offline"
            if (result, label[:96]) != (record.outcome, record.label):
                devices[device_id] = record.model_copy(update={"outcome": result, "label": label[:96]})
        return wave.model_copy(update={"devices": devices})

    def _in_other_wave(self, device_id: str, index: int) -> bool:
        return any(device_id in wave.devices for i, wave in enumerate(self.state.waves) if i != index)

    def _first_record(self, device_id: str) -> DeviceRecord:
        view = self.roster.view(device_id)
        active = view.report.active if view.report is not None else None
        previous_version = active.release.version if active is not None and active.release is not None else None
        return DeviceRecord(outcome="pending", presence_at_start=view.presence,
                            previous_model=active.model if active is not None else None,
                            previous_version=previous_version)

    def _start_wave(self, index: int) -> RolloutState:
        wave = self.state.waves[index]
        release = self.state.id
        taken = {d for i, w in enumerate(self.state.waves) if i < index for d in w.devices}
        members = self.roster.members(self.state.fleet, wave.group)
        chosen = [d for d in share_of(members, wave.percent, release) if d not in taken]
        if not chosen:
            return self.abort(f"wave {index + 1} ({wave.label()}): no device of group {wave.group} in fleet "
                              f"{self.state.fleet} that an earlier wave has not taken is known on the broker "
                              "(devices announce their [updates] groups in their retained status)")
        prefix = self.state.topic_prefix
        topics = ([group_offer_topic(prefix, self.state.fleet, wave.group)] if wave.percent == 100
                  else [DeviceTopics(prefix, d).update_offer for d in chosen])
        self._set_wave(index, phase="running", started_unix_ms=self.clock(), offer_topics=topics,
                       devices={d: self._first_record(d) for d in chosen})
        offline = sum(1 for d in chosen if self.roster.view(d).presence in ("offline", "stopped"))
        self._note(f"wave {index + 1} ({wave.label()}) started: {len(chosen)} devices ({offline} offline)")
        self.publish([(topic, self.envelope) for topic in topics])
        logger.info("rollout wave started", rollout=release, wave=index + 1, devices=len(chosen), offline=offline)
        return self.step()

    def republish_running(self) -> None:
        """After a restart: offer the running wave again (saved before it was published the first time)."""
        current = self.state.current_wave()
        if self.state.phase == "running" and current is not None:
            self.publish([(topic, self.envelope) for topic in self.state.waves[current].offer_topics])

    def abort(self, reason: str) -> RolloutState:
        """Stop for good and withdraw every offer this rollout made (an empty retained message clears one)."""
        self.state = self.state.model_copy(update={"phase": "aborted", "reason": reason[:500]})
        self._note(f"aborted: {reason}")
        self.withdraw()
        logger.warning("rollout aborted", rollout=self.state.id, reason=reason)
        return self.state

    def withdraw(self) -> None:
        topics = [topic for wave in self.state.waves for topic in wave.offer_topics]
        self.publish([(topic, b"") for topic in topics])

    def pause(self, by: str) -> RolloutState:
        self.state = self.state.model_copy(update={"phase": "paused", "reason": f"paused by {by}"[:500],
                                                   "paused_unix_ms": self.clock()})
        self._note(f"paused by {by}")
        return self.state

    def resume(self) -> RolloutState:
        """Paused time does not count against the running wave's timeout."""
        if self.state.phase != "paused":
            return self.state
        paused_for = max(0, self.clock() - (self.state.paused_unix_ms or self.clock()))
        current = self.state.current_wave()
        if current is not None and self.state.waves[current].started_unix_ms is not None:
            started = self.state.waves[current].started_unix_ms or 0
            self._set_wave(current, started_unix_ms=started + paused_for)
        self.state = self.state.model_copy(update={"phase": "running", "reason": None, "paused_unix_ms": None})
        self._note("resumed")
        return self.state

    def _finish(self) -> RolloutState:
        self.state = self.state.model_copy(update={"phase": "finished", "reason": None})
        self._note("finished: every wave reached the success threshold")
        logger.info("rollout finished", rollout=self.state.id)
        return self.state

    # ---- records ---------------------------------------------------------------------------------
    def _set_wave(self, index: int, **changes: object) -> None:
        waves = list(self.state.waves)
        waves[index] = waves[index].model_copy(update=changes)
        self.state = self.state.model_copy(update={"waves": waves})

    def _note(self, event: str) -> None:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.clock() / 1000))
        history = [*self.state.history, f"{stamp} {event}"][-100:]
        self.state = self.state.model_copy(update={"history": history})
        self._save()

    def _save(self) -> None:
        self.state = self.store.save(self.state)

    def summary(self) -> bytes:
        return json.dumps(summary_of(self.state), separators=(",", ":")).encode()

    def publish_summary(self, force: bool = False) -> None:
        """The retained rollout summary that `edged fleet watch` shows (counts only, no device list)."""
        summary = self.summary()
        if force or summary != self._summary_sent:
            self.publish([(rollout_topic(self.state.topic_prefix, self.state.fleet, self.state.id), summary)])
            self._summary_sent = summary


def printable(text: str) -> str:
    """A device's words as the operator's terminal may show them (no control characters)."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)


def summary_of(state: RolloutState) -> dict[str, object]:
    current = state.current_wave()
    return {"id": state.id, "fleet": state.fleet, "channel": state.channel, "version": state.version,
            "phase": state.phase, "reason": state.reason, "wave": None if current is None else current + 1,
            "waves": [{"wave": wave.label(), "phase": wave.phase, **wave.counts()} for wave in state.waves],
            "success_threshold": state.success_threshold, "error_threshold": state.error_threshold,
            "updated_unix_ms": state.updated_unix_ms}

"""`edged fleet rollout pause | resume | abort`: act on a recorded rollout, through its running process if any."""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from pathlib import Path
from typing import Any, Final

from edged.commands.fleet_rollout import pick_rollout, run_rollout, stop_on_signals
from edged.commands.mqtt_options import mqtt_settings
from edged.errors import ConfigError

REQUEST_WAIT_S: Final = 60.0


def _ask_runner(store: Any, rollout_id: str, action: str) -> Any:
    """Have the process running the rollout apply ``action`` and exit; the lock, once free, is ours."""
    from edged.fleet.depot.rollout_state import RolloutLock

    lock = RolloutLock(store, rollout_id)
    if lock.acquire():
        store.take_request(rollout_id)  # left by a process that died before reading it: this command acts now
        return lock
    store.post_request(rollout_id, action)
    print(f"asked the process running {rollout_id} to {action}; waiting for it", file=sys.stderr)
    if not lock.wait_free(REQUEST_WAIT_S):
        holder = lock.holder()
        raise ConfigError(f"the process running {rollout_id} did not stop within {REQUEST_WAIT_S:.0f} s "
                          f"({holder.describe() if holder else 'unknown'}); is it stuck? stop it "
                          "(Ctrl-C or kill) and run this again")
    store.take_request(rollout_id)  # the process died without reading it
    return lock


def cmd_rollout_pause(args: argparse.Namespace) -> int:
    from edged.fleet.depot.rollout_roster import FleetRoster
    from edged.fleet.depot.rollout_runner import Rollout
    from edged.fleet.depot.rollout_state import RolloutStore, holder_now

    store = RolloutStore(args.dir)
    rollout_id = pick_rollout(store, args.rollout)
    lock = _ask_runner(store, rollout_id, "pause")
    try:
        state = store.load(rollout_id)
        if state.phase == "running":
            state = Rollout(store, state, b"", FleetRoster(state.topic_prefix), _no_publish).pause(
                holder_now().describe())
        print(f"rollout {rollout_id}: {state.phase}" + (f" ({state.reason})" if state.reason else ""))
    finally:
        lock.release()
    return 0


def _no_publish(messages: list[tuple[str, bytes]]) -> None:
    if messages:
        raise ConfigError("pausing publishes nothing")


def cmd_rollout_resume(args: argparse.Namespace) -> int:
    from edged.fleet.depot.rollout_roster import FleetRoster
    from edged.fleet.depot.rollout_runner import Rollout
    from edged.fleet.depot.rollout_state import RolloutLock, RolloutStore

    store = RolloutStore(args.dir)
    rollout_id = pick_rollout(store, args.rollout)
    stop = stop_on_signals()
    lock = RolloutLock(store, rollout_id)
    if not lock.wait_free(1.0):
        raise lock.refusal(rollout_id)
    try:
        state = store.load(rollout_id)
        if state.phase in ("finished", "aborted"):
            raise ConfigError(f"rollout {rollout_id} has {state.phase}; nothing to resume")
        envelope = _envelope(args.dir, state)
        if state.phase == "paused":
            state = Rollout(store, state, envelope, FleetRoster(state.topic_prefix), _no_publish).resume()
        return run_rollout(args, store, state, envelope, stop)
    finally:
        lock.release()


def _envelope(keys_dir: Path, state: Any) -> bytes:
    from edged import atomic
    from edged.fleet import dsse

    for path in (Path(state.manifest_path), keys_dir / "releases" / f"{state.channel}-{state.version}.json"):
        try:
            envelope = atomic.read_bounded(path, dsse.MAX_ENVELOPE_BYTES)
        except OSError:
            continue
        if hashlib.sha256(envelope).hexdigest() == state.manifest_sha256:
            return envelope
    raise ConfigError(f"the signed manifest of {state.id} is neither at {state.manifest_path} nor in "
                      f"{keys_dir}/releases/ (or it changed); put it back to carry on")


def cmd_rollout_abort(args: argparse.Namespace) -> int:
    from edged.commands.fleet_rollout_view import abort_report
    from edged.fleet.depot.rollout_roster import FleetRoster
    from edged.fleet.depot.rollout_runner import Rollout
    from edged.fleet.depot.rollout_session import BrokerView
    from edged.fleet.depot.rollout_state import RolloutStore, holder_now

    store = RolloutStore(args.dir)
    rollout_id = pick_rollout(store, args.rollout)
    lock = _ask_runner(store, rollout_id, "abort")
    try:
        state = store.load(rollout_id)
        settings = mqtt_settings(args)
        view = BrokerView(settings, FleetRoster(state.topic_prefix), f"edged-abort-{int(time.time() * 1000) % 10**9}")
        view.open()
        try:
            rollout = Rollout(store, state, b"", view.roster, view.publish)
            state = rollout.refresh()
            if state.phase != "aborted":
                state = rollout.abort(f"aborted by {holder_now().describe()}")
            else:
                rollout.withdraw()  # withdrawing again is harmless and repairs a withdrawal cut short
            rollout.publish_summary(force=True)
        finally:
            view.close()
        print(abort_report(state, args.dir))
    finally:
        lock.release()
    return 0

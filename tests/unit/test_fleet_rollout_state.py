"""The rollout's state file, lock and requests: crash-safe, refused cleanly when damaged or held."""

from __future__ import annotations

import json
import multiprocessing
import os
import sys
from pathlib import Path

import pytest

from edged.cli import build_parser
from edged.commands.fleet_rollout_view import abort_report, next_version, render_status, status_json
from edged.errors import ConfigError
from edged.fleet.depot.rollout_state import DeviceRecord, RolloutLock, RolloutState, RolloutStore, WaveRecord


def main(argv: list[str]) -> int:
    """edged's main without its logging setup (which would bind structlog to this test's captured stderr)."""
    args = build_parser(with_groups=True).parse_args(argv)
    try:
        return int(args.func(args))
    except ConfigError as exc:
        print(f"edged: configuration error: {exc}", file=sys.stderr)
        return 2


def state(**changes: object) -> RolloutState:
    base = RolloutState(id="default-stable-7", fleet="default", channel="stable", version=7, manifest_sha256="a" * 64,
                        manifest_path="/m.json", topic_prefix="edged", success_threshold=100, error_threshold=0,
                        wave_timeout_s=3600, waves=[WaveRecord(group="canary", percent=100),
                                                    WaveRecord(group="lab", percent=50)],
                        created_unix_ms=1, updated_unix_ms=1)
    return base.model_copy(update=changes)


def test_a_saved_state_loads_back_and_leaves_no_temp_file(tmp_path: Path) -> None:
    store = RolloutStore(tmp_path)
    saved = store.save(state())
    assert store.load("default-stable-7") == saved and store.ids() == ["default-stable-7"]
    assert [p.name for p in (tmp_path / "rollouts").iterdir()] == ["default-stable-7.json"]
    assert (tmp_path / "rollouts" / "default-stable-7.json").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("content", [b"", b"{", b"\xff\xfe", b"[]", b'{"v": 2}', b"null",
                                     b'{"v":1,"v":1}', b"{" * 50_000], ids=range(8))
def test_a_damaged_state_is_refused_and_left_untouched(tmp_path: Path, content: bytes) -> None:
    store = RolloutStore(tmp_path)
    path = store.path("default-stable-7")
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=r"damaged.*left untouched"):
        store.load("default-stable-7")
    assert path.read_bytes() == content


def test_truncated_hostile_and_missing_states_are_refused(tmp_path: Path) -> None:
    store = RolloutStore(tmp_path)
    good = store.save(state()).model_dump_json().encode()
    path = store.path("default-stable-7")
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(ConfigError, match="damaged"):
        store.load("default-stable-7")
    hostile = json.loads(good)
    hostile["waves"][0]["devices"] = {"x": {"outcome": "succeeded", "label": "a" * 10_000}}
    hostile["extra"] = 1
    path.write_text(json.dumps(hostile))
    with pytest.raises(ConfigError, match="damaged"):
        store.load("default-stable-7")
    with pytest.raises(ConfigError, match="no rollout other"):
        store.load("other")


def test_an_oversized_state_is_refused_without_reading_it_all(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import edged.fleet.depot.rollout_state as module

    monkeypatch.setattr(module, "MAX_STATE_BYTES", 1000)
    store = RolloutStore(tmp_path)
    store.path("default-stable-7").parent.mkdir(parents=True)
    store.path("default-stable-7").write_bytes(b" " * 5000)
    with pytest.raises(ConfigError, match="larger than 1000 bytes"):
        store.load("default-stable-7")


def _hold(path: str, ready: "multiprocessing.synchronize.Event", done: "multiprocessing.synchronize.Event") -> None:
    lock = RolloutLock(RolloutStore(Path(path)), "default-stable-7")
    assert lock.acquire()
    ready.set()
    done.wait(30)


def test_the_lock_names_its_holder_and_dies_with_it(tmp_path: Path) -> None:
    ready, done = multiprocessing.Event(), multiprocessing.Event()
    holder = multiprocessing.Process(target=_hold, args=(str(tmp_path), ready, done))
    holder.start()
    try:
        assert ready.wait(30)
        lock = RolloutLock(RolloutStore(tmp_path), "default-stable-7")
        assert not lock.acquire() and lock.held_elsewhere()
        refusal = str(lock.refusal("default-stable-7"))
        assert f"pid {holder.pid}" in refusal and "being run by" in refusal
    finally:
        holder.kill()  # like kill -9: the kernel drops the lock
        holder.join(30)
    lock = RolloutLock(RolloutStore(tmp_path), "default-stable-7")
    assert not lock.held_elsewhere() and lock.acquire()
    assert lock.holder() is not None and lock.holder().pid == os.getpid()  # type: ignore[union-attr]
    lock.release()


def test_requests_are_taken_once_and_junk_is_dropped(tmp_path: Path) -> None:
    store = RolloutStore(tmp_path)
    store.post_request("default-stable-7", "abort")
    request = store.take_request("default-stable-7")
    assert request is not None and request.action == "abort"
    assert store.take_request("default-stable-7") is None
    store.request_path("default-stable-7").write_bytes(b'{"action": "delete-everything", "by": "x", "at_unix_ms": 1}')
    assert store.take_request("default-stable-7") is None and not store.request_path("default-stable-7").exists()
    assert store.ids() == []  # a request file is not a rollout


def test_status_and_abort_report_say_what_to_do(tmp_path: Path) -> None:
    (tmp_path / "releases").mkdir()
    for version in (6, 7, 9):
        (tmp_path / "releases" / f"stable-{version}.json").write_text("{}")
    assert next_version(tmp_path, "stable", 7) == 10
    devices = {"pi-1": DeviceRecord(outcome="succeeded", label="active", previous_model="m-v6.gguf"),
               "pi-2": DeviceRecord(outcome="failed", label="rolled_back (load)", previous_model="m-v6.gguf")}
    waves = [WaveRecord(group="canary", percent=100, phase="done", started_unix_ms=1, devices=devices,
                        offer_topics=["edged/fleet/default/group/canary/offer"]),
             WaveRecord(group="lab", percent=50)]
    aborted = state(phase="aborted", reason="wave 1 (canary): 1 of 2 devices failed", waves=waves)
    report = abort_report(aborted, tmp_path)
    assert "committed to stable v7, and keeping it (1): pi-1" in report
    assert f"edged fleet release --dir {tmp_path} --model MODELS/m-v6.gguf --channel stable --version 10" in report
    assert "edged fleet rollout start stable-10.json" in report and "--wave canary" in report
    assert "--wave lab" not in report
    text = render_status(aborted, None, tmp_path)
    assert "aborted" in text and "pi-2  wave 1  failed: rolled_back (load)" in text and "pi-1" not in text
    as_json = status_json(aborted, None)
    assert as_json["devices"]["pi-1"]["wave"] == 1 and as_json["waves"][0]["failed"] == 1
    assert as_json["waves"][1]["phase"] == "waiting"


def test_the_cli_refuses_bad_input_before_touching_the_broker(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                                              ) -> None:
    manifest = tmp_path / "m.json"
    manifest.write_text("{}")
    base = ["fleet", "rollout", "start", str(manifest), "--dir", str(tmp_path), "--mqtt", "mqtt://127.0.0.1:1"]
    assert main([*base, "--wave", "lab:0"]) == 2
    assert "PERCENT" in capsys.readouterr().err
    assert main([*base, "--wave", "lab", "--error-threshold", "150"]) == 2
    assert main([*base, "--wave", "lab", "--wave-timeout", "soon"]) == 2
    assert main([*base, "--wave", "lab"]) == 2  # the manifest is not a signed release
    assert "a key directory" in capsys.readouterr().err
    assert not (tmp_path / "rollouts").exists()
    assert main(["fleet", "rollout", "status", "--dir", str(tmp_path)]) == 2
    assert "no rollout is running or paused" in capsys.readouterr().err
    RolloutStore(tmp_path).save(state())
    assert main(["fleet", "rollout", "status", "--dir", str(tmp_path), "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["id"] == "default-stable-7" and shown["runner"] is None and shown["phase"] == "running"
    RolloutStore(tmp_path).post_request("default-stable-7", "abort")  # left by a process that died unread
    assert main(["fleet", "rollout", "pause", "--dir", str(tmp_path)]) == 0
    assert not RolloutStore(tmp_path).request_path("default-stable-7").exists()
    assert "paused" in capsys.readouterr().out
    assert RolloutStore(tmp_path).load("default-stable-7").phase == "paused"
    assert main(["fleet", "rollout", "status", "--dir", str(tmp_path)]) == 0
    assert "no process is running it" in capsys.readouterr().out
    RolloutStore(tmp_path).save(state(phase="finished"))
    assert main(["fleet", "rollout", "status", "default-stable-7", "--dir", str(tmp_path), "--watch"]) == 0
    assert "finished" in capsys.readouterr().out  # --watch ends with the rollout


def test_every_rollout_command_in_the_docs_and_help_parses() -> None:
    import shlex

    from edged.commands.fleet_rollout import EPILOG

    docs = (Path(__file__).resolve().parents[2] / "docs" / "fleet.md").read_text()
    joined = (docs + "\n" + EPILOG).replace("\\\n", " ")
    commands = [line.strip() for line in joined.splitlines() if line.strip().startswith("edged fleet rollout ")]
    assert len(commands) >= 10
    for command in commands:
        words = shlex.split(command.split("#")[0])[1:]
        build_parser(with_groups=True).parse_args(words)  # SystemExit (a failure) when the docs drifted

"""The daemon with the real demo model over a real Unix socket (issue 2): the protocol against the
in-process daemon; SIGTERM and SIGHUP, and a second daemon refused at start (its exit code), against
`edged serve` subprocesses."""

from __future__ import annotations

import json
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from edged.clients.socket import RemoteError, SocketClient
from edged.engines import llama_backend
from edged.errors import TransportError
from edged.transports.framing import KIND_CONTROL, KIND_JSON, encode_frame, encode_json
from tests.profiles import profile_toml, profiles_dir
from tests.slowdown import scaled

pytestmark = pytest.mark.slow  # starts a daemon or loads a model

QUESTION = {"messages": [{"role": "user", "content": "What is 2+2?"}], "max_tokens": 24}
LONG = {"prompt": "Count from 1 to 2000: 1, 2, 3, 4,", "max_tokens": 1500, "stream": True}

def read_error(client: SocketClient) -> dict:
    kind, payload = client.read_frame()
    return json.loads(payload)


def test_question_gets_text(daemon):
    with daemon.client() as client:
        events = list(client.ask(QUESTION))
    assert len(events) == 1
    answer = events[0]
    assert answer["object"] == "chat.completion"
    assert answer["choices"][0]["message"]["content"].strip()
    assert answer["usage"]["completion_tokens"] > 0
    stats = answer["edged"]
    for key in ("queue_ms", "ttft_ms", "total_ms", "decode_tokens_per_s", "energy_j", "energy_source", "profile"):
        assert key in stats
    assert stats["profile"] == "balanced"


def test_streaming_yields_several_events(daemon):
    with daemon.client() as client:
        events = list(client.ask({**QUESTION, "stream": True, "max_tokens": 32}))
    assert len(events) >= 3
    assert all(e["object"] == "chat.completion.chunk" for e in events)
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
    assert text.strip()
    assert events[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert "edged" in events[-1] and "usage" in events[-1]


def test_two_concurrent_clients_both_answered(daemon):
    answers: dict[int, str] = {}

    def ask(i: int) -> None:
        with daemon.client() as client:
            events = list(client.ask({**QUESTION, "messages": [{"role": "user", "content": f"Say hello to {i}"}]}))
        answers[i] = events[-1]["choices"][0]["message"]["content"]

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(scaled(120))
    assert sorted(answers) == [0, 1] and all(a.strip() for a in answers.values())


def test_disconnect_mid_stream_frees_the_worker(daemon):
    client = daemon.client()
    stream = client.ask(LONG)
    for _ in range(3):
        next(stream)
    client.close()
    line = daemon.wait_for_log(lambda line: line.get("event") == "request" and line.get("outcome") == "cancelled")
    assert line["output_tokens"] < LONG["max_tokens"]
    with daemon.client() as other:  # the worker is free again
        assert list(other.ask(QUESTION))[-1]["choices"][0]["message"]["content"]
    assert daemon.status()["queue"] == {"waiting": 0, "running": 0, "capacity": daemon.status()["queue"]["capacity"]}


def test_status_reports_model_profile_queue_uptime(daemon):
    status = daemon.status()
    assert status["model"]["format"] == "gguf" and status["profile"] == "balanced"
    assert status["queue"]["waiting"] == 0 and status["uptime_s"] >= 0 and status["version"]


def test_the_start_log_names_the_cpu_variant_the_engine_runs(daemon):
    """Which kernels a device runs (a portable build picks them per CPU) is in its log from the start."""
    loaded = next(line for line in daemon.log_lines() if line.get("event") == "model loaded")  # the start's
    installed = llama_backend.variant_modules(llama_backend.lib_dir(llama_backend.bindings()))
    variant = loaded.get("cpu_variant")
    assert variant in (installed or ["built-in"]), (variant, installed)  # one module, not a list or "unknown"


def test_socket_mode_is_0660(daemon):
    assert stat.S_IMODE(daemon.socket.stat().st_mode) == 0o660


@pytest.mark.parametrize("frame, reason", [
    (b"\x00\x00\x00\x00", "length 0"),
    (b"\x00\x20\x00\x00" + b"\x02", "exceeds the maximum"),
    (encode_frame(0x09, b"{}"), "unknown frame kind"),
    (encode_frame(KIND_JSON, b"{not json"), "not valid JSON"),
    (encode_frame(KIND_JSON, b"\xff\xfe"), "not valid JSON"),
    (encode_json(KIND_JSON, {**QUESTION, "frobnicate": True}), "frobnicate"),
    (encode_json(KIND_JSON, {**QUESTION, "max_tokens": "many"}), "max_tokens"),
    (encode_json(KIND_JSON, {"messages": "hello"}), "messages"),
    (encode_json(KIND_CONTROL, {"op": "self-destruct"}), "unknown control op"),
    (encode_frame(KIND_CONTROL, b"[]"), "JSON object"),
])
def test_malformed_frames_get_bad_request_and_daemon_carries_on(daemon, frame, reason):
    with daemon.client() as bystander_status:
        with daemon.client() as client:
            client.send_raw(frame)
            error = read_error(client)["error"]
            assert error["code"] == "bad_request" and reason in error["message"]
            with pytest.raises(TransportError):  # §6: the connection is closed after a bad frame
                client.read_frame()
        assert bystander_status.control("status")["queue"]["waiting"] == 0
    with daemon.client() as client:
        assert list(client.ask(QUESTION))[-1]["usage"]["completion_tokens"] > 0


def test_truncated_frame_then_hangup(daemon):
    raw = encode_json(KIND_JSON, QUESTION)
    with daemon.client() as client:
        client.send_raw(raw[: len(raw) // 2])
    assert daemon.status()["queue"]["running"] == 0


def test_queue_full_gives_busy_immediately(make_inprocess_daemon, tmp_path: Path):
    profiles = profiles_dir(tmp_path, slowq=profile_toml("slowq", pace="max_tokens_per_s = 20.0", queue_length=1))
    d = make_inprocess_daemon("--profile", "slowq", env={"EDGED_PROFILE__DIRECTORY": str(profiles)}).start()
    running, waiting = d.client(), d.client()
    first = running.ask(LONG)
    next(first)  # the first request is generating (slowly)
    waiting.send_raw(encode_json(KIND_JSON, {**LONG, "max_tokens": 5}))  # fills the one waiting slot
    for _ in range(100):
        if d.status()["queue"]["waiting"] == 1:
            break
        time.sleep(0.05)
    with d.client() as third:
        with pytest.raises(RemoteError) as err:
            list(third.ask(QUESTION))
    assert err.value.code == "busy" and "queue full" in err.value.message
    running.close()
    waiting.close()
    assert d.stop() == 0


def test_sigterm_during_request_exits_zero(make_daemon):
    d = make_daemon(env={"EDGED_SHUTDOWN__DRAIN_TIMEOUT_S": "1"}).start()
    d.send_signal(signal.SIGHUP)  # the process's own handlers: SIGHUP reloads and the daemon serves on
    d.wait_for_log(lambda line: line.get("event") == "reload requested")
    client = d.client()
    stream = client.ask(LONG)
    next(stream)
    d.send_signal(signal.SIGTERM)
    outcome = None
    try:
        for event in stream:
            if "edged" in event:
                outcome = "finished"
    except RemoteError as exc:
        outcome = exc.code
    assert outcome in ("finished", "cancelled")
    assert d.stop() == 0
    assert not d.socket.exists()
    assert any(line.get("event") == "stopped" for line in d.log_lines())


def test_plaintext_refused_for_uids_not_allowed(make_inprocess_daemon):
    d = make_inprocess_daemon(env={"EDGED_SOCKET__PLAINTEXT_UIDS": "[4242]"}).start()
    with d.client() as client:
        with pytest.raises(RemoteError) as err:
            list(client.ask(QUESTION))
        assert err.value.code == "unauthorized" and "sealed" in err.value.message
        assert client.control("status")["profile"]  # the connection stays usable
    assert d.stop() == 0


def test_stale_socket_is_replaced_and_live_one_refused(make_daemon):
    first = make_daemon()
    first.socket.parent.mkdir(parents=True, exist_ok=True)
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(first.socket))
    dead.close()  # leaves a socket file nobody listens on, as a crashed daemon would
    first.start()
    second = make_daemon()
    second.socket = first.socket
    second.start(wait_ready=False)
    assert second.proc.wait(60) == 1
    assert "already serving" in second.log_text()
    assert first.stop() == 0


def test_cli_ask_and_errors(daemon, tmp_path: Path):
    edged = [sys.executable, "-m", "edged"]
    done = subprocess.run([*edged, "ask", "--socket", str(daemon.socket), "--max-tokens", "16", "What is 2+2?"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip()
    missing = subprocess.run([*edged, "ask", "--socket", str(tmp_path / "none.sock"), "hi"],
                             capture_output=True, text=True, timeout=60)
    assert missing.returncode != 0 and "edged serve" in missing.stderr
    status = subprocess.run([*edged, "status", "--socket", str(daemon.socket)], capture_output=True, text=True,
                            timeout=60)
    assert status.returncode == 0 and json.loads(status.stdout)["model"]["format"] == "gguf"


def test_cli_check_config(tmp_path: Path):
    good, bad = tmp_path / "good.toml", tmp_path / "bad.toml"
    good.write_text('device_id = "pi-7"\n[shutdown]\ndrain_timeout_s = 3\n')
    bad.write_text('[socket]\nmode = "rw"\n[nonsense]\n')
    edged = [sys.executable, "-m", "edged", "check-config"]
    assert subprocess.run([*edged, str(good)], capture_output=True, timeout=60).returncode == 0
    done = subprocess.run([*edged, str(bad)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "socket.mode" in done.stderr and "nonsense" in done.stderr

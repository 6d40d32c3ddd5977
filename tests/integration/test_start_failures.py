"""A start that fails says why in one error line and exits non-zero: no traceback, no asyncio noise
(an unusable engine library is the one failure the daemon starts through: it answers with the error).

Each case runs the real `edged serve` as a subprocess; the bad allow-list one fails while the model
is already loading on its thread, which is where an unread task exception used to be printed.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edged.clients.socket import RemoteError
from tests.daemon import DaemonProcess

pytestmark = pytest.mark.slow  # starts `edged serve` (the model begins loading in two of the cases)


def failed_start(make_daemon, *args: str, env: dict[str, str] | None = None) -> tuple[int, list[str]]:
    daemon: DaemonProcess = make_daemon(*args, env=env)
    daemon.start(wait_ready=False)
    assert daemon.proc is not None
    code = daemon.proc.wait(120)
    text = daemon.log_text()
    assert "Traceback" not in text and "never retrieved" not in text, text
    return code, [line for line in text.splitlines() if is_error(line)]


def is_error(line: str) -> bool:
    try:
        entry = json.loads(line)
    except ValueError:
        return line.startswith("edged:") or "ERROR" in line
    return isinstance(entry, dict) and entry.get("level") in ("error", "critical")


def test_a_config_with_a_syntax_error(make_daemon, tmp_path: Path):
    config = tmp_path / "edged.toml"
    config.write_text("[socket\n")
    code, errors = failed_start(make_daemon, "--config", str(config))
    assert code == 2
    assert len(errors) == 1 and f"{config}: TOML syntax error" in errors[0]


def test_a_bad_allow_list(make_daemon, tmp_path: Path):
    clients = tmp_path / "clients.toml"
    clients.write_text('[[clients]]\nlabel = "laptop"\n')
    clients.chmod(0o600)
    code, errors = failed_start(make_daemon, env={"EDGED_E2E__CLIENTS_FILE": str(clients)})
    assert code == 1
    assert len(errors) == 1
    entry = json.loads(errors[0])
    assert entry["event"] == "cannot start" and "clients[0].public_key: Field required" in entry["error"]


def test_a_missing_model(make_daemon, tmp_path: Path):
    code, errors = failed_start(make_daemon, "--model", str(tmp_path / "no-such-model.gguf"))
    assert code == 1
    assert len(errors) == 1
    entry = json.loads(errors[0])
    assert entry["event"] == "cannot start" and "no-such-model.gguf: no such file or directory" in entry["error"]


@pytest.mark.parametrize("library", ["another-architecture", "missing"])
def test_an_unusable_engine_library_is_one_clear_error_and_the_daemon_keeps_serving_it(
        make_daemon, tmp_path: Path, library: str):
    """A venv or image copied from another architecture (or half copied): the daemon still starts,
    so a model update or a reinstall can reach it, logs one error that says what to do, and answers
    requests with that error instead of dying with a traceback."""
    lib = tmp_path / "lib"
    lib.mkdir()
    if library == "another-architecture":
        (lib / "libllama.so").write_bytes(b"\x7fELF" + b"\x00" * 60)  # an ELF header this machine cannot load
    daemon: DaemonProcess = make_daemon(env={"LLAMA_CPP_LIB_PATH": str(lib)})
    daemon.start()
    daemon.wait_for_log(lambda line: line.get("event") == "model failed to load")
    errors = [line for line in daemon.log_text().splitlines() if is_error(line)]
    assert len(errors) == 1, errors
    logged = json.loads(errors[0])["error"]
    assert "the llama.cpp engine library cannot be loaded" in logged and "run scripts/setup again" in logged
    with daemon.client() as client, pytest.raises(RemoteError) as caught:
        list(client.ask({"messages": [{"role": "user", "content": "Hello"}], "max_tokens": 4}))
    assert caught.value.code == "model_unavailable" and "run scripts/setup again" in caught.value.message
    assert daemon.stop() == 0
    assert "Traceback" not in daemon.log_text()

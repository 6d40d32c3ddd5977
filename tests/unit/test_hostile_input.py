"""Hostile files and bodies give a clear error, never a traceback (issue 12 item 5)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from structlog.testing import capture_logs

from edged.crypto.allowlist import AllowList
from edged.crypto.gateway import SealedGateway
from edged.crypto.settings import E2ESettings
from edged.config import load_config
from edged.errors import BadRequest, ConfigError
from edged.messages import parse_request
from edged.transports import framing
from edged.transports.framing import parse_json_object
from edged.transports.mqtt_commands import parse_command
from edged.transports.unix import UnixSocketTransport

DEEP_JSON = b"[" * 100_000 + b"]" * 100_000
DEEP_OBJECT = b'{"messages": ' + b"[" * 50_000 + b"]" * 50_000 + b"}"
LONG_INT = b'{"max_tokens": ' + b"7" * 5000 + b"}"
DEEP_TOML = "x = " + "[" * 2000 + "]" * 2000 + "\n"
LONG_INT_TOML = "x = " + "7" * 5000 + "\n"  # tomllib lets int() raise a plain ValueError for it
REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("body", [DEEP_JSON, DEEP_OBJECT, LONG_INT], ids=["deep", "deep-field", "5000-digits"])
@pytest.mark.parametrize("parse", [parse_request, parse_command, lambda b: parse_json_object(b, "control message")],
                         ids=["request", "command", "control"])
def test_hostile_json_is_a_bad_request(parse, body: bytes) -> None:
    with pytest.raises(BadRequest, match=r"nested too deeply|not acceptable JSON"):
        parse(body)


class Control:
    def status(self) -> dict[str, bool]:
        return {"ok": True}


def test_the_socket_answers_bad_request_and_logs_no_traceback(tmp_path: Path) -> None:
    async def run() -> list[bytes]:
        unix = UnixSocketTransport(tmp_path / "s.sock", core=None, mode=0o600, max_frame=1 << 20,  # type: ignore
                                   max_connections=8, plaintext_uids={0}, plaintext_gids=set(),
                                   control=Control())  # type: ignore[arg-type]
        unix._plaintext_allowed = lambda peer: True  # type: ignore[method-assign]  # whoever runs the test
        await unix.start()
        answers = []
        for kind, body in ((framing.KIND_JSON, DEEP_JSON), (framing.KIND_JSON, LONG_INT),
                           (framing.KIND_CONTROL, DEEP_JSON)):
            reader, writer = await asyncio.open_unix_connection(str(unix.path))
            writer.write(framing.encode_frame(kind, body))
            answers.append(await asyncio.wait_for(reader.read(), 30))  # the answer, then the close
            writer.close()
        await unix.stop_listening()
        await unix.close_connections()
        return answers

    with capture_logs() as logs:
        answers = asyncio.run(run())
    for answer in answers:
        assert json.loads(answer[5:])["error"]["code"] == "bad_request"
    assert not [entry for entry in logs if entry.get("log_level") in ("error", "critical") or "exc_info" in entry]


@pytest.mark.parametrize(("text", "message"), [(DEEP_TOML, "nested too deeply"), (LONG_INT_TOML, "more than 4300 digits")],
                         ids=["deep", "5000-digits"])
def test_a_hostile_allow_list_is_a_clear_error(tmp_path: Path, text: str, message: str) -> None:
    clients = tmp_path / "clients.toml"
    clients.write_text(text)
    with pytest.raises(ConfigError, match=message):
        AllowList.load(clients)


def test_prekey_rotation_survives_a_broken_allow_list_and_logs_one_traceback(tmp_path: Path,
                                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    key = Ed25519PrivateKey.generate()
    (tmp_path / "clients.toml").write_text(f'[[clients]]\nlabel = "c"\npublic_key = '
                                           f'"{key.public_key().public_bytes_raw().hex()}"\nresponse_prefix = "local"\n')
    gateway = SealedGateway(E2ESettings(), tmp_path, "dev-1")

    def broken() -> None:
        raise RecursionError("maximum recursion depth exceeded")  # what a deep clients.toml did before

    monkeypatch.setattr(gateway.allow_list, "reload_if_changed", broken)
    before = gateway.prekeys.current_record()
    later = time.time() + gateway.settings.prekeys.rotate_every_s + 1
    monkeypatch.setattr(time, "time", lambda: later)
    with capture_logs() as logs:
        assert gateway.maintain() is True  # rotated although the allow-list step failed
        for _ in range(50):
            gateway.maintain()
    assert gateway.prekeys.current_record() != before
    tracebacks = [entry for entry in logs if entry.get("exc_info")]
    assert len(tracebacks) == 1 and tracebacks[0]["step"] == "allow_list"


@pytest.mark.parametrize(("text", "message"), [(DEEP_TOML, "nested too deeply"), (LONG_INT_TOML, "more than 4300 digits")],
                         ids=["deep", "5000-digits"])
def test_check_config_names_a_hostile_file(tmp_path: Path, text: str, message: str) -> None:
    config = tmp_path / "edged.toml"
    config.write_text(text)
    done = subprocess.run([sys.executable, "-m", "edged", "check-config", str(config)], capture_output=True,
                          text=True, timeout=120, cwd=REPO)
    assert done.returncode != 0
    assert message in done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize("raw", ["7" * 5000, "[" * 3000], ids=["5000-digits", "deep"])
def test_a_hostile_environment_override_names_the_setting(tmp_path: Path, raw: str) -> None:
    config = tmp_path / "edged.toml"
    config.write_text("")
    with pytest.raises(ConfigError, match=r"limits\.default_deadline_ms"):
        load_config(config, environ={"EDGED_LIMITS__DEFAULT_DEADLINE_MS": raw})


@pytest.mark.parametrize("body", [b'{"user": "u", "messages": ' + b"[" * 50_000 + b"]" * 50_000 + b"}",
                                  b'{"user": "u", "max_tokens": ' + b"7" * 5000 + b"}"], ids=["deep", "5000-digits"])
def test_the_http_body_with_openai_extras_is_a_bad_request_too(body: bytes) -> None:
    from edged.transports.http.openai_api import parse_openai_body

    with pytest.raises(BadRequest, match=r"nested too deeply|not acceptable JSON"):
        parse_openai_body(body)

"""JSON answers and tool calls through the HTTP API, asked by the official `openai` package: its typed
models must read edged's `tool_calls`, streamed `delta.tool_calls` and `finish_reason` as they are."""

from __future__ import annotations

import json
from typing import Any, Iterator

import pytest
from jsonschema import Draft202012Validator

from tests.inprocess import InProcessDaemon
from tests.integration.test_http_daemon import Served, edged_cli, free_port, self_signed

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

LIGHT = {"type": "function", "function": {"name": "set_light", "description": "Switch a light", "parameters": {
    "type": "object", "additionalProperties": False, "required": ["room", "on"],
    "properties": {"room": {"enum": ["kitchen", "hall"]}, "on": {"type": "boolean"}}}}}
COLOUR = {"type": "object", "additionalProperties": False, "required": ["colour"],
          "properties": {"colour": {"type": "string", "maxLength": 12}}}
SLOW_OK = {"EDGED_LIMITS__DEFAULT_DEADLINE_MS": "600000"}


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    workdir = tmp_path_factory.mktemp("http-structured")
    cert, tls_key = self_signed(workdir)
    made = edged_cli("keys", "api-key", "new", "tests", "--state-dir", str(workdir / "state"))
    assert made.returncode == 0, made.stderr
    port = free_port()
    daemon = InProcessDaemon(workdir, "--profile", "balanced", env={
        "EDGED_HTTP__LISTEN": f"127.0.0.1:{port}", "EDGED_HTTP__TLS_CERT": str(cert),
        "EDGED_HTTP__TLS_KEY": str(tls_key), **SLOW_OK}).start()
    yield Served(daemon, port, cert, made.stdout.strip())
    daemon.kill()


def test_openai_client_reads_tool_calls_whole_and_streamed(served: Served) -> None:
    client = served.unix_client()
    ask: dict[str, Any] = {"model": "edged", "messages": [{"role": "user", "content": "Kitchen light on, please"}],
                           "tools": [LIGHT], "tool_choice": "required", "max_tokens": 64, "temperature": 0}
    whole = client.chat.completions.create(**ask)
    choice = whole.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.function.name == "set_light"
    Draft202012Validator(LIGHT["function"]["parameters"]).validate(json.loads(call.function.arguments))
    arguments, names, finish = "", set(), None
    for chunk in client.chat.completions.create(**ask, stream=True):
        for part in chunk.choices[0].delta.tool_calls or ():
            assert part.index == 0 and part.function is not None
            if part.function.name:
                names.add(part.function.name)
            arguments += part.function.arguments or ""
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls" and names == {"set_light"}
    Draft202012Validator(LIGHT["function"]["parameters"]).validate(json.loads(arguments))


def test_openai_client_json_schema(served: Served) -> None:
    client = served.unix_client()
    answer = client.chat.completions.create(
        model="edged", messages=[{"role": "user", "content": "Name a colour, as JSON."}], max_tokens=24,
        response_format={"type": "json_schema", "json_schema": {"name": "colour", "schema": COLOUR, "strict": True}})
    assert answer.choices[0].finish_reason == "stop"
    Draft202012Validator(COLOUR).validate(json.loads(answer.choices[0].message.content or ""))

"""JSON answers and tool calls through the daemon (in-process): the Unix socket, sealed MQTT and `edged ask`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from edged.clients.socket import RemoteError, answer_of, function_tool, json_schema_format, tool_choice
from tests.inprocess import InProcessDaemon
from tests.integration.test_mqtt_daemon import FAST_RECONNECT, asker, provision
from tests.mosquitto import mosquitto_plain  # noqa: F401

# Each test waits for a few answers in turn; on a loaded 2-core machine that can pass the default 300 s.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

CITY = {"type": "object", "additionalProperties": False, "required": ["city", "population"],
        "properties": {"city": {"type": "string", "maxLength": 20}, "population": {"type": "integer", "minimum": 0,
                                                                                   "maximum": 99999999}}}
WEATHER = function_tool("get_weather", {"type": "object", "additionalProperties": False, "required": ["city"],
                                        "properties": {"city": {"type": "string", "maxLength": 20}}},
                        "The weather now in a city")
LIGHT = function_tool("set_light", {"type": "object", "additionalProperties": False, "required": ["on"],
                                    "properties": {"on": {"type": "boolean"}}})


# A busy test machine can be slower than the default 120 s deadline; these tests check shapes, not speed.
SLOW_OK = 600_000


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    """The demo-model daemon, with a default deadline that `edged ask` requests on a busy machine fit in."""
    d = InProcessDaemon(tmp_path_factory.mktemp("structured"), "--profile", "balanced",
                      env={"EDGED_LIMITS__DEFAULT_DEADLINE_MS": str(SLOW_OK)}).start()
    yield d
    d.kill()


def city_request(**extra) -> dict:
    return {"messages": [{"role": "user", "content": "Name a big city and its population."}], "max_tokens": 48,
            "deadline_ms": SLOW_OK,
            "response_format": json_schema_format(CITY, "city"), **extra}


def test_json_schema_streamed_and_whole(daemon):
    with daemon.client(timeout=900) as client:
        streamed = list(client.ask(city_request(stream=True)))
        whole = list(client.ask(city_request()))
    answer = answer_of(streamed)
    assert answer.finish_reason == "stop"
    Draft202012Validator(CITY).validate(json.loads(answer.content))
    assert all("content" in e["choices"][0]["delta"] for e in streamed[:-1])
    message = whole[-1]["choices"][0]["message"]
    Draft202012Validator(CITY).validate(json.loads(message["content"]))
    assert whole[-1]["choices"][0]["finish_reason"] == "stop" and "tool_calls" not in message


def test_forced_tool_call_in_openai_shape(daemon):
    body = {"messages": [{"role": "user", "content": "Is it raining in Oslo?"}], "max_tokens": 48,
            "tools": [WEATHER, LIGHT], "tool_choice": tool_choice("get_weather"), "deadline_ms": SLOW_OK}
    with daemon.client(timeout=900) as client:
        (whole,) = list(client.ask(body))
        streamed = list(client.ask({**body, "stream": True}))
    choice = whole["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["content"] is None
    (call,) = choice["message"]["tool_calls"]
    assert call["type"] == "function" and call["id"].startswith("call_") and call["function"]["name"] == "get_weather"
    Draft202012Validator(WEATHER["function"]["parameters"]).validate(json.loads(call["function"]["arguments"]))
    first = streamed[0]["choices"][0]["delta"]["tool_calls"][0]
    assert first["index"] == 0 and first["type"] == "function" and first["function"] == {
        "name": "get_weather", "arguments": ""}
    assert streamed[-1]["choices"][0]["finish_reason"] == "tool_calls"
    answer = answer_of(streamed)
    assert answer.tool_calls[0]["function"]["arguments"] == call["function"]["arguments"]


def test_multi_turn_and_stop_with_tools(daemon):
    call = {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
    body = {"messages": [{"role": "user", "content": "Is it raining in Oslo?"},
                         {"role": "assistant", "content": None, "tool_calls": [call]},
                         {"role": "tool", "tool_call_id": "call_a", "content": "Rain, 7 C"}],
            "tools": [WEATHER], "tool_choice": "auto", "stop": ["\n"], "max_tokens": 16, "stream": True,
            "deadline_ms": SLOW_OK}
    with daemon.client(timeout=900) as client:
        answer = answer_of(client.ask(body))
    if answer.tool_calls:
        assert answer.finish_reason == "tool_calls"
        json.loads(answer.tool_calls[0]["function"]["arguments"])
    else:
        assert answer.content and "\n" not in answer.content


@pytest.mark.parametrize("body, needle", [
    (city_request(response_format=json_schema_format({"type": "string", "format": "email"})), "keyword `format`"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": [WEATHER, WEATHER]}, "given twice"),
    ({"messages": [{"role": "user", "content": "x"}], "tools": [WEATHER], "tool_choice": tool_choice("nope")},
     "tool_choice.function.name"),
    ({"messages": [{"role": "tool", "tool_call_id": "ghost", "content": "x"}]}, "matches no tool call"),
])
def test_bad_structured_requests_are_named_and_harmless(daemon, body, needle):
    with daemon.client(timeout=900) as client:
        with pytest.raises(RemoteError) as err:
            list(client.ask(body))
    assert err.value.code == "bad_request" and needle in err.value.message
    with daemon.client(timeout=900) as client:  # the socket ends a connection after a bad request; the daemon serves on
        assert list(client.ask({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4,
                                "deadline_ms": SLOW_OK}))


def test_cli_json_schema_and_tool(daemon, tmp_path: Path):
    (tmp_path / "city.json").write_text(json.dumps(CITY))
    (tmp_path / "tools.json").write_text(json.dumps([WEATHER, LIGHT["function"]]))
    edged = [sys.executable, "-m", "edged", "ask", "--socket", str(daemon.socket), "--max-tokens", "48"]
    done = subprocess.run([*edged, "--json-schema", str(tmp_path / "city.json"), "A big city"],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    Draft202012Validator(CITY).validate(json.loads(done.stdout))
    done = subprocess.run([*edged, "--tool", str(tmp_path / "tools.json"), "--tool-choice", "set_light",
                           "Lights on please"], capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    assert printed["tool_call"] == "set_light" and isinstance(printed["arguments"]["on"], bool)
    bad = subprocess.run([*edged, "--tool-choice", "required", "hi"], capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "--tool" in bad.stderr


def test_sealed_tool_call_through_mqtt(make_inprocess_daemon, tmp_path, mosquitto_plain):
    broker = mosquitto_plain
    d, identity, key = provision(make_inprocess_daemon, tmp_path, {"EDGED_MQTT__URL": broker.url, **FAST_RECONNECT})
    d.start()
    body = {"messages": [{"role": "user", "content": "Turn the light on"}], "max_tokens": 32, "stream": True,
            "tools": [WEATHER, LIGHT], "tool_choice": "required", "deadline_ms": SLOW_OK}
    with asker(broker, identity, key) as client:
        answer = answer_of(client.ask(body, timeout=900))
        schema_answer = answer_of(client.ask(city_request(stream=True), timeout=900))
    assert answer.finish_reason == "tool_calls" and answer.tool_calls[0]["id"].startswith("call_")
    tools = {t["function"]["name"]: t["function"]["parameters"] for t in (WEATHER, LIGHT)}
    call = answer.tool_calls[0]["function"]
    Draft202012Validator(tools[call["name"]]).validate(json.loads(call["arguments"]))
    Draft202012Validator(CITY).validate(json.loads(schema_answer.content))
